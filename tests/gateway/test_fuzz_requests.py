"""Malformed requests, and engines that answer badly, generated with hypothesis against the real gateway
(gunicorn's ASGI worker, PostgreSQL, Redis). Whatever arrives, the client gets an answer: a 200, or
OpenAI's error shape with one of the gateway's stable codes (never `internal_error`), and exactly one
`gateway.request` audit event that says the same; one department's request is never answered or audited
as another's, and the engine only ever receives strict JSON.

The engine here is a scripted stand-in on a real socket (scripted_engine.py; the engines themselves cannot
misbehave on demand): each request may carry, in `fuzz_reply`, the raw bytes it is to be answered with."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator

import pytest
from hypothesis import Phase, event, example, given, settings
from hypothesis import strategies as st

from appliance.gateway.proxy import MAX_EVENT_BYTES
from mgmt.audit.models import AuditEvent
from tests.fixtures.fuzzing import fuzz

from .scripted_engine import sse

# Every code the gateway answers with, by status (decisions 0352 and 0354).
STABLE_CODES = {
    code: status
    for status, codes in {
        400: "invalid_json invalid_type missing_field invalid_reasoning_effort thinking_max_unavailable"
        " wrong_endpoint_for_model context_length_exceeded upstream_rejected",
        401: "missing_api_key invalid_api_key revoked_api_key expired_api_key account_disabled session_invalid"
        " mfa_required",
        403: "model_not_allowed console_header_required no_department",
        404: "model_not_found unknown_endpoint",
        405: "method_not_allowed",
        408: "incomplete_body",
        413: "request_too_large",
        429: "overloaded",
        502: "upstream_error upstream_failed upstream_invalid_response upstream_interrupted upstream_answer_too_large",
        503: "upstream_unavailable no_healthy_deployment capacity_timeout audit_unavailable gateway_not_ready"
        " session_store_unavailable",
        504: "upstream_timeout",
    }.items()
    for code in codes.split()
}
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages")
SECRETS = ("Emergency", "Litigation", "er-engine", "law-engine", "embed-engine", "fixture-model")
# Without the "explain" phase: explaining a failure takes long against real servers.
FUZZ_SETTINGS = fuzz(phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])


class Trap:
    """A port where nothing may arrive: where engines' redirects point."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1/chat/completions"

    def visited(self) -> bool:
        try:
            self.sock.accept()[0].close()
        except BlockingIOError:
            return False
        return True


# -- checking one answer ------------------------------------------------------------------------------------
def _last_id() -> int:
    return AuditEvent.objects.filter(action="gateway.request").order_by("-id").values_list("id", flat=True).first() or 0


def _error_of(status: int, content_type: str, body: bytes) -> str:
    """The stable code of an error answer, after checking its OpenAI shape."""
    assert content_type == "application/json", (status, content_type, body[:200])
    error = json.loads(body)["error"]
    assert isinstance(error["message"], str) and error["message"] and "type" in error, body
    assert STABLE_CODES.get(error["code"]) == status, (status, body)
    assert not any(secret in error["message"] for secret in SECRETS), body  # nothing of other departments
    return str(error["code"])


def _stream_end(body: bytes) -> str:
    """'' if an SSE answer ended with its closing event, else the code of its terminating error event."""
    last = body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    if last in (b"data: [DONE]", b'event: message_stop\ndata: {"type": "message_stop"}'):
        return ""
    error = json.loads(last.split(b"data: ", 1)[1])["error"]
    assert error["code"] in STABLE_CODES, body[-300:]
    return str(error["code"])


def _one_event(since: int, status: int, code: str | None = None) -> AuditEvent:
    """The one audit event of the request answered since event `since`; it says `status` and `code`."""
    events = list(AuditEvent.objects.filter(action="gateway.request", id__gt=since))
    assert len(events) == 1, [(e.data, e.outcome) for e in events]
    event = events[0]
    if code is None:
        code = event.data.get("code", "")
    assert (event.data["status"], event.data.get("code", "")) == (status, code), event.data
    for count in ("prompt_tokens", "completion_tokens"):
        assert type(event.data.get(count, 0)) is int and 0 <= event.data.get(count, 0) < 2**53, event.data
    return event


