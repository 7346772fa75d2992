"""The gateway's in-memory view of keys, departments, deployments and routes.

Loaded from PostgreSQL with plain SQL (no ORM on the hot path) and swapped atomically; reloaded when the
console publishes on the invalidation channel (mgmt/routing/invalidation.py) and on a timer as a net.
The SQL names the console's tables: mgmt/accounts/models.py and mgmt/routing/models.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import redis.asyncio as aioredis

__all__ = [
    "INVALIDATION_CHANNEL",
    "Department",
    "Deployment",
    "KeyEntry",
    "Route",
    "Snapshot",
    "SnapshotKeeper",
    "Target",
    "invalidation_channel",
    "load_snapshot",
]

INVALIDATION_CHANNEL = "enclave:gateway:invalidate"


def invalidation_channel(database_url: str) -> str:
    """The pub/sub channel for one appliance database. Redis pub/sub ignores the DB number, so two appliances
    (or two test runs) sharing a Redis must not hear each other: the channel is named after the database."""
    database = database_url.rsplit("/", 1)[-1].split("?", 1)[0]
    return f"{INVALIDATION_CHANNEL}:{database}"


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Department:
    id: int
    name: str
    slug: str
    weight: int


@dataclass(frozen=True, slots=True)
class KeyEntry:
    key_id: int
    prefix: str
    user_id: int
    username: str
    user_active: bool
    department: Department
    expires_at: float | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class Deployment:
    id: int
    name: str
    kind: str
    endpoint: str
    max_context: int
    max_concurrency: int
    healthy: bool
    enabled: bool
    model: str
    served_name: str
    task: str


@dataclass(frozen=True, slots=True)
class Target:
    deployment: Deployment
    priority: int
    weight: int


@dataclass(frozen=True, slots=True)
class Route:
    id: int
    department_id: int
    alias: str
    thinking: str
    targets: tuple[Target, ...]
    task: str


@dataclass(frozen=True)
class Snapshot:
    keys: dict[str, KeyEntry]
    departments: dict[int, Department]
    deployments: dict[int, Deployment]
    routes: dict[tuple[int, str], Route]
    all_aliases: frozenset[str]
    loaded_at: float = field(default_factory=time.time)

    def routes_for(self, department_id: int) -> list[Route]:
        return sorted((r for (dep, _alias), r in self.routes.items() if dep == department_id), key=lambda r: r.alias)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


async def load_snapshot(conn: psycopg.AsyncConnection[Any]) -> Snapshot:
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        await cur.execute("SELECT id, name, slug, weight FROM accounts_department")
        departments = {row[0]: Department(row[0], row[1], row[2], max(1, row[3])) for row in await cur.fetchall()}
        await cur.execute(
            "SELECT k.id, k.digest, k.prefix, k.expires_at, k.revoked_at, k.department_id,"
            " u.id, u.username, u.is_active"
            " FROM accounts_apikey k JOIN accounts_user u ON u.id = k.user_id"
        )
        keys: dict[str, KeyEntry] = {}
        for kid, digest, prefix, expires, revoked, dep_id, uid, username, active in await cur.fetchall():
            department = departments.get(dep_id)
            if department is None:
                continue
            keys[digest] = KeyEntry(
                kid, prefix, uid, username, bool(active), department, _epoch(expires), revoked is not None
            )
        await cur.execute(
            "SELECT d.id, d.name, d.kind, d.endpoint, d.max_context, d.max_concurrency, d.healthy, d.enabled,"
            " m.name, m.served_name, m.task"
            " FROM routing_deployment d JOIN routing_model m ON m.id = d.model_id"
        )
        deployments = {row[0]: Deployment(*row) for row in await cur.fetchall()}
        await cur.execute("SELECT id, department_id, alias, thinking FROM routing_route")
        route_rows = await cur.fetchall()
        await cur.execute(
            "SELECT route_id, deployment_id, priority, weight FROM routing_routetarget ORDER BY route_id, priority, id"
        )
        targets: dict[int, list[Target]] = {}
        for route_id, dep_id, priority, weight in await cur.fetchall():
            deployment = deployments.get(dep_id)
            if deployment is not None:
                targets.setdefault(route_id, []).append(Target(deployment, priority, max(1, weight)))
    routes: dict[tuple[int, str], Route] = {}
    for rid, dep_id, alias, thinking in route_rows:
        route_targets = tuple(targets.get(rid, ()))
        task = route_targets[0].deployment.task if route_targets else "chat"
        routes[(dep_id, alias)] = Route(rid, dep_id, alias, thinking, route_targets, task)
    return Snapshot(
        keys=keys,
        departments=departments,
        deployments=deployments,
        routes=routes,
        all_aliases=frozenset(alias for _dep, alias in routes),
    )


class SnapshotKeeper:
    """Holds the current Snapshot; reloads it on a pub/sub message (within a second) or on a timer."""

    def __init__(
        self,
        database_url: str,
        redis_url: str,
        reload_seconds: float,
        on_reload: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.reload_seconds = reload_seconds
        self.current: Snapshot | None = None
        self.reloads = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._on_reload = on_reload

    async def reload(self) -> Snapshot:
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, connect_timeout=3, application_name="enclave-gateway-snapshot"
        ) as conn:
            snapshot = await load_snapshot(conn)
        self.current = snapshot
        self.reloads += 1
        if self._on_reload is not None:
            self._on_reload(snapshot)
        return snapshot

    async def start(self) -> None:
        try:
            await self.reload()
        except psycopg.Error:
            log.exception("gateway: first snapshot load failed; retrying in the background")
        self._tasks = [
            asyncio.create_task(self._reload_loop(), name="snapshot-reload"),
            asyncio.create_task(self._listen_loop(), name="snapshot-listen"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _reload_loop(self) -> None:
        delay = 0.2
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.reload_seconds)
            self._wake.clear()
            try:
                await self.reload()
                delay = 0.2
            except (psycopg.Error, OSError):
                log.exception("gateway: snapshot reload failed; keeping the previous one")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._wake.set()

    async def _listen_loop(self) -> None:
        delay = 0.2
        while True:
            client = aioredis.Redis.from_url(self.redis_url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(invalidation_channel(self.database_url))
                    # Anything may have changed while we were not subscribed.
                    self._wake.set()
                    delay = 0.2
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._wake.set()
            except (aioredis.RedisError, OSError):
                log.warning("gateway: invalidation channel lost; resubscribing", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                await client.aclose()
