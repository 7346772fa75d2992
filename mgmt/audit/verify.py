"""Verify the audit trail in the database, and export it for verification elsewhere."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef

from appliance.auditchain import (
    EVENT_FIELDS,
    ChainVerifier,
    Checkpoint,
    Finding,
    Report,
    SealedRow,
    format_ts,
    load_or_create_private_key,
)

from .models import AuditCheckpoint, AuditEvent, AuditSeal
from .seal import seal_pending

__all__ = ["export_trail", "iter_sealed_rows", "load_checkpoints", "verify_database"]

# PostgreSQL formats the timestamp itself (exactly as appliance.auditchain.format_ts does): faster than
# formatting a million datetimes in Python.
_TS_SQL = {
    "postgresql": """to_char(e.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')""",
    "sqlite": "e.ts",
}
_SELECT = (
    "SELECT s.seq, s.hash, e.id, {ts}, e.actor_id, e.actor, e.department, e.action, e.outcome, "
    "e.target_type, e.target_id, e.ip, e.data "
    "FROM audit_seal s LEFT JOIN audit_event e ON e.id = s.event_id {where} ORDER BY s.seq"
)


def iter_sealed_rows(first_seq: int | None = None, last_seq: int | None = None) -> Iterator[SealedRow]:
    """Sealed rows in seq order (optionally a range), read through a server-side cursor (constant memory)."""
    json_loads = json.loads
    vendor = connection.vendor
    parse_ts = None
    if vendor == "sqlite":
        from django.utils.dateparse import parse_datetime

        parse_ts = parse_datetime
    where, params = "", []
    if first_seq is not None and last_seq is not None:
        where, params = "WHERE s.seq BETWEEN %s AND %s", [first_seq, last_seq]
    with connection.chunked_cursor() as cursor:
        cursor.execute(_SELECT.format(ts=_TS_SQL[vendor], where=where), params)
        while True:
            chunk = cursor.fetchmany(5000)
            if not chunk:
                break
            for row in chunk:
                if row[2] is None:
                    yield row[0], None, row[1]
                    continue
                values = list(row[2:])
                data = values[10]
                if isinstance(data, str):
                    values[10] = json_loads(data)
                if parse_ts is not None:
                    values[1] = parse_ts(values[1]).replace(tzinfo=UTC)  # type: ignore[union-attr]
                yield row[0], values, row[1]


def load_checkpoints() -> list[Checkpoint]:
    return [
        Checkpoint(cp.seq, cp.event_id, cp.hash, cp.signed_at, cp.key_id, cp.signature)
        for cp in AuditCheckpoint.objects.order_by("seq")
    ]


def _unsealed_findings(report: Report) -> None:
    """Events that should have been sealed by now but are not in the chain: inserted behind our back."""
    if report.last_checkpoint is None:
        return
    checkpoint = report.last_checkpoint
    grace = timedelta(seconds=settings.AUDIT_SEAL_GRACE_SECONDS)
    cutoff = datetime.fromisoformat(checkpoint.signed_at.replace("Z", "+00:00")) - grace
    suspicious = (
        AuditEvent.objects.filter(id__lt=checkpoint.event_id, ts__lt=cutoff)
        .exclude(Exists(AuditSeal.objects.filter(event_id=OuterRef("id"))))
        .order_by("id")
        .values_list("id", flat=True)[:100]
    )
    for event_id in suspicious:
        report.findings.append(
            Finding(
                "audit.event_unsealed",
                None,
                event_id,
                f"event {event_id} is not in the chain although later events are: inserted behind the "
                "application's back",
            )
        )


PARALLEL_MIN_ROWS = 200_000


def _verify_range(bounds: tuple[int, int, str | None]) -> Report:
    """Runs in a worker process (its own database connection): one seq range of the chain."""
    first, last, after_hash = bounds
    connection.close()  # never share the parent's socket
    key = load_or_create_private_key(settings.AUDIT_KEY_PATH)
    verifier = ChainVerifier(key.public_key(), load_checkpoints())
    after = None if after_hash is None else (first - 1, after_hash)
    report = verifier.verify(iter_sealed_rows(first, last), after=after)
    connection.close()
    return report


