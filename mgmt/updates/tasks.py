"""Celery entry point: takes a job id, idempotent (the row is claimed with a conditional UPDATE)."""

from __future__ import annotations

from celery import shared_task

from .services import run_job

__all__ = ["run_update_job"]


@shared_task(name="updates.run_job", acks_late=True, max_retries=0)
def run_update_job(job_id: int) -> str:
    return run_job(job_id)
