"""Durable audit events for gateway requests, written with group commit.

Each request hands its event to `write()` and waits. One task drains whatever has queued up since the last
commit and writes it with one statement in autocommit (one round trip, one implicit transaction: the batch
travels as one JSON array that PostgreSQL turns into rows, so every batch size shares one prepared
statement and the client serialises it in one call), then wakes the waiters. Under load many requests
share a commit; alone, a request pays one commit. If the write fails, every waiter of that batch gets
AuditUnavailable and the gateway answers 503 instead of serving unaudited.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from . import metrics

__all__ = ["AuditRow", "AuditUnavailable", "AuditWriter"]

log = logging.getLogger(__name__)

COLUMNS = "ts, actor_id, actor, department, action, outcome, target_type, target_id, ip, data"
# The whole batch is one JSON array parameter that PostgreSQL turns into rows of audit_event's own type.
INSERT_SQL = (
    f"INSERT INTO audit_event ({COLUMNS})"  # noqa: S608 (a constant: no input reaches the SQL text)
    f" SELECT {COLUMNS} FROM json_populate_recordset(NULL::audit_event, %s::json)"
)


def _text(value: str, limit: int) -> str:
    # PostgreSQL refuses NUL in text and jsonb, and half of a surrogate pair in json; one such value would
    # fail the whole batch it shares. (isascii() reads a flag: the usual value costs nothing more.)
    value = value[:limit].replace("\x00", "\ufffd")
    return value if value.isascii() else value.encode("utf-8", "replace").decode("utf-8")


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _text(v, 1024) if isinstance(v, str) else v for k, v in data.items()}


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

    def record(self) -> dict[str, Any]:
        """The row as audit_event's columns (lengths cut to the columns' limits)."""
        return {
            "ts": self.ts.isoformat(),
            "actor_id": self.actor_id,
            "actor": _text(self.actor, 150),
            "department": _text(self.department, 100),
            "action": self.action,
            "outcome": self.outcome,
            "target_type": _text(self.target_type, 64),
            "target_id": _text(self.target_id, 128),
            "ip": _text(self.ip, 45),
            "data": _clean(self.data),
        }


def batch_json(rows: list[AuditRow]) -> str:
    """The batch as INSERT_SQL's one parameter."""
    return json.dumps([row.record() for row in rows], separators=(",", ":"))


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

    async def _first_connection(self) -> psycopg.AsyncConnection[Any] | None:
        """Connect before the first event, so that no request waits for a connection to be made (under
        load a connect can take seconds); if PostgreSQL is not there yet, the first batch connects."""
        try:
            return await self._connect()
        except (psycopg.Error, OSError) as exc:
            log.error("gateway: audit connection not made at start (retried with the first event): %s", exc)
            return None

    async def _run(self) -> None:
        conn = await self._first_connection()
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
                await conn.execute(INSERT_SQL, (batch_json([row for row, _f in batch]),))
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
