"""Celery tasks of the audit trail (scheduled by celery beat, see CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

from celery import shared_task

from .retention import purge_expired
from .seal import seal_pending


@shared_task(name="audit.seal", acks_late=True, max_retries=3, ignore_result=True)
def seal() -> int:
    """Idempotent: sealing twice seals nothing the second time."""
    return seal_pending().sealed


@shared_task(name="audit.retention", acks_late=True, max_retries=3, ignore_result=True)
def retention() -> int:
    return purge_expired().events
