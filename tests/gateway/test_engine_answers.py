"""What the gateway does with an engine's answer that is too large, SSE framed with CR or CRLF line endings,
and a failure of its own after a stream's first byte (decision 0352), against the real gateway (gunicorn's
ASGI worker, PostgreSQL, Redis) and the scripted engine on a real socket (scripted_engine.py). Each
answer has a stable code and exactly one final `gateway.request` audit event that says the same."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest

from appliance.gateway.config import GatewayConfig
from appliance.gateway.faults import FAULT_ENV
from appliance.gateway.proxy import MAX_EVENT_BYTES, _LineEndings
from mgmt.audit.models import AuditEvent
from mgmt.routing.models import Deployment, Task
from tests.fixtures.processes import wait_for

from .conftest import Proc, add_deployment, route
from .test_fuzz_requests import BASE, SSE_HEAD, _error_of, _last_id, _one_event, _stream_end

# A small cap for the tests' gateway; the scripted engine writes MAX_EVENT_BYTES + 1 bytes for @FILL@.
ANSWER_CAP = 65536
FILL_BYTES = MAX_EVENT_BYTES + 1


def _reply(*pieces: bytes) -> list[str]:
    """`fuzz_reply`: the pieces the scripted engine writes, with a pause between them."""
    return [base64.b64encode(piece).decode() for piece in pieces]


def _chunk(word: str) -> bytes:
    chunk = {"object": "chat.completion.chunk", "model": "fixture-model", "choices": [{"delta": {"content": word}}]}
    return b"data: " + json.dumps(chunk).encode()


def _events(body: bytes) -> list[bytes]:
    return [event for event in body.split(b"\n\n") if event]


# -- an answer larger than the gateway reads ----------------------------------------------------------------
def _too_large(framing: str) -> list[bytes]:
    """A well-formed embeddings answer, longer than ANSWER_CAP (the engine writes it out)."""
    body = b'{"object": "list", "data": [], "model": "fixture-model", "pad": "@FILL@"}'
    size = len(body) - len(b"@FILL@") + FILL_BYTES
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    if framing == "length":
        return [head + b"content-length: %d\r\n\r\n" % size, body]
    if framing == "chunked":
        return [head + b"transfer-encoding: chunked\r\n\r\n%x\r\n" % size, body, b"\r\n0\r\n\r\n"]
    return [head + b"connection: close\r\n\r\n", body]  # until the engine closes: no length to go by


@pytest.fixture
def capped(world, engine, gateway) -> Iterator[httpx.Client]:
    """Emergency's `embed` served by two deployments (tried in turn) of a gateway reading ANSWER_CAP bytes."""
    fallback = add_deployment("embed-engine-2", engine.url, task=Task.EMBEDDING)
    route(world.emergency, "embed", Deployment.objects.get(name="embed-engine"), fallback)
    gw = gateway(ENCLAVE_GATEWAY_MAX_ANSWER_BYTES=str(ANSWER_CAP), ENCLAVE_GATEWAY_DOWN_SECONDS="0")
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {world.nurse_key}"}, timeout=30) as http:
        yield http


@pytest.mark.parametrize("framing", ["length", "chunked", "until-close"])
def test_an_answer_larger_than_the_cap_is_cut_off_and_the_next_deployment_tried(engine, capped, framing):
    before = _last_id()
    response = capped.post(
        "/v1/embeddings", json={**BASE["/v1/embeddings"], "fuzz_reply": _reply(*_too_large(framing))}
    )
    code = _error_of(response.status_code, response.headers["content-type"], response.content)
    assert (response.status_code, code) == (502, "upstream_answer_too_large"), response.content[:300]
    assert str(ANSWER_CAP) in json.loads(response.content)["error"]["message"]
    audited = _one_event(before, 502, "upstream_answer_too_large")
    assert audited.outcome == "error"
    assert audited.data["attempts"] == ["embed-engine", "embed-engine-2"]  # like any invalid answer: fallback
    # The gateway stopped reading and closed each connection: neither engine got its 16 MiB written.
    wait_for(lambda: engine.cut_off >= 2, timeout=10, what="both engine connections closed mid-answer")


def test_an_answer_within_the_cap_is_passed_on(capped):
    before = _last_id()
    response = capped.post("/v1/embeddings", json=BASE["/v1/embeddings"])
    assert response.status_code == 200, response.content[:300]
    assert response.json()["model"] == "embed"
    _one_event(before, 200, "")


# -- SSE line endings: CRLF, CR and LF, as the WHATWG spec allows ------------------------------------------------
# In "mixed" a CR is never followed by an LF that ends the next (blank) line: together they would be one CRLF.
ENDINGS = {"crlf": [b"\r\n"], "cr": [b"\r"], "mixed": [b"\r\n", b"\n", b"\r", b"\r\n", b"\n", b"\r", b"\r"]}


def _framed_with(events: list[bytes], endings: list[bytes]) -> bytes:
    """`events` (lines joined by \\n) with their lines ended by `endings` in turn, each event by a blank line."""
    lines = [line for event in events for line in [*event.split(b"\n"), b""]]
    return b"".join(line + endings[i % len(endings)] for i, line in enumerate(lines))


def _split_crlf(raw: bytes) -> list[bytes]:
    """`raw` in pieces cut between the CR and the LF of each CRLF (each piece written after a pause)."""
    pieces, start = [], 0
    for i in range(len(raw) - 1):
        if raw[i : i + 2] == b"\r\n":
            pieces.append(raw[start : i + 1])
            start = i + 1
    return [*pieces, raw[start:]]


