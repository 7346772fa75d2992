"""Durable audit events for gateway requests, written with group commit.

Each request hands its event to `write()` and waits. One task drains whatever has queued up since the last
commit and writes it in one transaction (one round trip: psycopg's pipelined executemany), then wakes the
waiters. Under load many requests share a commit; alone, a request pays one commit. If the write fails,
every waiter of that batch gets AuditUnavailable and the gateway answers 503 instead of serving unaudited.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from . import metrics

__all__ = ["AuditRow", "AuditUnavailable", "AuditWriter"]

log = logging.getLogger(__name__)

INSERT_SQL = (
    "INSERT INTO audit_event"
    " (ts, actor_id, actor, department, action, outcome, target_type, target_id, ip, data)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


class AuditUnavailable(Exception):
    pass


@dataclass(slots=True)
class AuditRow:
    action: str
    outcome: str
    actor_id: int | None = None
    actor: str = ""
    department: str = ""
    target_type: str = ""
    target_id: str = ""
    ip: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))

    def params(self) -> tuple[Any, ...]:
        return (
            self.ts,
            self.actor_id,
            self.actor[:150],
            self.department[:100],
            self.action,
            self.outcome,
            self.target_type[:64],
            self.target_id[:128],
            self.ip[:45],
            Jsonb(self.data),
        )


class AuditWriter:
    def __init__(self, database_url: str, batch_max: int = 512, connections: int = 2) -> None:
        self.database_url = database_url
        self.batch_max = batch_max
        self.connections = connections
        self._queue: asyncio.Queue[tuple[AuditRow, asyncio.Future[None]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._conns: list[psycopg.AsyncConnection[Any]] = []
        self.batches = 0
        self.failures = 0
        self.last_batch_size = 0
        self.healthy = True

    async def start(self) -> None:
        # Two committers: events that arrive while one batch is being flushed go out with the other
        # at once instead of waiting for that flush to finish.
        self._tasks = [asyncio.create_task(self._run(), name=f"audit-writer-{i}") for i in range(self.connections)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in self._conns:
            await conn.close()

    async def write(self, row: AuditRow) -> None:
        """Return once `row` is committed; raise AuditUnavailable if it could not be."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((row, future))
        # A cancelled caller (client gone) must not cancel the write that others share.
        await asyncio.shield(future)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, connect_timeout=3, application_name="enclave-gateway-audit"
        )
        self._conns.append(conn)
        return conn

    async def _run(self) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_max:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            error: BaseException | None = None
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = await self._connect()
                async with conn.transaction(), conn.cursor() as cur:
                    await cur.executemany(INSERT_SQL, [row.params() for row, _f in batch])
                self.healthy = True
            except (psycopg.Error, OSError) as exc:
                error = exc
                self.failures += 1
                self.healthy = False
                log.error("gateway: audit write of %d events failed: %s", len(batch), exc)
                if conn is not None:
                    await conn.close()
                    self._conns.remove(conn)
                    conn = None
            self.batches += 1
            self.last_batch_size = len(batch)
            metrics.AUDIT_BATCH.observe(len(batch))
            for _row, future in batch:
                if future.done():
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(AuditUnavailable(str(error)))
