"""The sealer: chains newly committed events and signs a checkpoint. Runs under celery beat.

Events are sealed in id order once they are `grace` seconds old, so a transaction still open when the
sealer runs is picked up on a later run (a late, lower id is sealed after higher ones: the chain's order
is the seal order, and verify knows that).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from appliance.auditchain import EVENT_FIELDS, GENESIS, chain_hash, load_or_create_private_key, sign_checkpoint

from .models import AuditCheckpoint, AuditEvent, AuditSeal

__all__ = ["EVENT_VALUE_FIELDS", "SealResult", "seal_pending"]

# Late events are looked for this far below the highest sealed id.
LATE_WINDOW = 10_000
# The chain hashes exactly these columns, in this order.
EVENT_VALUE_FIELDS = EVENT_FIELDS


@dataclass(frozen=True)
class SealResult:
    sealed: int
    last_seq: int
    checkpoint: AuditCheckpoint | None


def _lock() -> None:
    """One sealer at a time (celery beat may overlap a slow run with the next one)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(7201001)")


def _chain_head() -> tuple[int, bytes]:
    last = AuditSeal.objects.order_by("-seq").first()
    if last is not None:
        return last.seq, bytes.fromhex(last.hash)
    checkpoint = AuditCheckpoint.objects.order_by("-seq").first()  # everything sealed was purged
    if checkpoint is not None:
        return checkpoint.seq, bytes.fromhex(checkpoint.hash)
    return 0, GENESIS


def seal_pending(*, grace_seconds: float | None = None, batch: int = 20_000) -> SealResult:
    grace = settings.AUDIT_SEAL_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = timezone.now() - timedelta(seconds=grace)
    with transaction.atomic():
        _lock()
        seq, previous = _chain_head()
        high = AuditSeal.objects.order_by("-event_id").values_list("event_id", flat=True).first() or 0
        # An anti-join (NOT EXISTS), never NOT IN: NOT IN over a large subquery degrades to a nested loop.
        sealed = AuditSeal.objects.filter(event_id=OuterRef("id"))
        pending = (
            AuditEvent.objects.filter(id__gt=high - LATE_WINDOW, ts__lte=cutoff)
            .exclude(Exists(sealed))
            .order_by("id")
            .values_list(*EVENT_VALUE_FIELDS)[:batch]
        )
        seals = []
        last_event_id = 0
        for values in pending:
            seq += 1
            previous = chain_hash(previous, values)
            last_event_id = values[0]
            seals.append(AuditSeal(seq=seq, event_id=last_event_id, hash=previous.hex()))
        if not seals:
            return SealResult(0, seq, None)
        AuditSeal.objects.bulk_create(seals, batch_size=2000)
        key = load_or_create_private_key(settings.AUDIT_KEY_PATH)
        signed = sign_checkpoint(
            key, seq=seq, event_id=last_event_id, hash_hex=previous.hex(), signed_at=timezone.now()
        )
        checkpoint = AuditCheckpoint.objects.create(**signed.as_dict())
        return SealResult(len(seals), seq, checkpoint)
