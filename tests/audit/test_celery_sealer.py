"""The sealer under a real Celery worker and the real beat schedule, against the test database."""

from __future__ import annotations

import pytest

from mgmt.audit.models import AuditSeal
from mgmt.audit.services import record_event
from mgmt.audit.tasks import seal
from mgmt.audit.verify import verify_database
from tests.fixtures.processes import wait_for


@pytest.mark.slow
def test_beat_seals_new_events_without_being_asked(celery_worker_process):
    celery_worker_process(beat=True, seal_seconds=1)
    for i in range(25):
        record_event("test.event", data={"n": i})
    wait_for(lambda: AuditSeal.objects.count() == 25, timeout=90, what="beat to seal 25 events")
    report = verify_database()
    assert report.intact and report.events == 25 and report.last_checkpoint is not None


@pytest.mark.slow
def test_a_seal_queued_while_the_worker_is_dead_runs_when_a_worker_returns(celery_worker_process):
    worker = celery_worker_process(beat=False)
    worker.kill()  # SIGKILL: no clean shutdown
    for i in range(7):
        record_event("test.event", data={"n": i})
    seal.delay()  # sits in Redis until a worker takes it
    assert AuditSeal.objects.count() == 0
    celery_worker_process(beat=False)
    wait_for(lambda: AuditSeal.objects.count() == 7, timeout=90, what="the queued seal task to run")
    assert verify_database().intact
