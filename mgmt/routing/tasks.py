from __future__ import annotations

from celery import shared_task

from .health import probe_deployments


@shared_task(name="routing.probe_deployments", acks_late=True, ignore_result=True)
def probe_deployments_task() -> int:
    """Probe every enabled deployment (idempotent: only changes are written). Returns how many are up."""
    return sum(1 for outcome in probe_deployments() if outcome.healthy)