# -- bodies: valid JSON of every wrong shape, and texts that are not JSON ------------------------------
BASE = {
    "/v1/chat/completions": {"model": "default", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "default", "prompt": "hi"},
    "/v1/embeddings": {"model": "embed", "input": "hi"},
    "/v1/messages": {"model": "default", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
}
FIELDS = (
    *("model", "messages", "prompt", "input", "stream", "stream_options", "max_tokens", "max_completion_tokens"),
    *("n", "temperature", "top_p", "reasoning_effort", "chat_template_kwargs", "tools", "priority", "system"),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.sampled_from(["default", "legal", "embed", "", "max", "none", "10", "true"]),
)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
)
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool"])},
        optional={"content": _values, "tool_calls": _values, "name": _values},
    ),
    max_size=3,
)
# Texts json.dumps never writes, each as the value of one field: not JSON to an engine, or not storable.
_RAW_VALUES = (b"NaN", b"-Infinity", b"1e400", b"-1e999", b'"\\udc00"', b"[" * 3000, b"1" * 5000, b'"\xff"')


@settings(FUZZ_SETTINGS, max_examples=200)
@given(
    path=st.sampled_from(ENDPOINTS),
    model=st.sampled_from(["", "default", "embed", "legal", "nope"]),
    changes=st.dictionaries(st.sampled_from(FIELDS), _values | _messages, max_size=3),
    dropped=st.sets(st.sampled_from(FIELDS), max_size=1),
    stream=st.booleans(),
    # Mostly valid JSON; else one value written as no encoder writes it, or the body cut short.
    damage=st.one_of(
        *[st.none()] * 4,
        st.tuples(st.sampled_from(FIELDS), st.sampled_from(_RAW_VALUES)),
        st.integers(min_value=0, max_value=60),
    ),
)
# Python reads 1e400 as Infinity, which was sent on to the engine as `Infinity`: not JSON.
@example(path="/v1/completions", model="", changes={}, dropped=set(), stream=False, damage=("top_p", b"1e400"))
def test_malformed_bodies_get_a_stable_code_and_one_audit_event(
    engine, client, path, model, changes, dropped, stream, damage
):
    body = {**BASE[path], "stream": stream, **({"model": model} if model else {}), **changes}
    content = json.dumps({k: v for k, v in body.items() if k not in dropped}).encode()
    if isinstance(damage, tuple):
        content = content[:-1] + b', "%s": %s}' % (damage[0].encode(), damage[1])
    elif damage is not None:
        content = content[:damage]
    before = _last_id()
    response = client.post(path, content=content)
    assert not engine.not_strict, engine.not_strict[-1][:300]
    if response.status_code == 200:
        streamed = response.headers["content-type"] == "text/event-stream"
        assert (_stream_end(response.content) if streamed else "") == ""
        assert _one_event(before, 200, "").department == "Emergency"
        event("200")
    else:
        code = _error_of(response.status_code, response.headers["content-type"], response.content)
        assert response.status_code < 500, response.content  # the engine answers well: the request was refused
        _one_event(before, response.status_code, code)
        event(code)


# -- what an engine may send back ---------------------------------------------------------------------------
DEEP = b"[" * 5000  # deeper than Python's decoder goes
GOOD_ANSWER = b'{"object": "chat.completion", "model": "fixture-model", "choices": [], "usage": {"prompt_tokens": 1}}'
NEGATIVE_USAGE = b'{"object": "x", "usage": {"prompt_tokens": -5, "completion_tokens": -1}}'
HUGE_USAGE = b'{"object": "x", "usage": {"prompt_tokens": 1' + b"0" * 400 + b"}}"
_ANSWERS = st.sampled_from(
    [
        GOOD_ANSWER,
        b'{"object": "chat.completion", "choices": [',
        b"<html>busy</html>",
        b"",
        b"[1, 2]",
        b'"text"',
        b"{}",
        DEEP,
        b'{"error": {"message": ' + DEEP + b"}}",
        b'{"error": {"message": [[[[["x"]]]]]}}',
        b'{"error": {"message": "This model\'s maximum context length is 10 tokens"}}',
        b'{"error": "plain words"}',
        NEGATIVE_USAGE,
        HUGE_USAGE,
        b'{"object": "x", "usage": {"prompt_tokens": true, "completion_tokens": 2.5}}',
        b'{"object": "x", "usage": {"prompt_tokens": ' + b"9" * 5000 + b"}}",
        b"\xff\xfe{}",
    ]
)
GOOD_EVENTS = (
    sse({"object": "chat.completion.chunk", "model": "fixture-model", "choices": [{"delta": {"content": "a"}}]}),
    sse({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}),
    b": ping\n\n",
)
_EVENTS = st.sampled_from(
    [
        *GOOD_EVENTS,
        sse({"choices": [], "usage": {"prompt_tokens": -2, "completion_tokens": 2}}),
        b'data: {"usage": {"prompt_tokens": ' + DEEP + b"}}\n\n",
        b"event: odd\ndata: x\n\n",
        b"data: not json\n\n",
        b'data: {"choices": [1]}\r\n\r\n',
        b"\n\n",
        b"data: [DONE]\n\n",
    ]
)
FRAMINGS = ("length", "chunked", "until-close", "length-too-long", "length-too-short", "chunked-cut")


