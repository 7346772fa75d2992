"""The benchmark's floor: the gateway's stack with none of the gateway in it.

An ASGI app served by the same gunicorn ASGI worker, forwarding each request's body unchanged to one
upstream (BENCH_FLOOR_UPSTREAM) with an aiohttp session configured as the gateway's, and passing the answer
back as it comes (a stream chunk by chunk). No key, no route, no fair queue, no audit, no metrics: what it
adds over calling the upstream directly is what the server, the client library and the extra hop cost on
this host before the gateway does any work of its own.

    gunicorn --worker-class asgi bench.gateway_floor:app
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

UPSTREAM = os.environ.get("BENCH_FLOOR_UPSTREAM", "http://127.0.0.1:8000")
_session: aiohttp.ClientSession | None = None


async def _lifespan(receive: Receive, send: Send) -> None:
    global _session
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                auto_decompress=False,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept-Encoding",),
            )
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    assert _session is not None
    async with _session.request(
        scope["method"], UPSTREAM + scope["path"], data=b"".join(parts), headers={"Content-Type": "application/json"}
    ) as response:
        content_type = response.headers.get("Content-Type", "application/json").encode()
        if content_type.startswith(b"text/event-stream"):
            await send(
                {"type": "http.response.start", "status": response.status, "headers": [(b"content-type", content_type)]}
            )
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        body = await response.read()
    head = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": response.status, "headers": head})
    await send({"type": "http.response.body", "body": body})
