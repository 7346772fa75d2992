"""Audit retention: purge whole sealed segments older than the policy allows.

The purge stops at a signed checkpoint, so the remaining chain starts from a signed hash and still
verifies; the purge itself is an audit event naming the checkpoint it stopped at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from appliance.auditchain import format_ts
from appliance.policies import load_policy

from .models import AuditCheckpoint, AuditSeal
from .services import record_event

__all__ = ["PurgeResult", "purge_expired"]


@dataclass(frozen=True)
class PurgeResult:
    events: int
    through_seq: int


def _allow_purge() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enclave.audit_retention = 'purge'")
        else:
            cursor.execute("INSERT INTO audit_retention_permit (id) VALUES (1)")


def _end_purge() -> None:
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_retention_permit")


def purge_expired(*, days: int | None = None) -> PurgeResult:
    if days is None:
        days = int(load_policy(settings.POLICY_DIR, "retention")["audit_events_days"])
    cutoff = timezone.now() - timedelta(days=days)
    with transaction.atomic():
        first = AuditSeal.objects.order_by("seq").values_list("seq", flat=True).first()
        if first is None:
            return PurgeResult(0, 0)
        # The first sealed event still inside the retention period; purge stops at a checkpoint before it.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT min(s.seq) FROM audit_seal s JOIN audit_event e ON e.id = s.event_id WHERE e.ts >= %s",
                [cutoff],
            )
            keep_from = cursor.fetchone()[0]
        candidates = AuditCheckpoint.objects.filter(seq__gte=first)
        if keep_from is not None:
            candidates = candidates.filter(seq__lt=keep_from)
        checkpoint = candidates.order_by("-seq").first()
        if checkpoint is None:
            return PurgeResult(0, 0)
        seals = AuditSeal.objects.filter(seq__lte=checkpoint.seq)
        _allow_purge()
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM audit_event WHERE id IN (SELECT event_id FROM audit_seal WHERE seq <= %s)",
                [checkpoint.seq],
            )
            purged = cursor.rowcount
        seals.delete()
        _end_purge()
        record_event(
            "audit.retention_purge",
            data={
                "through_seq": checkpoint.seq,
                "checkpoint_hash": checkpoint.hash,
                "events": purged,
                "retention_days": days,
                "cutoff": format_ts(cutoff),
            },
        )
        return PurgeResult(purged, checkpoint.seq)
