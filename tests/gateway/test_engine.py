"""The gateway in front of the real vLLM CPU engine (tiny fixture model, under the real Supervisor)."""

from __future__ import annotations

import os
import signal

import httpx
import openai
import pytest

from mgmt.audit.models import AuditEvent
from tests.fixtures.engine import RunningEngine
from tests.fixtures.processes import wait_for

pytestmark = pytest.mark.engine


def _last() -> AuditEvent:
    return AuditEvent.objects.filter(action="gateway.request").order_by("-id").first()


def test_openai_client_through_the_gateway_to_vllm(world, vllm_engine, engine_route, gateway):
    api = openai.OpenAI(base_url=f"{gateway().url}/v1", api_key=world.nurse_key, max_retries=0, timeout=120)
    assert [m.id for m in api.models.list().data] == ["default"]
    hi = [{"role": "user", "content": "Hello"}]

    reply = api.chat.completions.create(model="default", messages=hi, max_tokens=8)
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.usage.completion_tokens == _last().data["completion_tokens"]
    assert 0 < reply.usage.completion_tokens <= 8

    chunks = list(
        api.chat.completions.create(
            model="default", messages=hi, max_tokens=8, stream=True, extra_body={"ignore_eos": True}
        )
    )
    # The fixture model's random weights may emit tokens that decode to no text, so count events, not text.
    assert len(chunks) >= 2
    assert _last().data["completion_tokens"] == 8

    text = api.completions.create(model="default", prompt="Once", max_tokens=4)
    assert text.usage.completion_tokens <= 4
    # vLLM runs with --scheduling-policy priority and took the gateway's priority (else it refuses the
    # field); the client hears the alias, not the served name.
    assert reply.model == text.model == "default"
    assert {c.model for c in chunks} == {"default"}

    # 4xx: a prompt longer than the engine's context; vLLM refuses it, the gateway names it.
    with pytest.raises(openai.BadRequestError) as too_long:
        api.chat.completions.create(model="default", messages=[{"role": "user", "content": "word " * 3000}])
    assert too_long.value.code == "context_length_exceeded"
    assert _last().data["code"] == "context_length_exceeded"


def test_anthropic_messages_through_the_gateway_to_vllm(world, vllm_engine, engine_route, gateway):
    """DESIGN.md's "welcome extra": Anthropic's Messages API, with the same key, route, audit and codes."""
    import anthropic

    gw = gateway()
    api = anthropic.Anthropic(base_url=gw.url, api_key=world.nurse_key, max_retries=0, timeout=120)
    hi = [{"role": "user", "content": "Hello"}]

    reply = api.messages.create(model="default", max_tokens=8, messages=hi)
    assert reply.type == "message" and reply.model == "default"
    assert 0 < reply.usage.output_tokens <= 8
    event = _last()
    assert (event.data["endpoint"], event.data["status"]) == ("/v1/messages", 200)
    assert (event.data["prompt_tokens"], event.data["completion_tokens"]) == (
        reply.usage.input_tokens,
        reply.usage.output_tokens,
    )

    with api.messages.stream(model="default", max_tokens=8, messages=hi, extra_body={"ignore_eos": True}) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"  # held back, then sent after the audit
    assert final.model == "default" and final.usage.output_tokens == 8
    assert (_last().data["stream"], _last().data["completion_tokens"]) == (True, 8)

    # Anthropic's tools send the key as x-api-key.
    raw = httpx.post(
        f"{gw.url}/v1/messages",
        headers={"x-api-key": world.nurse_key},
        json={"model": "default", "max_tokens": 4, "messages": hi},
        timeout=120,
    )
    assert (raw.status_code, raw.json()["model"]) == (200, "default")

    # Bad input gets the gateway's codes here too.
    with pytest.raises(anthropic.BadRequestError) as no_limit:
        api.messages.create(model="default", messages=hi, max_tokens=None)  # type: ignore[arg-type]
    assert no_limit.value.body["error"]["code"] == "missing_field"
    with pytest.raises(anthropic.NotFoundError) as unknown:
        api.messages.create(model="gpt-4", max_tokens=8, messages=hi)
    assert unknown.value.body["error"]["code"] == "model_not_found"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.url, api_key="enc_nope_nope", max_retries=0).messages.create(
            model="default", max_tokens=8, messages=hi
        )
    assert _last().data["code"] == "invalid_api_key"


