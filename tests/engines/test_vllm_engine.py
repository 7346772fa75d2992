"""The real vLLM CPU engine serving the tiny fixture model, under the real supervisor.

The kill -9 test restarts the shared engine (about a minute on 2 cores); it comes last in this file.
"""

import asyncio
import os
import signal

import httpx
import pytest

from appliance.engines import (
    EngineLoad,
    EngineState,
    PriorityCapability,
    ProbeResult,
    aprobe,
    ascrape_load,
    probe,
    scrape_load,
)
from tests.fixtures.engine import RunningEngine

pytestmark = pytest.mark.engine


def chat(engine: RunningEngine, **extra: object) -> httpx.Response:
    body = {
        "model": engine.model,
        "messages": [{"role": "user", "content": "Summarise the discharge letter."}],
        "max_tokens": 8,
        "temperature": 0,
        **extra,
    }
    return httpx.post(f"{engine.base_url}/v1/chat/completions", json=body, timeout=60)


def test_health_and_models(vllm_engine: RunningEngine) -> None:
    result = probe(vllm_engine.launch)
    assert result.ok, result.detail
    assert result.status_code == 200
    models = httpx.get(f"{vllm_engine.base_url}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [vllm_engine.model]
    assert models["data"][0]["max_model_len"] == vllm_engine.launch.max_context == 2048


def test_chat_completion(vllm_engine: RunningEngine) -> None:
    response = chat(vllm_engine)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == vllm_engine.model
    assert body["choices"][0]["finish_reason"] in ("length", "stop")
    assert body["usage"]["completion_tokens"] >= 1
    assert body["usage"]["prompt_tokens"] > 0


def test_priority_field_is_accepted(vllm_engine: RunningEngine) -> None:
    assert vllm_engine.launch.priority is PriorityCapability.REQUEST_FIELD
    assert chat(vllm_engine, priority=-5).status_code == 200


def test_thinking_kwarg_reaches_the_chat_template(vllm_engine: RunningEngine) -> None:
    plain = chat(vllm_engine).json()["usage"]["prompt_tokens"]
    thinking = chat(vllm_engine, chat_template_kwargs={"thinking": True, "reasoning_effort": "high"})
    assert thinking.status_code == 200, thinking.text
    assert thinking.json()["usage"]["prompt_tokens"] > plain  # the template appended "<think>\n"


def test_streaming_chunks(vllm_engine: RunningEngine) -> None:
    body = {
        "model": vllm_engine.model,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 6,
        "stream": True,
    }
    with httpx.stream("POST", f"{vllm_engine.base_url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert len(events) >= 3  # role chunk, content chunks, [DONE]


def test_context_longer_than_the_engine_allows_is_a_400(vllm_engine: RunningEngine) -> None:
    response = chat(vllm_engine, max_tokens=4096)
    assert response.status_code == 400
    assert "context" in response.text.lower() or "max_tokens" in response.text.lower()


def test_metrics_report_load(vllm_engine: RunningEngine) -> None:
    assert chat(vllm_engine).status_code == 200
    load = scrape_load(vllm_engine.launch)
    assert load is not None
    assert load.running is not None
    assert load.running >= 0
    assert load.waiting is not None
    assert load.kv_cache_usage is not None
    assert 0.0 <= load.kv_cache_usage <= 1.0


def test_async_probe_and_load(vllm_engine: RunningEngine) -> None:
    async def go() -> tuple[ProbeResult, EngineLoad | None]:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await aprobe(vllm_engine.launch, client), await ascrape_load(vllm_engine.launch, client)

    result, load = asyncio.run(go())
    assert result.ok, result.detail
    assert load is not None
    assert load.running is not None


def test_kill9_engine_is_restarted_and_serves_again(vllm_engine: RunningEngine) -> None:
    sup, name = vllm_engine.supervisor, vllm_engine.name
    before = sup.status(name)
    assert before.state is EngineState.READY
    assert before.pid is not None
    os.kill(before.pid, signal.SIGKILL)
    with pytest.raises(httpx.HTTPError):
        chat(vllm_engine)  # nothing listens until the supervisor has restarted it
    after = sup.wait_ready(name, timeout=600, min_starts=before.starts + 1)
    assert after.restarts == before.restarts + 1
    assert after.last_exit_code == -signal.SIGKILL
    assert after.pid != before.pid
    response = chat(vllm_engine)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1
