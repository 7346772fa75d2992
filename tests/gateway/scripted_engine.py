"""A scripted engine on a real socket, for the tests of what the gateway does with what an engine sends back
(test_fuzz_requests, test_engine_answers): the engines themselves cannot misbehave on demand. Each request
may carry, in `fuzz_reply`, the raw bytes it is to be answered with; its `engine` fixture is in conftest."""

from __future__ import annotations

import asyncio
import base64
import json
import threading

from appliance.gateway.proxy import MAX_EVENT_BYTES

__all__ = ["ScriptedEngine", "sse"]


def _http(status: int, body: bytes, content_type: bytes = b"application/json", extra: bytes = b"") -> bytes:
    head = b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n" % (
        status,
        content_type,
        len(body),
        extra,
    )
    return head + body


def _chunked(events: list[bytes]) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


def sse(data: object, event: str = "") -> bytes:
    return (f"event: {event}\n".encode() if event else b"") + b"data: " + json.dumps(data).encode() + b"\n\n"


def _good_reply(path: str, stream: bool) -> bytes:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    if path == "/v1/messages":
        if not stream:
            return _http(
                200, json.dumps({"type": "message", "model": "fixture-model", "content": [], "usage": {}}).encode()
            )
        start = {"type": "message_start", "message": {"model": "fixture-model", "usage": {"input_tokens": 3}}}
        return _chunked([sse(start, "message_start"), sse({"type": "message_stop"}, "message_stop")])
    if path == "/v1/embeddings":
        return _http(200, json.dumps({"object": "list", "data": [], "model": "fixture-model", "usage": usage}).encode())
    kind = "chat.completion" if path == "/v1/chat/completions" else "text_completion"
    if not stream:
        return _http(
            200, json.dumps({"object": kind, "model": "fixture-model", "choices": [], "usage": usage}).encode()
        )
    chunk = {"object": kind + ".chunk", "model": "fixture-model", "choices": [{"index": 0, "text": "a"}]}
    return _chunked([sse(chunk), sse({"object": kind, "choices": [], "usage": usage}), b"data: [DONE]\n\n"])


def _no_constant(name: str) -> None:
    raise ValueError(name)


class ScriptedEngine:
    """An engine on a real socket, in a thread of its own: it answers with the request's `fuzz_reply`
    (base64 pieces, written with a pause between them) or else a well-formed answer, and notes every body
    the gateway sent that is not strict JSON (NaN, Infinity, half a surrogate pair), and counts the replies
    it could not finish writing because the gateway closed the connection (`cut_off`)."""

    def __init__(self) -> None:
        self.not_strict: list[bytes] = []
        self.cut_off = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ScriptedEngine:
        self.thread.start()
        start = asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(10)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            self.server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                path = head.split(" ", 2)[1]
                length = next(int(h[15:]) for h in head.lower().split("\r\n") if h.startswith("content-length:"))
                raw = await reader.readexactly(length)
                try:
                    body = json.loads(raw, parse_constant=_no_constant)
                    json.dumps(body, ensure_ascii=False).encode("utf-8")
                except (ValueError, UnicodeEncodeError):
                    self.not_strict.append(raw)
                    writer.write(_http(400, b'{"error": {"message": "not JSON"}}', extra=b"connection: close\r\n"))
                    return
                fill = b"a" * (MAX_EVENT_BYTES + 1)
                pieces = [base64.b64decode(p).replace(b"@FILL@", fill) for p in body.get("fuzz_reply", [])]
                try:
                    for i, piece in enumerate(pieces or [_good_reply(path, bool(body.get("stream")))]):
                        if i:
                            await asyncio.sleep(0.01)
                        writer.write(piece)
                        await writer.drain()
                except ConnectionError:
                    self.cut_off += 1  # the gateway closed the connection before the reply was written
                    raise
                if pieces:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, StopIteration):
            pass
        finally:
            writer.close()
