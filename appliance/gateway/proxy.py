"""Forwarding one request to a deployment: unary or streamed (SSE passed through event by event).

Failures before the first byte reaches the client raise BeforeFirstByte, and the caller tries the next
deployment; after that, the client gets a terminating error event. The audit event that makes a stream
durable is committed before its first byte is sent; the closing `data: [DONE]` waits for the final one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .errors import GatewayError, error_body

__all__ = ["BeforeFirstByte", "Call", "ModelRename", "forward_stream", "forward_unary"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
JSON_HEADERS = [(b"content-type", b"application/json")]
UPSTREAM_HEADERS = {"Content-Type": "application/json"}
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
DONE = b"data: [DONE]"
# What an SSE stream may open with (a field name, or ":" for a comment); the longest is "event:".
SSE_STARTS = (b"data:", b":", b"event:", b"id:", b"retry:")
# An engine's stream event is a token or a few; one this large (or a stream that never separates its
# events) ends the stream instead of being buffered, and re-scanned, without bound.
MAX_EVENT_BYTES = 16 * 1024 * 1024
# Anthropic's Messages API ends a stream with this event and reports usage in message_start/message_delta.
MESSAGE_STOP = b"event: message_stop"
ANTHROPIC_PATHS = frozenset({"/v1/messages"})
# How vLLM, llama.cpp and ds4 word "the input does not fit the context".
_CONTEXT_MARKERS = (
    "maximum context length",
    "context length",
    "maximum model length",
    "max_model_len",
    "context_length_exceeded",
    "exceeds the available context",
    "context size",
)


class BeforeFirstByte(Exception):
    """The deployment failed before anything was sent to the client: the next one may be tried."""

    def __init__(self, error: GatewayError, *, connect_failed: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.connect_failed = connect_failed


@dataclass(slots=True)
class Call:
    """What the audit event and the metrics say about one request."""

    endpoint: str
    ip: str
    started: float
    stream: bool = False
    alias: str = ""
    deployment: str = ""
    attempts: list[str] = field(default_factory=list)
    status: int = 0
    code: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_byte_ms: float | None = None
    response_started: bool = False


class ModelRename:
    """Engines name their served model in every answer; the client asked for an alias and gets it back.

    Applied to the bytes of one JSON object (a unary answer, or one SSE event): the first
    `"model":"<served>"` (with or without a space after the colon, as engines write it) becomes the alias.
    OpenAI objects name their model before any nested content, and a quote inside a string value is
    escaped in JSON, so generated text cannot match."""

    __slots__ = ("_pairs",)

    def __init__(self, served: str, alias: str) -> None:
        old, new = json.dumps(served).encode(), json.dumps(alias).encode()
        pairs = ((b'"model":' + old, b'"model":' + new), (b'"model": ' + old, b'"model": ' + new))
        self._pairs = () if old == new else pairs

    def __call__(self, data: bytes) -> bytes:
        for old, new in self._pairs:
            if old in data:
                return data.replace(old, new, 1)
        return data


def _engine_json(content: bytes) -> Any:
    """An engine's JSON answer or event, or None if it is not JSON (nesting too deep for the decoder
    included: that used to escape as a 500, and mid-stream as a stream cut off without its audit event)."""
    try:
        return json.loads(content)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _upstream_error(status: int, content: bytes) -> GatewayError | BeforeFirstByte:
    """Map an engine's non-200 answer: 5xx may be retried elsewhere, 4xx is the client's to fix."""
    if status < 400:
        # Not an answer (redirects are not followed: the body goes to the engine configured, nowhere else).
        return BeforeFirstByte(
            GatewayError(502, "upstream_invalid_response", f"The engine answered with status {status}, not a result.")
        )
    parsed = _engine_json(content)
    err = parsed.get("error", parsed) if isinstance(parsed, dict) else None
    message = err.get("message") if isinstance(err, dict) else err
    if not isinstance(message, str):
        message = ""  # a number or a nested object is not a message to show
    if status >= 500 or status in (408, 429):
        return BeforeFirstByte(GatewayError(502, "upstream_error", f"The engine failed ({status}); try again shortly."))
    lowered = message.lower()
    if any(marker in lowered for marker in _CONTEXT_MARKERS):
        return GatewayError(400, "context_length_exceeded", message or "The input is longer than the model allows.")
    return GatewayError(400, "upstream_rejected", message or f"The engine refused the request ({status}).")


def _usage(call: Call, usage: Any) -> None:
    """Token counts in OpenAI's names or Anthropic's; a stream may report them over several events."""
    if isinstance(usage, dict):
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        # Whole counts only: a negative one made the metrics' counter raise after the answer was sent.
        if type(prompt) is int and prompt >= 0:
            call.prompt_tokens = prompt
        if type(completion) is int and completion >= 0:
            call.completion_tokens = completion


def _transport_failure(exc: BaseException) -> BeforeFirstByte:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return BeforeFirstByte(
            GatewayError(503, "upstream_unavailable", "The engine is not reachable; try again shortly."),
            connect_failed=True,
        )
    if isinstance(exc, TimeoutError):
        return BeforeFirstByte(GatewayError(504, "upstream_timeout", "The engine did not answer in time."))
    return BeforeFirstByte(GatewayError(502, "upstream_failed", "The engine closed the connection."))


# What a failing engine connection raises: aiohttp's errors and timeouts.
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)


async def forward_unary(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    call: Call,
    send: Send,
    audit: Callable[[Call], Awaitable[None]],
    rename: ModelRename,
) -> None:
    try:
        async with session.post(url, data=body, headers=UPSTREAM_HEADERS, allow_redirects=False) as response:
            status = response.status
            content = await response.read()
    except TRANSPORT_ERRORS as exc:
        raise _transport_failure(exc) from None
    if status != 200:
        raise _upstream_error(status, content)
    parsed = _engine_json(content)
    anthropic = call.endpoint in ANTHROPIC_PATHS
    if not isinstance(parsed, dict) or ((parsed.get("type") != "message") if anthropic else ("object" not in parsed)):
        raise BeforeFirstByte(
            GatewayError(502, "upstream_invalid_response", "The engine sent an answer that is not in the API's shape.")
        )
    _usage(call, parsed.get("usage"))
    call.status, call.code = 200, ""
    await audit(call)  # raises GatewayError(audit_unavailable): the caller answers 503 instead
    call.response_started = True
    content = rename(content)
    headers = [*JSON_HEADERS, (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def _looks_like_sse(chunk: bytes) -> bool | None:
    """Whether a stream's first bytes are SSE; None while too few have come to tell ("da", or a blank line)."""
    head = chunk.lstrip()[:6]
    if head.startswith(SSE_STARTS):
        return True
    return None if len(head) < 6 and any(start.startswith(head) for start in SSE_STARTS) else False


