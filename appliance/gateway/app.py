"""The gateway's ASGI application: auth, routing, fair queuing, forwarding, audit, metrics.

Plain ASGI (no framework): the hot path is a dictionary lookup for the key, one for the route, a slot
from the deployment's fair queue, the upstream call and a group-committed audit event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import psycopg

from appliance.engines import ADAPTERS, PriorityCapability

from . import metrics
from .audit_writer import AuditRow, AuditUnavailable, AuditWriter
from .auth import authenticate, key_prefix, resolve_route
from .config import GatewayConfig
from .errors import GatewayError
from .fair_queue import FairLimiter, QueueFull, QueueTimeout
from .faults import failing_after
from .payload import ENDPOINTS, Endpoint, check_deployment, parse_request, upstream_body
from .proxy import JSON_HEADERS, BeforeFirstByte, Call, ModelRename, Rename, forward_stream, forward_unary
from .session_auth import CONSOLE_HEADER, SessionAuth, console_secret_key
from .snapshot import Deployment, KeyEntry, Route, Snapshot, SnapshotKeeper

__all__ = ["Gateway", "create_app"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
log = logging.getLogger(__name__)
# Fair-queue lag (in requests of weight 1) to an engine's integer priority, for the kinds that take one.
PRIORITY_SCALE = 1000
# Allocations (net of frees) of container objects before the cyclic collector runs; CPython's default is 700.
GC_YOUNG_THRESHOLD = 10_000
PRIORITY_KINDS = frozenset(k.value for k, a in ADAPTERS.items() if a.priority is PriorityCapability.REQUEST_FIELD)


class ClientGone(Exception):
    pass


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.keeper = SnapshotKeeper(
            config.database_url, config.redis_url, config.reload_seconds, on_reload=self._on_reload
        )
        self.audit = AuditWriter(config.database_url, config.audit_batch_max)
        self.sessions = SessionAuth(config.database_url, console_secret_key(), config.session_cache_seconds)
        self.client: aiohttp.ClientSession | None = None
        self.limiters: dict[int, FairLimiter] = {}
        self.down_until: dict[int, float] = {}
        self.clock = time.monotonic

    # -- lifecycle ---------------------------------------------------------------------------------
    async def startup(self) -> None:
        self.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.config.connect_timeout_seconds,
                sock_read=self.config.read_timeout_seconds,
            ),
            auto_decompress=False,
            trust_env=False,
            # An engine's cookies are never stored or sent back: one jar would be shared by every
            # department's requests. Bytes pass through as they come, so the engine is not asked to
            # compress them.
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept-Encoding",),
            headers={"User-Agent": "enclave-gateway"},
        )
        await self.audit.start()
        await self.keeper.start()
        # What a request makes is freed by reference counting (measured: the cyclic collector found about
        # 45 objects per thousand requests), so the collector was mostly re-scanning live objects, the
        # imported modules' among them: 10% of a loaded worker's CPU, and pauses of up to 100 ms for its
        # full collections. The objects made so far live as long as the worker: frozen, they are
        # never scanned again; and a collection now waits for 10,000 new containers, not 700 (0350).
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    async def shutdown(self) -> None:
        await self.keeper.stop()
        await self.audit.stop()
        await self.sessions.close()
        if self.client is not None:
            await self.client.close()

    def _on_reload(self, snapshot: Snapshot) -> None:
        metrics.SNAPSHOT_RELOADS.inc()
        for dep in snapshot.deployments.values():
            limiter = self.limiters.get(dep.id)
            if limiter is not None:
                limiter.resize(self._limit(dep))

    def _limit(self, dep: Deployment) -> int:
        return max(1, math.ceil(dep.max_concurrency / self.config.workers))

    def limiter(self, dep: Deployment) -> FairLimiter:
        limiter = self.limiters.get(dep.id)
        if limiter is None:
            limiter = self.limiters[dep.id] = FairLimiter(self._limit(dep), self.config.max_queue)
        return limiter

    # -- ASGI ----------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        endpoint = ENDPOINTS.get(path)
        if endpoint is not None:
            await self.v1(scope, receive, send, endpoint)
        elif path == "/v1/models":
            await self.v1(scope, receive, send, None)
        elif path == "/healthz":
            await self.healthz(send)
        elif path == "/metrics":
            body, content_type = metrics.render()
            await _respond(send, 200, body, [(b"content-type", content_type.encode())])
        else:
            await self.unknown_endpoint(scope, send)

    async def unknown_endpoint(self, scope: Scope, send: Send) -> None:
        """A path the gateway does not serve is refused like any request, and audited like any refusal (0351);
        it used to be answered unaudited. The metrics name no such path (their labels stay few)."""
        call = Call(endpoint=scope["path"], ip=_client_ip(scope), started=self.clock())
        err = GatewayError(404, "unknown_endpoint", f"There is no endpoint {call.endpoint}.")
        call.status, call.code = err.status, err.code
        try:
            await self.refuse(call, None, _presented_key(_authorization(scope)), err, send)
        finally:
            self.observe(call, None, endpoint="other")

    async def healthz(self, send: Send) -> None:
        snapshot = self.keeper.current
        ok = snapshot is not None and self.audit.healthy
        body = {
            "status": "ok" if ok else "unavailable",
            "snapshot_loaded": snapshot is not None,
            "snapshot_age_seconds": None if snapshot is None else round(time.time() - snapshot.loaded_at, 1),
            "audit_ok": self.audit.healthy,
        }
        await _respond(send, 200 if ok else 503, json.dumps(body).encode())

    # -- /v1 -----------------------------------------------------------------------------------------
    async def v1(self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint | None) -> None:
        call = Call(endpoint=scope["path"], ip=_client_ip(scope), started=self.clock())
        key: KeyEntry | None = None
        presented = ""
        try:
            snapshot = self.keeper.current
            if snapshot is None:
                raise GatewayError(503, "gateway_not_ready", "The gateway is starting; try again shortly.")
            authorization = _authorization(scope)
            presented = _presented_key(authorization)
            if authorization is None and _header(scope, b"cookie") is not None:
                key = await self.session_principal(scope, snapshot)
            else:
                key = authenticate(authorization, snapshot, time.time())
            if endpoint is None:
                if scope["method"] != "GET":
                    raise GatewayError(405, "method_not_allowed", "Use GET for /v1/models.")
                await self.models(snapshot, key, call, send)
                return
            if scope["method"] != "POST":
                raise GatewayError(405, "method_not_allowed", f"Use POST for {endpoint.path}.")
            raw = await _read_body(scope, receive, self.config.max_body_bytes)
            request = parse_request(raw, endpoint)
            call.alias, call.stream = request.alias, request.stream
            route = resolve_route(snapshot, key, request.alias, endpoint)
            await self.guarded(call, receive, self.forward(call, key, route, endpoint, request, send))
        except GatewayError as err:
            call.status, call.code = err.status, err.code
            await self.refuse(call, key, presented, err, send)
        except ClientGone:
            call.status, call.code = 499, "client_disconnected"
            with contextlib.suppress(AuditUnavailable):
                await self.audit.write(self.row(call, key, presented))
        except Exception:
            # A bug or an unexpected failure still gets an audited, OpenAI-shaped answer.
            log.exception("gateway: unexpected failure on %s", call.endpoint)
            call.status, call.code = 500, "internal_error"
            failure = GatewayError(500, "internal_error", "The gateway failed unexpectedly; the failure is logged.")
            with contextlib.suppress(Exception):
                await self.refuse(call, key, presented, failure, send)
        finally:
            self.observe(call, key)

    async def session_principal(self, scope: Scope, snapshot: Snapshot) -> KeyEntry:
        try:
            return await self.sessions.authenticate(_header(scope, b"cookie"), _header(scope, CONSOLE_HEADER), snapshot)
        except (psycopg.Error, OSError):
            raise GatewayError(
                503, "session_store_unavailable", "Console sessions cannot be checked right now; try again."
            ) from None

    async def guarded(self, call: Call, receive: Receive, work: Awaitable[None]) -> None:
        """Run `work` in this task; if the client goes away first, cancel it (which closes the engine request)."""
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        state = {"running": True, "gone": False}

        def client_gone(done: asyncio.Future[None]) -> None:
            # A callback already scheduled when `work` ended must not cancel what this task does next.
            if state["running"] and not done.cancelled():
                state["gone"] = True
                task.cancel()

        watcher.add_done_callback(client_gone)
        try:
            await work
        except asyncio.CancelledError:
            if not state["gone"]:
                raise
            task.uncancel()
            raise ClientGone from None
        finally:
            state["running"] = False
            watcher.cancel()

    async def models(self, snapshot: Snapshot, key: KeyEntry, call: Call, send: Send) -> None:
        data = [
            {"id": r.alias, "object": "model", "created": 0, "owned_by": "enclave", "task": r.task}
            for r in snapshot.routes_for(key.department.id)
        ]
        call.status = 200
        await self._audited(call, key)
        await _respond(send, 200, json.dumps({"object": "list", "data": data}).encode())

    async def forward(
        self, call: Call, key: KeyEntry, route: Route, endpoint: Endpoint, request: Any, send: Send
    ) -> None:
        assert self.client is not None
        candidates = self.order_targets(route)
        if not candidates:
            raise GatewayError(
                503, "no_healthy_deployment", f"No engine serving “{route.alias}” is up; try again shortly."
            )
        department = key.department
        failure: GatewayError | None = None
        for dep in candidates:
            check_deployment(request, route, dep, endpoint)
            limiter = self.limiter(dep)
            metrics.QUEUED.labels(dep.name).inc()
            try:
                lag = await limiter.acquire(department.id, department.weight, self.config.queue_timeout_seconds)
            except QueueFull:
                raise GatewayError(429, "overloaded", "Too many requests are waiting; try again shortly.") from None
            except QueueTimeout:
                raise GatewayError(
                    503, "capacity_timeout", "The engines stayed busy for too long; try again shortly."
                ) from None
            finally:
                metrics.QUEUED.labels(dep.name).dec()
            metrics.IN_FLIGHT.labels(dep.name).inc()
            call.deployment = dep.name
            call.attempts.append(dep.name)
            url = dep.endpoint + endpoint.path
            priority = round(lag * PRIORITY_SCALE) if dep.kind in PRIORITY_KINDS else None
            body = upstream_body(request, route, dep, endpoint, priority)
            rename: Rename = ModelRename(dep.served_name, route.alias)
            try:
                if request.stream:
                    if self.config.test_fault == "stream_pump":  # tests only (faults.py); "" in production
                        rename = failing_after(1, rename)
                    await forward_stream(
                        self.client,
                        url,
                        body,
                        call,
                        send,
                        lambda c: self._audited(c, key, "gateway.stream_open"),
                        lambda c: self._audited(c, key),
                        request.wants_usage,
                        self.clock,
                        rename,
                        self.config.max_answer_bytes,
                    )
                else:
                    audited = functools.partial(self._audited, key=key)
                    await forward_unary(
                        self.client, url, body, call, send, audited, rename, self.config.max_answer_bytes
                    )
                return
            except BeforeFirstByte as exc:
                failure = exc.error
                if exc.connect_failed:
                    self.down_until[dep.id] = self.clock() + self.config.down_seconds
            finally:
                limiter.release()
                metrics.IN_FLIGHT.labels(dep.name).dec()
        assert failure is not None
        raise failure

    def order_targets(self, route: Route) -> list[Deployment]:
        """Healthy targets by priority; within one priority a weighted random order."""
        now = self.clock()
        usable = [
            t
            for t in route.targets
            if t.deployment.enabled and t.deployment.healthy and self.down_until.get(t.deployment.id, 0) <= now
        ]
        ordered: list[Deployment] = []
        for priority in sorted({t.priority for t in usable}):
            group = [t for t in usable if t.priority == priority]
            while group:
                pick = random.choices(group, weights=[t.weight for t in group])[0] if len(group) > 1 else group[0]
                ordered.append(pick.deployment)
                group.remove(pick)
        return ordered

    async def _audited(self, call: Call, key: KeyEntry | None, action: str = "gateway.request") -> None:
        try:
            await self.audit.write(self.row(call, key, "", action=action))
        except AuditUnavailable:
            metrics.AUDIT_FAILURES.inc()
            raise GatewayError(
                503, "audit_unavailable", "The audit trail is unavailable, so the request was not served."
            ) from None

    async def refuse(self, call: Call, key: KeyEntry | None, presented: str, err: GatewayError, send: Send) -> None:
        if call.response_started:
            return
        if err.code != "audit_unavailable":
            try:
                await self.audit.write(self.row(call, key, presented))
            except AuditUnavailable:
                metrics.AUDIT_FAILURES.inc()
                err = GatewayError(503, "audit_unavailable", "The audit trail is unavailable; try again shortly.")
                call.status, call.code = err.status, err.code
        await _respond(send, err.status, err.body())

    def row(self, call: Call, key: KeyEntry | None, presented: str, action: str = "gateway.request") -> AuditRow:
        status = call.status
        outcome = "ok" if 0 < status < 400 else ("error" if status >= 500 or status == 499 else "denied")
        data: dict[str, Any] = {
            "endpoint": call.endpoint,
            "alias": call.alias,
            "deployment": call.deployment,
            "stream": call.stream,
            "status": status,
            "latency_ms": round((self.clock() - call.started) * 1000, 2),
        }
        if action == "gateway.stream_open":
            outcome, data["status"] = "ok", 200
        if call.code:
            data["code"] = call.code
        if len(call.attempts) > 1:
            data["attempts"] = call.attempts
        if call.prompt_tokens is not None:
            data["prompt_tokens"] = call.prompt_tokens
        if call.completion_tokens is not None:
            data["completion_tokens"] = call.completion_tokens
        if call.first_byte_ms is not None and action == "gateway.request":
            data["first_byte_ms"] = round(call.first_byte_ms, 2)
        if key is None:
            prefix = key_prefix(presented)
            if prefix:
                data["key_prefix"] = prefix
            return AuditRow(action, outcome, ip=call.ip, target_type="alias", target_id=call.alias, data=data)
        data["key_prefix"] = key.prefix
        return AuditRow(
            action,
            outcome,
            actor_id=key.user_id,
            actor=key.username,
            department=key.department.name,
            target_type="alias",
            target_id=call.alias,
            ip=call.ip,
            data=data,
        )

    def observe(self, call: Call, key: KeyEntry | None, endpoint: str = "") -> None:
        department = key.department.slug if key is not None else ""
        endpoint = endpoint or call.endpoint
        metrics.REQUESTS.labels(endpoint, str(call.status), call.code, department).inc()
        metrics.REQUEST_SECONDS.labels(endpoint).observe(self.clock() - call.started)
        if key is not None and call.prompt_tokens is not None:
            metrics.TOKENS.labels(department, "prompt").inc(call.prompt_tokens)
        if key is not None and call.completion_tokens is not None:
            metrics.TOKENS.labels(department, "completion").inc(call.completion_tokens)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _authorization(scope: Scope) -> str | None:
    authorization = _header(scope, b"authorization")
    if authorization is None and (api_key := _header(scope, b"x-api-key")) is not None:
        authorization = f"Bearer {api_key}"  # how Anthropic's clients send a key
    return authorization


def _presented_key(authorization: str | None) -> str:
    """The key as presented, for the audit's key prefix of a request that was refused."""
    return (authorization or "").partition(" ")[2].strip()


def _client_ip(scope: Scope) -> str:
    client = scope.get("client")
    peer = client[0] if client else ""
    if peer in ("127.0.0.1", "::1"):
        # nginx on the appliance sets X-Real-IP from the socket; only a loopback peer is trusted with it.
        return _header(scope, b"x-real-ip") or peer
    return str(peer)


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    def too_large() -> GatewayError:
        return GatewayError(
            413, "request_too_large", f"The request body is larger than the gateway accepts ({limit} bytes)."
        )

    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large()
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # The body stopped short: the client left, or sent less than its Content-Length promised and
            # then nothing (gunicorn gives up after its worker timeout, 30 s). The server says both the same
            # way; unanswered, it answered a client still waiting with a plain-text 500.
            raise GatewayError(
                408, "incomplete_body", "The request body stopped before its end; send the whole body again."
            )
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large()
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    head = [*(headers or JSON_HEADERS), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def create_app(config: GatewayConfig | None = None) -> Gateway:
    return Gateway(config or GatewayConfig.from_env())