def _ranges(workers: int) -> list[tuple[int, int, str | None]]:
    from .models import AuditSeal

    seqs = AuditSeal.objects.order_by("seq").values_list("seq", flat=True)
    first, last = seqs.first(), seqs.last()
    if first is None or last is None or workers < 2 or last - first + 1 < PARALLEL_MIN_ROWS:
        return []
    step = (last - first + workers) // workers
    bounds = []
    for start in range(first, last + 1, step):
        end = min(last, start + step - 1)
        before = (
            None if start == first else AuditSeal.objects.filter(seq=start - 1).values_list("hash", flat=True).first()
        )
        if start != first and before is None:
            return []  # a gap exactly at the boundary: let the sequential pass report it
        bounds.append((start, end, before))
    return bounds


def verify_database(*, workers: int | None = None) -> Report:
    """Verify the whole trail. Long trails are checked in seq ranges by parallel worker processes (each
    row is checked against its predecessor's stored seal, so ranges are independent); findings keep
    chain order."""
    key = load_or_create_private_key(settings.AUDIT_KEY_PATH)
    checkpoints = load_checkpoints()
    workers = workers if workers is not None else (os.cpu_count() or 1)
    bounds = _ranges(workers) if connection.vendor == "postgresql" else []
    if bounds:
        import multiprocessing

        connection.close()
        with multiprocessing.get_context("fork").Pool(len(bounds)) as pool:
            parts = pool.map(_verify_range, bounds)
        report = Report()
        for part in parts:
            report.events += part.events
            report.findings.extend(part.findings)
            report.checkpoints_checked += part.checkpoints_checked
            report.last_checkpoint = part.last_checkpoint or report.last_checkpoint
    else:
        report = ChainVerifier(key.public_key(), checkpoints).verify(iter_sealed_rows())
    _unsealed_findings(report)
    return report


def export_trail(directory: Path) -> tuple[int, int]:
    """Write events.jsonl, checkpoints.jsonl and public-key.pem into `directory` (created; must be empty).

    Files are written under temporary names, fsynced and renamed, so a pulled stick leaves no file that
    looks complete but is not. Returns (events, checkpoints).

    Everything committed is sealed first, without the sealer's grace period: an export is verified as the
    whole trail (its last row must be under a signed checkpoint), and it should hold the events of the
    moment it was taken. Without this, an export in the seconds after a retention purge that removed every
    sealed event held no rows but the purged chain's checkpoints, and was reported as rows missing. A
    transaction still open with a lower event id is sealed late by a later run, as the sealer always allows.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty; export into an empty directory")
    seal_pending(grace_seconds=0)
    events = 0
    # Rows and checkpoints from one snapshot: a sealer run committed between the two reads would leave a
    # checkpoint beyond the last exported row, which the offline verifier rightly reports as rows removed.
    outermost = not connection.in_atomic_block  # else the caller's transaction (a test's) is the snapshot
    with transaction.atomic():
        if connection.vendor == "postgresql" and outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with _atomic_text(directory / "events.jsonl") as handle:
            for seq, values, stored in iter_sealed_rows():
                event = None
                if values is not None:
                    event = dict(zip(EVENT_FIELDS, values, strict=True))
                    if isinstance(event["ts"], datetime):
                        event["ts"] = format_ts(event["ts"])
                    events += 1
                handle.write(json.dumps({"seq": seq, "hash": stored, "event": event}, ensure_ascii=False) + "\n")
        checkpoints = load_checkpoints()
    with _atomic_text(directory / "checkpoints.jsonl") as handle:
        for checkpoint in checkpoints:
            handle.write(json.dumps(checkpoint.as_dict()) + "\n")
    public = settings.AUDIT_KEY_PATH.with_name(settings.AUDIT_KEY_PATH.stem + ".pub.pem")
    load_or_create_private_key(settings.AUDIT_KEY_PATH)
    with _atomic_text(directory / "public-key.pem") as handle:
        handle.write(public.read_text(encoding="ascii"))
    return events, len(checkpoints)


class _atomic_text:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name("." + path.name + ".partial")

    def __enter__(self) -> Any:
        self.handle = self.tmp.open("w", encoding="utf-8")
        return self.handle

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