async def forward_stream(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    call: Call,
    send: Send,
    audit_open: Callable[[Call], Awaitable[None]],
    audit: Callable[[Call], Awaitable[None]],
    wants_usage: bool,
    clock: Callable[[], float],
    rename: ModelRename,
) -> None:
    try:
        response = await session.post(url, data=body, headers=UPSTREAM_HEADERS, allow_redirects=False)
    except TRANSPORT_ERRORS as exc:
        raise _transport_failure(exc) from None
    try:
        if response.status != 200:
            try:
                content = await response.read()
            except TRANSPORT_ERRORS as exc:
                raise _transport_failure(exc) from None
            raise _upstream_error(response.status, content)
        chunks = response.content.iter_any()
        # The open event is committed while the engine works on the first token.
        opened = asyncio.ensure_future(audit_open(call))
        try:
            first = await anext(chunks)
            while (sse := _looks_like_sse(first)) is None and len(first) <= MAX_EVENT_BYTES:
                first += await anext(chunks)  # a first read that ends before the first field name does
        except (*TRANSPORT_ERRORS, StopAsyncIteration) as exc:
            await asyncio.gather(opened, return_exceptions=True)
            if not isinstance(exc, StopAsyncIteration):
                raise _transport_failure(exc) from None
            raise BeforeFirstByte(
                GatewayError(502, "upstream_invalid_response", "The engine closed the stream without data.")
            ) from None
        if not sse:
            await asyncio.gather(opened, return_exceptions=True)
            raise BeforeFirstByte(
                GatewayError(502, "upstream_invalid_response", "The engine sent a stream that is not SSE.")
            )
        await opened  # GatewayError(audit_unavailable) propagates: nothing has been sent yet
        call.response_started = True
        call.first_byte_ms = (clock() - call.started) * 1000
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        finished = await _pump(first, response.content, call, send, wants_usage, rename)
    finally:
        # Not read to the end (client gone, engine died): the connection is closed, which makes the
        # engine abort the request; read to the end: it goes back to the pool.
        if response.content.at_eof():
            response.release()
        else:
            response.close()
    if finished:
        call.status, call.code = 200, ""
    anthropic = call.endpoint in ANTHROPIC_PATHS
    tail: bytes
    try:
        await audit(call)
        if finished:
            tail = (finished if anthropic else DONE) + b"\n\n"
        elif call.code == "upstream_invalid_response":
            message = f"The engine sent an event larger than the gateway passes on ({MAX_EVENT_BYTES} bytes)."
            tail = _error_event(message, call.code, anthropic)
        else:
            tail = _error_event("The engine stopped in the middle of the answer; ask again.", call.code, anthropic)
    except GatewayError:
        call.status, call.code = 503, "audit_unavailable"
        message = "The audit trail is unavailable; this answer could not be recorded."
        tail = _error_event(message, "audit_unavailable", anthropic)
    await send({"type": "http.response.body", "body": tail, "more_body": False})


