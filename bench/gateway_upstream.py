"""A minimal OpenAI-shaped HTTP server: the benchmark's "fast upstream" and the gateway tests' stand-in
engine where a real one cannot misbehave on demand (named as such: it is not vLLM).

It answers /v1/models, /v1/chat/completions (unary and SSE), /v1/completions and /v1/embeddings with fixed
text, as fast as asyncio allows, so that a proxy in front of it is what a benchmark measures.
Misbehaviour for tests, chosen on the command line: --fail-status, --garbage, --die-after-chunks,
--delay, --chunk-delay, --max-model-len, --echo (returns the request body and headers it received),
--set-cookie (every answer sets a cookie, as a web server in front of an engine might).

    python bench/gateway_upstream.py --port 0 --port-file /tmp/port
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from typing import Any

WORDS = [f" w{i}" for i in range(64)]


class Behaviour:
    def __init__(self, args: argparse.Namespace) -> None:
        self.fail_status: int = args.fail_status
        self.garbage: bool = args.garbage
        self.die_after: int = args.die_after_chunks
        self.delay: float = args.delay
        self.chunk_delay: float = args.chunk_delay
        self.chunks: int = args.chunks
        self.max_model_len: int = args.max_model_len
        self.echo: bool = args.echo
        self.set_cookie: bool = args.set_cookie
        self.name: str = args.name
        self.served = 0


def _response(status: int, body: bytes, content_type: bytes = b"application/json", extra: bytes = b"") -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Error")
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n"
        % (status, reason, content_type, len(body), extra)
    ) + body


def _error(status: int, message: str, code: str = "BadRequestError") -> bytes:
    body = {"object": "error", "message": message, "type": code, "param": None, "code": status}
    return _response(status, json.dumps(body).encode())


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _prompt_tokens(body: dict[str, Any]) -> int:
    # A byte-level stand-in for a tokenizer: one token per byte of text, like the fixture model's.
    text = body.get("messages") or body.get("prompt") or body.get("input") or ""
    return max(1, len(json.dumps(text)) - 2)


class Upstream(asyncio.Protocol):
    def __init__(self, behaviour: Behaviour) -> None:
        self.b = behaviour
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.headers: dict[str, str] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end].decode("latin-1")
        lines = head.split("\r\n")
        method, path, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _sep, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(self.buffer) < head_end + 4 + length:
            return
        body = self.buffer[head_end + 4 : head_end + 4 + length]
        self.buffer = self.buffer[head_end + 4 + length :]
        self.busy = True
        self.headers = headers
        asyncio.get_running_loop().create_task(self._handle(method, path, body))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def _handle(self, method: str, path: str, raw: bytes) -> None:
        try:
            await self._serve(method, path, raw)
        finally:
            self.busy = False
            if self.buffer:
                self._next()

    async def _serve(self, method: str, path: str, raw: bytes) -> None:
        b = self.b
        b.served += 1
        if path == "/health":
            self._write(_response(200, b""))
            return
        if path == "/v1/models":
            data = {
                "object": "list",
                "data": [{"id": b.name, "object": "model", "max_model_len": b.max_model_len}],
            }
            self._write(_response(200, json.dumps(data).encode()))
            return
        if b.delay:
            await asyncio.sleep(b.delay)
        if b.fail_status:
            self._write(_error(b.fail_status, "upstream failure on purpose", "InternalServerError"))
            return
        if b.garbage:
            self._write(_response(200, b"<html>this is not json", b"text/html"))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._write(_error(400, "bad json"))
            return
        prompt = _prompt_tokens(body)
        max_tokens = body.get("max_tokens") or 16
        if prompt + max_tokens > b.max_model_len:
            self._write(
                _error(
                    400,
                    f"This model's maximum context length is {b.max_model_len} tokens. "
                    f"However, you requested {prompt + max_tokens} tokens "
                    f"({prompt} in the messages, {max_tokens} in the completion).",
                )
            )
            return
        now = int(time.time())
        if path == "/v1/embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4]} for i in range(len(inputs))]
            out = {"object": "list", "data": data, "model": body.get("model"), "usage": _usage(prompt, 0)}
            self._write(_response(200, json.dumps(out).encode()))
            return
        chat = path == "/v1/chat/completions"
        if body.get("stream"):
            await self._stream(body, chat, prompt, now)
            return
        text = "".join(WORDS[: b.chunks])
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
            if chat
            else {"index": 0, "text": text, "finish_reason": "length"}
        )
        out = {
            "id": f"cmpl-{b.served}",
            "object": "chat.completion" if chat else "text_completion",
            "created": now,
            "model": body.get("model"),
            "choices": [choice],
            "usage": _usage(prompt, b.chunks),
        }
        if b.echo:
            out["enclave_test_echo"] = body
            out["enclave_test_headers"] = self.headers
        self._write(_response(200, json.dumps(out).encode(), extra=self._cookie()))

    async def _stream(self, body: dict[str, Any], chat: bool, prompt: int, now: int) -> None:
        b = self.b
        self._write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n%s\r\n"
            % self._cookie()
        )
        kind = "chat.completion.chunk" if chat else "text_completion"
        for i in range(b.chunks):
            if b.die_after and i == b.die_after:
                if self.transport is not None:
                    self.transport.abort()  # the engine process dies mid-answer
                return
            delta = {"content": WORDS[i % len(WORDS)]} if chat else None
            choice = {"index": 0, "delta": delta, "finish_reason": None} if chat else {"index": 0, "text": WORDS[i]}
            event = {
                "id": f"cmpl-{b.served}",
                "object": kind,
                "created": now,
                "model": body.get("model"),
                "choices": [choice],
            }
            if b.echo and i == 0:
                event["enclave_test_echo"] = body
                event["enclave_test_headers"] = self.headers
            self._chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
            if b.chunk_delay:
                await asyncio.sleep(b.chunk_delay)
            if self.transport is None or self.transport.is_closing():
                print(f"stream cancelled by the client after {i + 1} chunks", flush=True)
                return
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": f"cmpl-{b.served}",
                "object": kind,
                "created": now,
                "model": body.get("model"),
                "choices": [],
                "usage": _usage(prompt, b.chunks),
            }
            self._chunk(b"data: " + json.dumps(usage).encode() + b"\n\n")
        self._chunk(b"data: [DONE]\n\n")
        self._write(b"0\r\n\r\n")

    def _cookie(self) -> bytes:
        if not self.b.set_cookie:
            return b""
        return b"set-cookie: engine_session=answer-%d; Path=/\r\n" % self.b.served

    def _chunk(self, data: bytes) -> None:
        self._write(b"%x\r\n%s\r\n" % (len(data), data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--name", default="fixture-model")
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=0)
    parser.add_argument("--garbage", action="store_true")
    parser.add_argument("--die-after-chunks", type=int, default=0)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--echo", action="store_true")
    parser.add_argument("--set-cookie", action="store_true")
    args = parser.parse_args()
    behaviour = Behaviour(args)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Upstream(behaviour), args.host, args.port, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        if args.port_file:
            tmp = f"{args.port_file}.tmp"
            with open(tmp, "w") as handle:
                handle.write(str(port))
            os.replace(tmp, args.port_file)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