@pytest.mark.parametrize("endings", ENDINGS)
def test_sse_events_with_crlf_or_cr_line_endings_are_passed_on(engine, client, endings):
    usage = b'data: {"object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}'
    events = [b": warming up", _chunk("one"), b"id: 7\n" + _chunk("two"), usage, b"data: [DONE]"]
    raw = _framed_with(events, ENDINGS[endings])
    body = {**BASE["/v1/chat/completions"], "stream": True, "fuzz_reply": _reply(SSE_HEAD, *_split_crlf(raw))}
    before = _last_id()
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.content[:300]
    assert _stream_end(response.content) == ""
    passed = _events(response.content)
    assert b"\r" not in response.content  # passed on with LF line endings, whatever the engine used
    assert passed == [
        b": warming up",
        _chunk("one").replace(b'"fixture-model"', b'"default"'),
        b"id: 7\n" + _chunk("two").replace(b'"fixture-model"', b'"default"'),
        b"data: [DONE]",
    ]  # the usage-only event, which the client did not ask for, is not
    audited = _one_event(before, 200, "")
    assert (audited.data["prompt_tokens"], audited.data["completion_tokens"]) == (3, 2)


@pytest.mark.parametrize("endings", ["crlf", "cr"])
def test_an_event_over_the_event_cap_ends_the_stream_whatever_its_line_endings(engine, client, endings):
    raw = _framed_with([_chunk("one"), b"data: @FILL@", b"data: [DONE]"], ENDINGS[endings])
    first, rest = raw.split(b"data: @FILL@")
    body = {
        **BASE["/v1/chat/completions"],
        "stream": True,
        "fuzz_reply": _reply(SSE_HEAD + first, b"data: @FILL@" + rest),
    }
    before = _last_id()
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert _events(response.content)[0] == _chunk("one").replace(b'"fixture-model"', b'"default"')
    assert max(len(event) for event in _events(response.content)) <= MAX_EVENT_BYTES
    assert _stream_end(response.content) == "upstream_invalid_response"
    assert _one_event(before, 502, "upstream_invalid_response").outcome == "error"


# -- a failure of the gateway's own after a stream's first byte -------------------------------------------------
@pytest.fixture
def faulty(world, engine, gateway) -> Iterator[tuple[Proc, httpx.Client]]:
    """A gateway whose stream pump fails at a stream's second event (faults.py; no input makes it fail)."""
    gw = gateway(**{FAULT_ENV: "stream_pump"}, ENCLAVE_GATEWAY_DOWN_SECONDS="0")
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {world.nurse_key}"}, timeout=30) as http:
        yield gw, http


def test_a_gateway_failure_after_the_first_byte_ends_the_stream_with_an_error_event_and_is_audited(faulty):
    gw, http = faulty
    pieces = [SSE_HEAD + _chunk("one") + b"\n\n", _chunk("two") + b"\n\ndata: [DONE]\n\n"]
    body = {**BASE["/v1/chat/completions"], "stream": True, "fuzz_reply": _reply(*pieces)}
    before = _last_id()
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    events = _events(response.content)
    assert events[0] == _chunk("one").replace(b'"fixture-model"', b'"default"')
    error = json.loads(events[-1].removeprefix(b"data: "))["error"]
    assert (len(events), error["code"], error["type"]) == (2, "internal_error", "server_error")
    audited = _one_event(before, 500, "internal_error")
    assert (audited.outcome, audited.data["stream"]) == ("error", True)
    assert AuditEvent.objects.filter(action="gateway.stream_open", id__gt=before).count() == 1
    wait_for(lambda: "InjectedFault" in gw.output(), timeout=5, what="the failure's traceback in the log")
    # The next request is served as usual by the same worker (the pump fails only at a second event).
    before = _last_id()
    body["fuzz_reply"] = _reply(SSE_HEAD + _chunk("one") + b"\n\ndata: [DONE]\n\n")
    assert _stream_end(http.post("/v1/chat/completions", json=body).content) == ""
    _one_event(before, 200, "")


def test_line_endings_are_read_the_same_however_the_stream_is_cut():
    """The translation chunk by chunk (proxy._LineEndings) at every cut of a stream with every line ending,
    a CRLF cut between its CR and its LF included (and an empty read there), gives what the whole stream gives."""
    raw = _framed_with([b": c", _chunk("one"), b"id: 7\n" + _chunk("two"), b"data: [DONE]"], ENDINGS["mixed"])
    whole = _LineEndings()(raw)
    assert b"\r" not in whole and whole.count(b"\n\n") == 4
    for cut in range(len(raw) + 1):
        endings = _LineEndings()
        assert endings(raw[:cut]) + endings(b"") + endings(raw[cut:]) == whole, cut


def test_the_fault_injector_is_off_unless_set_and_names_a_fault_point(monkeypatch):
    monkeypatch.delenv(FAULT_ENV, raising=False)
    assert GatewayConfig.from_env().test_fault == ""
    monkeypatch.setenv(FAULT_ENV, "stream_pump")
    assert GatewayConfig.from_env().test_fault == "stream_pump"
    monkeypatch.setenv(FAULT_ENV, "stream-pump")
    with pytest.raises(ValueError, match=FAULT_ENV):
        GatewayConfig.from_env()


def test_the_answer_cap_is_256_mib_unless_set(monkeypatch):
    monkeypatch.delenv("ENCLAVE_GATEWAY_MAX_ANSWER_BYTES", raising=False)
    assert GatewayConfig.from_env().max_answer_bytes == 256 * 1024 * 1024
    monkeypatch.setenv("ENCLAVE_GATEWAY_MAX_ANSWER_BYTES", "100")
    with pytest.raises(ValueError, match="below the minimum"):
        GatewayConfig.from_env()
