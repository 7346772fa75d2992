"""Retention purges whole sealed segments older than the policy; the rest of the chain still verifies."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone

from appliance.auditchain import ChainVerifier, load_public_key
from appliance.auditexport import read_export
from appliance.policies import PolicyError, load_policy
from mgmt.audit.models import AuditEvent, AuditSeal
from mgmt.audit.retention import purge_expired
from mgmt.audit.seal import seal_pending
from mgmt.audit.services import record_event
from mgmt.audit.verify import export_trail, verify_database


def _old_events(n: int, years: float) -> None:
    """Events as they would have been recorded years ago (test data: created with a past timestamp)."""
    ts = timezone.now() - timedelta(days=365 * years)
    AuditEvent.objects.bulk_create(
        [AuditEvent(ts=ts + timedelta(seconds=i), action="test.old", data={"n": i}) for i in range(n)]
    )


def test_default_policy_keeps_audit_events_six_years(settings):
    policy = load_policy(settings.POLICY_DIR, "retention")
    assert policy["audit_events_days"] == 2192
    assert policy["content_retention"] is False


def test_a_malformed_policy_is_refused_with_its_location(tmp_path):
    (tmp_path / "schemas").mkdir()
    from pathlib import Path

    source = Path(__file__).resolve().parents[2] / "policies"
    (tmp_path / "schemas" / "retention.schema.json").write_text(
        (source / "schemas" / "retention.schema.json").read_text()
    )
    (tmp_path / "retention.yaml").write_text(
        "version: 1\naudit_events_days: ten\nchat_history_days: 30\ncontent_retention: false\n"
    )
    with pytest.raises(PolicyError, match="audit_events_days") as caught:
        load_policy(tmp_path, "retention")
    assert caught.value.code == "policy.invalid"


@pytest.mark.django_db
def test_purge_removes_expired_segments_and_the_chain_still_verifies():
    _old_events(40, years=7)
    seal_pending(grace_seconds=0)  # checkpoint 1: all seven years old
    _old_events(30, years=6.5)
    seal_pending(grace_seconds=0)  # checkpoint 2: older than six years too
    for i in range(25):
        record_event("test.recent", data={"n": i})
    seal_pending(grace_seconds=0)  # checkpoint 3: recent

    result = purge_expired()
    assert (result.events, result.through_seq) == (70, 70)
    assert not AuditEvent.objects.filter(action="test.old").exists()
    assert AuditSeal.objects.order_by("seq").first().seq == 71
    purge_event = AuditEvent.objects.get(action="audit.retention_purge")
    assert purge_event.data["through_seq"] == 70 and purge_event.data["events"] == 70

    seal_pending(grace_seconds=0)
    report = verify_database()
    assert report.intact, report.findings
    assert report.events == 26  # 25 recent + the purge event itself
    assert purge_expired().events == 0  # idempotent


@pytest.mark.django_db
def test_purge_stops_at_a_checkpoint_before_any_event_still_in_retention():
    _old_events(10, years=7)
    for i in range(5):
        record_event("test.recent", data={"n": i})
    seal_pending(grace_seconds=0)  # one checkpoint covers old and recent events: nothing can go
    assert purge_expired().events == 0
    assert AuditEvent.objects.filter(action="test.old").count() == 10


@pytest.mark.django_db
def test_removing_the_head_outside_a_purge_is_caught():
    for i in range(10):
        record_event("test.event", data={"n": i})
    seal_pending(grace_seconds=0)
    for i in range(10):
        record_event("test.event", data={"n": i})
    seal_pending(grace_seconds=0)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute("DELETE FROM audit_event WHERE id IN (SELECT event_id FROM audit_seal WHERE seq <= 3)")
            cursor.execute("DELETE FROM audit_seal WHERE seq <= 3")
        report = verify_database()
        assert report.first_bad is not None and report.first_bad.code == "audit.head_missing"
        assert report.first_bad.seq == 4
        transaction.set_rollback(True)


def test_an_export_right_after_a_purge_of_everything_verifies_complete(committed_db, tmp_path: Path):
    """The purge's own event is not sealed yet when the export starts (the sealer runs every few seconds):
    the export seals it first, so the trail it writes ends under a signed checkpoint. Before, such an export
    held no rows but the purged chain's checkpoints and was reported as rows missing."""
    assert not connection.in_atomic_block  # as `enclavectl audit export` runs
    _old_events(12, years=7)
    seal_pending(grace_seconds=0)
    assert purge_expired().events == 12
    assert not AuditSeal.objects.exists()  # the chain is empty; only its checkpoint is left

    export = tmp_path / "audit-export"
    counts = export_trail(export)
    checkpoints, rows = read_export(export)
    report = ChainVerifier(load_public_key(export / "public-key.pem"), checkpoints).verify(rows, complete=True)
    assert report.intact, report.findings
    assert counts == (1, 2)  # the purge event, sealed by the export under a new checkpoint
    assert report.events == 1 and len(checkpoints) == 2 and report.last_checkpoint.seq == 13