def _error_event(message: str, code: str, anthropic: bool) -> bytes:
    if anthropic:
        error = {"type": "error", "error": {"type": "api_error", "message": message, "code": code}}
        return b"event: error\ndata: " + json.dumps(error, separators=(",", ":")).encode() + b"\n\n"
    return b"data: " + error_body(message, "server_error", code) + b"\n\n"


def _left_unread(reader: aiohttp.StreamReader) -> bytes:
    """What the engine sent before its connection broke that nobody has read yet. aiohttp's readany
    raises the connection's error before it returns what it has buffered (aiohttp 3.14), so the events
    the engine completed just before it died would be lost; they are taken from the reader's buffer
    (no public call returns it once the error is set). Seen in CI: the last chunk before an engine died."""
    pending = getattr(reader, "_buffer", None)
    return b"".join(bytes(chunk) for chunk in pending) if pending else b""


async def _pump(
    first: bytes, reader: aiohttp.StreamReader, call: Call, send: Send, wants_usage: bool, rename: ModelRename
) -> bytes:
    """Pass events through as they complete (`first`, then what `reader` brings); hold back the closing
    event ([DONE], or Anthropic's message_stop) and return it if the engine finished the stream, else b""
    (it broke off)."""
    chunks = reader.iter_any()
    anthropic = call.endpoint in ANTHROPIC_PATHS
    closing = MESSAGE_STOP if anthropic else DONE
    buffer = first
    searched = 0  # `buffer` holds no b"\n\n" before this: a long event is not searched again from its start
    finished = b""
    broken = False
    while True:
        out: list[bytes] = []
        while True:
            end = buffer.find(b"\n\n", searched)
            if end < 0 or end > MAX_EVENT_BYTES:
                searched = max(0, len(buffer) - 1)
                break
            event, buffer, searched = buffer[:end], buffer[end + 2 :], 0
            if event.startswith(closing):
                finished = event
                continue
            if b'"usage":{' in event or b'"usage": {' in event:
                data = event.find(b"data:")
                try:
                    parsed = json.loads(event[data + 5 :] if data >= 0 else event)
                    usage = parsed.get("usage")
                    if usage is None and isinstance(parsed.get("message"), dict):
                        usage = parsed["message"].get("usage")  # Anthropic's message_start
                    _usage(call, usage)
                    if not anthropic and not wants_usage and not parsed.get("choices"):
                        continue  # the client did not ask for the usage-only event (the gateway did)
                except (ValueError, AttributeError, RecursionError):
                    pass
            out.append(rename(event) + b"\n\n")
        if out:
            await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
        if finished:
            return finished
        if len(buffer) > MAX_EVENT_BYTES:  # an event too long to pass on, complete or not
            call.status, call.code = 502, "upstream_invalid_response"
            return b""
        if broken:
            call.status, call.code = 502, "upstream_interrupted"
            return b""
        try:
            buffer += await anext(chunks)
        except StopAsyncIteration:
            broken = True
        except TRANSPORT_ERRORS:
            buffer += _left_unread(reader)  # its complete events still go out, then the stream ends
            broken = True