def _framed(status: int, content_type: bytes, body: bytes, framing: str) -> bytes:
    if b"@FILL@" in body:
        framing = "until-close"  # the engine writes the filling: no length can be given here
    head = b"HTTP/1.1 %d X\r\ncontent-type: %s\r\nconnection: close\r\n" % (status, content_type)
    if status in (301, 302, 303, 307, 308):
        head += b"location: TRAP\r\n"
    if framing.startswith("chunked"):
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        return head + b"transfer-encoding: chunked\r\n\r\n" + (chunked[:-7] if framing == "chunked-cut" else chunked)
    if framing == "until-close":
        return head + b"\r\n" + body
    length = len(body) + {"length": 0, "length-too-long": 10, "length-too-short": -1}[framing]
    return head + b"content-length: %d\r\n\r\n" % max(0, length) + body


SSE_HEAD = _framed(200, b"text/event-stream", b"", "until-close")


@st.composite
def engine_replies(draw: st.DrawFn) -> tuple[bool, bytes, bool]:
    """(stream?, the raw reply, whether it is one the client must get as a 200)."""
    stream = draw(st.booleans())
    status = draw(st.sampled_from([*[200] * 8, 201, 204, 302, 307, 400, 404, 408, 422, 429, 500, 503]))
    framing = draw(st.sampled_from([*FRAMINGS[:3] * 2, *FRAMINGS]))
    if stream:
        events = draw(st.lists(st.sampled_from(GOOD_EVENTS), max_size=4) | st.lists(_EVENTS, max_size=4))
        done = draw(st.booleans())
        body = b"".join(events) + (b"data: [DONE]\n\n" if done else b"")
        content_type = b"text/event-stream"
        good = done and events[:1] != [b": ping\n\n"] and all(e in GOOD_EVENTS for e in events)
    else:
        body = draw(_ANSWERS | _ANSWERS | st.binary(max_size=30))
        content_type = draw(st.sampled_from([b"application/json", b"text/html", b"text/event-stream"]))
        good = body == GOOD_ANSWER
    good = good and status == 200 and framing in ("length", "chunked", "until-close")
    return stream, _framed(status, content_type, body, framing), good


@pytest.fixture
def trap() -> Iterator[Trap]:
    catcher = Trap()
    yield catcher
    catcher.sock.close()


@settings(FUZZ_SETTINGS, max_examples=150)
@given(reply=engine_replies(), cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=2))
# A stream that opens with a blank line, or whose first read ends inside "data:", is still SSE.
@example(reply=(True, SSE_HEAD + b"\n" + GOOD_EVENTS[0] + b"data: [DONE]\n\n", True), cuts=[len(SSE_HEAD) + 1])
@example(reply=(True, SSE_HEAD + GOOD_EVENTS[0] + b"data: [DONE]\n\n", True), cuts=[len(SSE_HEAD) + 2])
# Nesting deeper than Python's decoder goes was a 500 (and mid-stream, a stream cut off unaudited).
@example(reply=(False, _framed(200, b"application/json", DEEP, "length"), False), cuts=[])
@example(reply=(True, SSE_HEAD + b'data: {"usage": {"x": ' + DEEP + b"}}\n\n", False), cuts=[])
# An engine's redirect was followed: the request (a 307 keeps its body) went wherever it pointed.
@example(reply=(False, _framed(307, b"application/json", b"", "length"), False), cuts=[])
# A negative token count made the metrics' counter raise after the answer (audited as it came).
@example(reply=(False, _framed(200, b"application/json", NEGATIVE_USAGE, "length"), False), cuts=[])
# So did one of 400 digits (no float holds it); it was also stored in the audit event as it came.
@example(reply=(False, _framed(200, b"application/json", HUGE_USAGE, "length"), False), cuts=[])
# An event larger than the gateway passes on (the engine writes out the filling) ends the stream.
@example(reply=(True, _framed(200, b"text/event-stream", b"data: @FILL@\n\n", "until-close"), False), cuts=[])
def test_whatever_an_engine_sends_the_client_gets_a_stable_answer(engine, client, trap, reply, cuts):
    stream, raw, good = reply
    raw = raw.replace(b"TRAP", trap.url.encode())
    pieces = [raw[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(raw)], strict=True)]
    body = {
        **BASE["/v1/chat/completions"],
        "stream": stream,
        "fuzz_reply": [base64.b64encode(piece).decode() for piece in pieces if piece],
    }
    before = _last_id()
    response = client.post("/v1/chat/completions", json=body)
    if response.status_code == 200 and response.headers["content-type"] == "text/event-stream":
        code = _stream_end(response.content)
        status = STABLE_CODES.get(code, 200)
        longest = max(len(e) for e in response.content.split(b"\n\n"))
        assert longest <= MAX_EVENT_BYTES, "an event longer than the gateway passes on was passed on"
    else:
        code = (
            ""
            if response.status_code == 200
            else _error_of(response.status_code, response.headers["content-type"], response.content)
        )
        status = response.status_code
    assert code != "internal_error", response.content[-500:]
    _one_event(before, status, code)
    assert not trap.visited(), "an engine's redirect was followed"
    if good:
        assert (response.status_code, code) == (200, ""), response.content[-500:]
    event(f"{response.status_code} {code}")


