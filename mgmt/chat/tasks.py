from __future__ import annotations

from celery import shared_task

from .services import do_purge_expired


@shared_task(name="chat.retention", acks_late=True, ignore_result=True)
def chat_retention_task() -> int:
    """Delete expired conversations (idempotent: a second run finds none)."""
    return do_purge_expired()