def test_engines_page_shows_the_load_the_engine_reports(world, vllm_engine, engine_route):
    from django.core.cache import cache

    from mgmt.accounts.models import Role
    from mgmt.routing.health import probe_deployments
    from tests.fixtures.personas import make_user, verified_client

    cache.clear()  # no load figure left over from an earlier test's deployment
    admin = verified_client(make_user("ann.admin", Role.APPLIANCE_ADMIN, None))
    page = lambda: admin.get("/routing/").content.decode()  # noqa: E731
    assert "no report" in page()
    probe_deployments()
    assert "0 running, 0 waiting; KV cache 0.0%" in page()

    # The figures are the engine's own: what its /metrics says now is what the page shows.
    from appliance.engines import parse_load

    load = parse_load(httpx.get(f"{vllm_engine.base_url}/metrics", timeout=10).text)
    assert (load.running, load.waiting) == (0.0, 0.0)
    assert f'data-load="{engine_route.name}"' in page()


LONG_ANSWER = 1900  # tokens, within the fixture engine's 2048-token context: about 2 s of generation on 2 cores


def _answers(api: openai.OpenAI, hi: list[dict[str, str]]) -> bool:
    try:
        return bool(api.chat.completions.create(model="default", messages=hi, max_tokens=4).choices)
    except openai.InternalServerError:
        return False  # the gateway's passive health still skips it for a few seconds


def _kill_at_first_token(api: openai.OpenAI, hi: list[dict[str, str]], engine: RunningEngine) -> openai.APIError | None:
    """Stream a long answer and kill the whole engine (API server and engine core, one process group) when the
    first token reaches the client. Returns the error the stream ended with, or None if it ended normally."""
    stream = api.chat.completions.create(
        model="default", messages=hi, max_tokens=LONG_ANSWER, stream=True, extra_body={"ignore_eos": True}
    )
    received = 0
    try:
        for chunk in stream:
            received += len(chunk.choices)
            if received == 1:
                os.killpg(engine.supervisor.status(engine.name).pid, signal.SIGKILL)
    except openai.APIError as exc:
        return exc
    return None


def _restarted(api: openai.OpenAI, hi: list[dict[str, str]], engine: RunningEngine, starts: int) -> None:
    """Wait until the supervisor has started the engine again and the gateway answers through it."""
    engine.supervisor.wait_ready(engine.name, timeout=600, min_starts=starts + 1)
    wait_for(lambda: _answers(api, hi), timeout=30, what="a completion after the restart")


def test_engine_killed_mid_stream_then_restarted(world, vllm_engine, engine_route, gateway):
    api = openai.OpenAI(base_url=f"{gateway().url}/v1", api_key=world.nurse_key, max_retries=0, timeout=120)
    hi = [{"role": "user", "content": "Tell me everything"}]
    supervisor, name = vllm_engine.supervisor, vllm_engine.name
    # A first answer brings the new gateway to its steady state (key, route, audit connection), so a stream's
    # first token reaches the client milliseconds after the engine made it, not after the gateway's set-up.
    assert _answers(api, hi)
    for _attempt in range(3):
        starts = supervisor.status(name).starts
        stopped = _kill_at_first_token(api, hi, vllm_engine)
        if stopped is not None:
            break
        # The stream ended normally: only right if the engine had made the whole answer before the kill landed
        # (a loaded machine held the first token back for longer than the answer takes). Then it is a whole
        # answer, audited as one, and the engine is killed all the same: try again once it is back.
        event = _last()
        assert (event.outcome, event.data["completion_tokens"]) == ("ok", LONG_ANSWER)
        _restarted(api, hi, vllm_engine, starts)
    else:
        pytest.fail("the engine finished its answer before the kill landed, three times over")
    assert "stopped in the middle" in str(stopped)
    event = _last()
    assert (event.outcome, event.data["code"]) == ("error", "upstream_interrupted")

    # 5xx while it is down: nothing listens, the gateway says so.
    with pytest.raises(openai.InternalServerError) as down:
        api.chat.completions.create(model="default", messages=hi, max_tokens=4)
    assert down.value.code in ("upstream_unavailable", "upstream_failed")

    _restarted(api, hi, vllm_engine, starts)
    assert _last().outcome == "ok"