# -- headers, methods, paths and framing, as raw HTTP ------------------------------------------------------
def _exchange(url: str, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send `request` as it is (clients tidy headers and framing) and read the answer to the end."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    received = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines)}
    if headers.get(b"transfer-encoding") == b"chunked":
        decoded, rest = b"", body
        while (size := int(rest.split(b"\r\n", 1)[0], 16)) > 0:
            decoded += rest.split(b"\r\n", 1)[1][:size]
            rest = rest.split(b"\r\n", 1)[1][size + 2 :]
        body = decoded
    return int(status_line.split()[1]), headers, body


_header_value = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c == 9 or 32 <= c != 127).strip(b" \t"))
PATHS = (
    *ENDPOINTS,
    "/v1/models",
    *("/", "/v1", "/v1/", "/v1/chat/completions/", "/v1/models/default", "/v2/chat/completions"),
    *("/V1/chat/completions", "//v1/chat/completions", "/v1/chat%2Fcompletions", "/v1/%ff%fe", "/v1/embeddings;x"),
)


# Stand-ins for the credentials, put in when the request is sent (hypothesis' examples are made before).
SECRET_OF = {b"@Emergency@": "nurse_key", b"@Litigation@": "lawyer_key", b"@session@": "session"}
KEY_STAND_INS = (b"@Emergency@", b"@Litigation@")  # each names the department of its key


@st.composite
def credentials(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    """Headers that say who is asking, or try to."""
    known = st.sampled_from(KEY_STAND_INS)
    odd = st.one_of(
        known.map(lambda key: b"bearer  " + key),
        st.sampled_from([b"", b"Bearer", b"Bearer ", b"Basic bmluYTpwYXNz", b"Bearer enc_", b"Bearer enc_x_y"]),
        _header_value,
        _header_value.map(lambda v: b"Bearer " + v),
        known.map(lambda key: b"Bearer " + key + b"\xe9"),
        st.just(b"Bearer enc_" + b"a" * 7000),
    )
    form = draw(st.sampled_from(["key", "key", "key", "x-api-key", "session", "session", "odd", "none"]))
    headers = [(b"authorization", b"Bearer " + draw(known))] if form == "key" else []
    headers += [(b"authorization", value) for value in draw(st.lists(odd, min_size=form == "odd", max_size=1))]
    if form == "x-api-key" or draw(st.integers(0, 3)) == 0:
        headers.append((b"x-api-key", draw(known | _header_value)))
    if form == "session" or draw(st.integers(0, 3)) == 0:
        cookie = st.sampled_from([b"sessionid=@session@", b"sessionid=not-a-session", b"theme=dark", b"sessionid="])
        headers.append((b"cookie", draw(cookie)))
    console = draw(st.sampled_from([None, b"1", b"1", b"0", b"yes"]))
    return headers + ([(b"x-enclave-console", console)] if console is not None else [])


def _taken_for(headers: list[tuple[bytes, bytes]]) -> str:
    """The department the gateway must take `headers` for: the first Authorization header counts, else
    x-api-key, else the console session (with its header); "" for nobody."""
    first = dict(reversed(headers))
    if b"authorization" in first or b"x-api-key" in first:
        value = first[b"authorization"] if b"authorization" in first else b"Bearer " + first[b"x-api-key"]
        scheme, _, key = value.partition(b" ")
        key = key.strip(b" ")
        return key.strip(b"@").decode() if scheme.lower() == b"bearer" and key in KEY_STAND_INS else ""
    session = first.get(b"cookie") == b"sessionid=@session@" and first.get(b"x-enclave-console") == b"1"
    return "Emergency" if session else ""


def _raw_request(method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes, framing: str) -> bytes:
    if framing == "chunked":
        headers = [*headers, (b"transfer-encoding", b"chunked")]
        body = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7))
        body += b"0\r\n\r\n"
    elif framing == "none":
        body = b""
    else:  # a Content-Length, or one that promises 10 bytes more than come
        headers = [
            *headers,
            (b"content-length", b"%d" % (len(body) + (10 if framing == "length-promises-more" else 0))),
        ]
    head = b"%s %s HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n" % (method.encode(), target.encode())
    return head + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body


