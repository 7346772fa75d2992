"""Forwarding one request to a deployment: unary or streamed (SSE passed through event by event).

Failures before the first byte reaches the client raise BeforeFirstByte, and the caller tries the next
deployment; after that, the client gets a terminating error event. The audit event that makes a stream
durable is committed before its first byte is sent; the closing `data: [DONE]` waits for the final one. A
failure of the gateway's own after the first byte still ends the stream with an error event and its audit event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .errors import GatewayError, error_body

__all__ = ["BeforeFirstByte", "Call", "ModelRename", "forward_stream", "forward_unary"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
# What the pump does to each event's bytes before they are passed on: ModelRename (faults.py may wrap it).
Rename = Callable[[bytes], bytes]
log = logging.getLogger(__name__)
JSON_HEADERS = [(b"content-type", b"application/json")]
UPSTREAM_HEADERS = {"Content-Type": "application/json"}
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
DONE = b"data: [DONE]"
# b"\r" as an int: `CR in chunk` is one memchr (about 25 ns for an event); `b"\r" in chunk` took 10 times that.
CR = 0x0D
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


MAX_TOKEN_COUNT = 2**53


def _usage(call: Call, usage: Any) -> None:
    """Token counts in OpenAI's names or Anthropic's; a stream may report them over several events."""
    if isinstance(usage, dict):
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        # Whole counts only: a negative one, or one of hundreds of digits (no float holds it), made the
        # metrics' counter raise after the answer was sent. Below 2**53, a count any reader takes exactly.
        if type(prompt) is int and 0 <= prompt < MAX_TOKEN_COUNT:
            call.prompt_tokens = prompt
        if type(completion) is int and 0 <= completion < MAX_TOKEN_COUNT:
            call.completion_tokens = completion


def _too_large(limit: int) -> BeforeFirstByte:
    """An answer over the cap: like any answer the gateway cannot pass on, the next deployment may be tried."""
    return BeforeFirstByte(
        GatewayError(
            502,
            "upstream_answer_too_large",
            f"The engine's answer is larger than the gateway passes on ({limit} bytes); ask for less in one request.",
        )
    )


async def _read_answer(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """A whole non-streamed answer, read as it comes and counted: past `limit` bytes the reading stops and the
    connection is closed (a broken engine could otherwise send gigabytes into the worker's memory)."""
    declared = response.content_length
    if declared is not None and declared > limit:
        response.close()
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            response.close()
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


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
    rename: Rename,
    max_answer_bytes: int,
) -> None:
    try:
        async with session.post(url, data=body, headers=UPSTREAM_HEADERS, allow_redirects=False) as response:
            status = response.status
            content = await _read_answer(response, max_answer_bytes)
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
    rename: Rename,
    max_answer_bytes: int,
) -> None:
    try:
        response = await session.post(url, data=body, headers=UPSTREAM_HEADERS, allow_redirects=False)
    except TRANSPORT_ERRORS as exc:
        raise _transport_failure(exc) from None
    failure: Exception | None = None
    try:
        if response.status != 200:
            try:
                content = await _read_answer(response, max_answer_bytes)
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
        try:
            finished = await _pump(first, response.content, call, send, wants_usage, rename)
        except Exception as exc:
            # The safety net: a failure of the gateway's own after the first byte cannot become a 500 any
            # more; the stream still ends with an error event and its final audit event (logged below).
            failure, finished = exc, b""
            call.status, call.code = 500, "internal_error"
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
        elif call.code == "internal_error":
            tail = _error_event(
                "The gateway failed in the middle of the answer; the failure is logged.", call.code, anthropic
            )
        else:
            tail = _error_event("The engine stopped in the middle of the answer; ask again.", call.code, anthropic)
    except GatewayError:
        call.status, call.code = 503, "audit_unavailable"
        message = "The audit trail is unavailable; this answer could not be recorded."
        tail = _error_event(message, "audit_unavailable", anthropic)
    await send({"type": "http.response.body", "body": tail, "more_body": False})
    if failure is not None:
        log.error("gateway: unexpected failure in a stream on %s after its first byte", call.endpoint, exc_info=failure)


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


class _LineEndings:
    """SSE lines may end with CRLF, LF or a lone CR (WHATWG HTML, "event stream interpretation"): this makes
    each of them LF, chunk by chunk, so that events are separated by b"\n\n" alone. A chunk that ends with CR
    ends its line at once (the event it completes is not held back for the next chunk); an LF opening the
    next chunk is the rest of that CRLF and is dropped."""

    __slots__ = ("_after_cr",)

    def __init__(self) -> None:
        self._after_cr = False

    def __call__(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = chunk.endswith(b"\r")
        return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


async def _pump(
    first: bytes, reader: aiohttp.StreamReader, call: Call, send: Send, wants_usage: bool, rename: Rename
) -> bytes:
    """Pass events through as they complete (`first`, then what `reader` brings); hold back the closing
    event ([DONE], or Anthropic's message_stop) and return it if the engine finished the stream, else b""
    (it broke off). Events go out with LF line endings, whichever the engine used."""
    chunks = reader.iter_any()
    anthropic = call.endpoint in ANTHROPIC_PATHS
    closing = MESSAGE_STOP if anthropic else DONE
    # Engines end lines with LF: the stream is translated only from the first chunk that has a CR in it (on
    # the usual path, one memchr per chunk).
    endings: _LineEndings | None = None
    if CR in first:
        endings = _LineEndings()
        first = endings(first)
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
            chunk = await anext(chunks)
        except StopAsyncIteration:
            broken = True
            continue
        except TRANSPORT_ERRORS:
            chunk = _left_unread(reader)  # its complete events still go out, then the stream ends
            broken = True
        if endings is None and CR in chunk:
            endings = _LineEndings()
        buffer += endings(chunk) if endings is not None else chunk
