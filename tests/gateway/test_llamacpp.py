"""The gateway in front of the real llama.cpp `llama-server` (GGUF fixture, under the real Supervisor), with the
official `openai` client: the same surface as the vLLM engine test, on the other engine."""

from __future__ import annotations

import openai
import pytest

from mgmt.audit.models import AuditEvent

pytestmark = pytest.mark.engine


def _last() -> AuditEvent:
    return AuditEvent.objects.filter(action="gateway.request").order_by("-id").first()


def test_openai_client_through_the_gateway_to_llama_cpp(world, llama_engine, llama_route, gateway):
    api = openai.OpenAI(base_url=f"{gateway().url}/v1", api_key=world.nurse_key, max_retries=0, timeout=120)
    assert [m.id for m in api.models.list().data] == ["default"]
    hi = [{"role": "user", "content": "Hello"}]

    reply = api.chat.completions.create(model="default", messages=hi, max_tokens=8)
    assert reply.choices[0].message.role == "assistant"
    assert isinstance(reply.choices[0].message.content, str)
    assert 0 < reply.usage.completion_tokens <= 8
    event = _last()
    assert event.outcome == "ok"
    assert event.data["completion_tokens"] == reply.usage.completion_tokens
    assert event.data["prompt_tokens"] == reply.usage.prompt_tokens

    chunks = list(
        api.chat.completions.create(
            model="default", messages=hi, max_tokens=8, stream=True, extra_body={"ignore_eos": True}
        )
    )
    # Random weights may emit tokens that decode to no text, so count events, not text.
    assert len(chunks) >= 2
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "length"
    assert _last().data["completion_tokens"] == 8  # from llama-server's usage event (include_usage)

    text = api.completions.create(model="default", prompt="Once", max_tokens=4, extra_body={"ignore_eos": True})
    assert text.usage.completion_tokens == 4


def test_thinking_mode_reaches_the_gguf_chat_template(world, llama_engine, llama_route, gateway):
    api = openai.OpenAI(base_url=f"{gateway().url}/v1", api_key=world.nurse_key, max_retries=0, timeout=120)
    hi = [{"role": "user", "content": "Hello"}]
    plain = api.chat.completions.create(model="default", messages=hi, max_tokens=2).usage.prompt_tokens
    thinking = api.chat.completions.create(model="default", messages=hi, max_tokens=2, reasoning_effort="high")
    assert thinking.usage.prompt_tokens > plain  # the GGUF's template appended "<think>\n"


def test_prompt_longer_than_the_deployment_allows(world, llama_engine, llama_route, gateway):
    api = openai.OpenAI(base_url=f"{gateway().url}/v1", api_key=world.nurse_key, max_retries=0, timeout=120)
    # Over llama-server's 2048-token slot: llama.cpp refuses it (exceed_context_size_error), the gateway names it.
    with pytest.raises(openai.BadRequestError) as too_long:
        api.chat.completions.create(model="default", messages=[{"role": "user", "content": "word " * 3000}])
    assert too_long.value.code == "context_length_exceeded"
    event = _last()
    assert (event.outcome, event.data["code"]) == ("denied", "context_length_exceeded")  # a 4xx is a refusal

    # max_tokens over the deployment's context: the gateway refuses it before llama-server sees it.
    with pytest.raises(openai.BadRequestError) as too_many:
        api.chat.completions.create(model="default", messages=[{"role": "user", "content": "Hi"}], max_tokens=4096)
    assert too_many.value.code == "context_length_exceeded"
    assert too_many.value.param == "max_tokens"


def test_requests_after_a_stream_find_a_working_connection(world, llama_engine, llama_route, gateway):
    """llama-server closes its side of the connection after every streamed response (its chunked content provider
    ends a stream by returning false, which cpp-httplib treats as an error) although it announced keep-alive. A
    connection handed back to aiohttp's pool after a stream would fail the next POST ("Can not write request
    body": aiohttp retries only idempotent methods), so the gateway must not reuse it; each answer here is 200."""
    api = openai.OpenAI(base_url=f"{gateway().url}/v1", api_key=world.nurse_key, max_retries=0, timeout=120)
    hi = [{"role": "user", "content": "Hello"}]
    for _ in range(5):
        assert len(list(api.chat.completions.create(model="default", messages=hi, max_tokens=4, stream=True))) >= 1
        assert api.chat.completions.create(model="default", messages=hi, max_tokens=2).usage.completion_tokens >= 1
        assert _last().outcome == "ok"