@pytest.fixture
def raw_gateway(world, engine, gateway):
    """A gateway whose ASGI worker waits 4 s, not 30, for a request body that stops short (its --timeout),
    and the secrets its stand-ins name (a console session of the nurse's among them)."""
    from django.test import Client

    browser = Client()
    browser.force_login(world.nurse)
    gw = gateway(
        ENCLAVE_GATEWAY_MAX_BODY_BYTES="20000",
        ENCLAVE_GATEWAY_DOWN_SECONDS="0",
        GUNICORN_CMD_ARGS="--timeout 4",
    )
    secrets = {"nurse_key": world.nurse_key, "lawyer_key": world.lawyer_key}
    secrets["session"] = browser.cookies["sessionid"].value
    return gw, {stand_in: secrets[name].encode() for stand_in, name in SECRET_OF.items()}


@settings(FUZZ_SETTINGS, max_examples=200)
@given(
    method=st.sampled_from([*["POST"] * 10, "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"]),
    path=st.sampled_from([*ENDPOINTS * 5, *["/v1/models"] * 2, *PATHS]),
    query=st.sampled_from(["", "?", "?stream=true", "?a=%ff&&b"]),
    headers=credentials(),
    alias=st.sampled_from(["default", "legal", "embed", "nope"]),
    extra=st.dictionaries(
        st.sampled_from([b"content-type", b"accept", b"x-real-ip", b"expect", b"x-forwarded-for"]), _header_value
    ),
    framing=st.sampled_from(["length", "length", "chunked", "none"]),
    size=st.sampled_from([0, 0, 0, 30000]),
)
# A body that stops before its Content-Length was answered by gunicorn with a plain-text 500 once it gave up.
@example(
    method="POST",
    path=ENDPOINTS[0],
    query="",
    headers=[(b"authorization", b"Bearer @Emergency@")],
    alias="default",
    extra={},
    framing="length-promises-more",
    size=0,
)
def test_odd_headers_methods_and_paths_get_a_stable_code_and_one_audit_event(
    raw_gateway, method, path, query, headers, alias, extra, framing, size
):
    gw, secrets = raw_gateway
    body = json.dumps({**BASE.get(path, BASE[ENDPOINTS[0]]), "model": alias, "pad": "x" * size}).encode()
    sent = [(name, value) for name, value in [*headers, *extra.items()]]
    for stand_in, secret in secrets.items():
        sent = [(name, value.replace(stand_in, secret)) for name, value in sent]
    before = _last_id()
    status, response_headers, content = _exchange(gw.url, _raw_request(method, path + query, sent, body, framing))
    audited = _one_event(before, status)
    code = audited.data.get("code", "")
    if method != "HEAD":
        if status == 200:
            json.loads(content)
        else:
            assert _error_of(status, response_headers[b"content-type"].decode(), content) == code
    assert STABLE_CODES.get(code, 200) == status
    department = _taken_for(headers)
    assert audited.department in ("", department), (audited.department, department)  # never another's
    if status == 200 or code in ("model_not_allowed", "model_not_found", "wrong_endpoint_for_model"):
        assert audited.department == department != ""
    if path in ENDPOINTS or path == "/v1/models":
        assert department or status in (401, 403, 408), (status, code)  # nothing served without a credential
    event(f"{status} {code}")
