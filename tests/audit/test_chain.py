"""The audit chain: sealing, verification, signed checkpoints, export and offline verification."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import DatabaseError, connection, transaction

from appliance.auditchain import ChainVerifier, load_public_key
from appliance.auditexport import read_export
from mgmt.audit.models import AuditCheckpoint, AuditEvent, AuditSeal
from mgmt.audit.seal import seal_pending
from mgmt.audit.services import record_event
from mgmt.audit.verify import export_trail, verify_database

ROOT = Path(__file__).resolve().parents[2]


def _events(n: int, **extra) -> list[AuditEvent]:
    return [record_event("test.event", data={"n": i, "text": "naïve – ü", "ratio": 0.1 * i}, **extra) for i in range(n)]


@pytest.mark.django_db
def test_seal_then_verify_is_intact_and_names_the_checkpoint():
    _events(30)
    result = seal_pending(grace_seconds=0)
    assert result.sealed == 30 and result.last_seq == 30
    assert AuditCheckpoint.objects.count() == 1
    report = verify_database()
    assert report.intact, report.findings
    assert report.events == 30
    assert report.summary().startswith("30 events, chain intact, last checkpoint signed at 20")


@pytest.mark.django_db
def test_sealing_twice_seals_nothing_new_and_continues_the_chain():
    _events(5)
    seal_pending(grace_seconds=0)
    assert seal_pending(grace_seconds=0).sealed == 0
    _events(3)
    second = seal_pending(grace_seconds=0)
    assert (second.sealed, second.last_seq) == (3, 8)
    assert verify_database().intact


@pytest.mark.django_db
def test_events_younger_than_the_grace_period_wait_for_the_next_run():
    _events(4)
    assert seal_pending(grace_seconds=3600).sealed == 0
    assert seal_pending(grace_seconds=0).sealed == 4


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_event SET action = 'x'",
        "DELETE FROM audit_event",
        "TRUNCATE audit_event",
        "UPDATE audit_seal SET hash = 'x'",
        "DELETE FROM audit_checkpoint",
    ],
)
def test_postgres_refuses_changes_to_the_trail(statement):
    _events(2)
    seal_pending(grace_seconds=0)
    before = (AuditEvent.objects.count(), AuditSeal.objects.count(), AuditCheckpoint.objects.count())
    with pytest.raises(DatabaseError, match="audit.append_only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    assert (AuditEvent.objects.count(), AuditSeal.objects.count(), AuditCheckpoint.objects.count()) == before
    assert verify_database().intact


def test_sqlite_refuses_changes_to_the_trail(tmp_path: Path):
    """The demo runs on SQLite: the same triggers exist there."""
    import sqlite3

    db = tmp_path / "demo.sqlite3"
    env = {"DATABASE_URL": f"sqlite:///{db}", "ENCLAVE_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    con = sqlite3.connect(db)
    con.execute(
        "INSERT INTO audit_event (ts, actor, department, action, outcome, target_type, target_id, ip, data) "
        "VALUES ('2026-01-01 00:00:00', 'a', '', 'x', 'ok', '', '', '', '{}')"
    )
    con.commit()
    for statement in ("UPDATE audit_event SET action = 'y'", "DELETE FROM audit_event"):
        with pytest.raises(sqlite3.DatabaseError, match="audit.append_only"):
            con.execute(statement)
    assert con.execute("SELECT action FROM audit_event").fetchall() == [("x",)]


@pytest.mark.django_db
def test_audit_key_is_created_once_and_private(settings):
    _events(1)
    seal_pending(grace_seconds=0)
    key = Path(settings.AUDIT_KEY_PATH)
    assert key.stat().st_mode & 0o777 == 0o600
    first = key.read_bytes()
    _events(1)
    seal_pending(grace_seconds=0)
    assert key.read_bytes() == first


def _verify_offline(export: Path, public: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = ["audit", "verify", "--export", str(export), "--public-key", str(public)]
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *argv], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_export_in_its_own_transaction_is_one_snapshot_and_verifies_complete(committed_db, tmp_path: Path):
    """As `enclavectl audit export` runs it, outside any transaction: rows and checkpoints are read in one
    REPEATABLE READ transaction (a sealer run between two reads would leave a checkpoint past the last row),
    and the whole trail verifies as complete: its last row is covered by a signed checkpoint."""
    assert not connection.in_atomic_block  # committed_db: no test transaction around the export
    _events(4)
    seal_pending(grace_seconds=0)
    export = tmp_path / "audit-export"
    assert export_trail(export) == (4, 1)
    checkpoints, rows = read_export(export)
    report = ChainVerifier(load_public_key(export / "public-key.pem"), checkpoints).verify(rows, complete=True)
    assert report.intact and report.events == 4 and report.checkpoints_checked == 1, report.findings


@pytest.mark.django_db
def test_export_verifies_offline_with_only_the_files_and_public_key(tmp_path: Path, settings):
    _events(12)
    seal_pending(grace_seconds=0)
    _events(5)
    seal_pending(grace_seconds=0)
    export = tmp_path / "usb" / "audit-export"
    assert export_trail(export) == (17, 2)
    public = tmp_path / "trusted.pem"
    public.write_bytes((export / "public-key.pem").read_bytes())

    checkpoints, rows = read_export(export)
    report = ChainVerifier(load_public_key(public), checkpoints).verify(rows)
    assert report.intact and report.events == 17 and report.checkpoints_checked == 2

    # The same through enclavectl, in a process with no database configured at all.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    ok = _verify_offline(export, public, env)
    assert ok.returncode == 0, ok.stderr
    assert "17 events, chain intact, last checkpoint signed at" in ok.stdout

    # Edit one exported event: offline verify names it.
    lines = (export / "events.jsonl").read_text().splitlines()
    record = json.loads(lines[6])
    record["event"]["data"]["n"] = 999
    lines[6] = json.dumps(record)
    (export / "events.jsonl").write_text("\n".join(lines) + "\n")
    bad = _verify_offline(export, public, env)
    assert bad.returncode == 1
    assert f"event {record['event']['id']} (seq 7)" in bad.stdout
    assert "audit.event_altered" in bad.stdout


@pytest.mark.django_db
def test_export_refuses_a_non_empty_directory(tmp_path: Path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(FileExistsError):
        export_trail(tmp_path)


@pytest.mark.django_db
def test_a_checkpoint_signed_by_another_key_is_caught(settings, tmp_path):
    _events(3)
    seal_pending(grace_seconds=0)
    settings.AUDIT_KEY_PATH = tmp_path / "other" / "key.pem"  # verify with a different appliance key
    report = verify_database()
    assert report.first_bad is not None and report.first_bad.code == "audit.checkpoint_signature"


@pytest.mark.slow
def test_parallel_verification_agrees_with_the_sequential_pass(committed_db, monkeypatch):
    """Long trails are verified in seq ranges by worker processes; findings must not depend on that."""
    from mgmt.audit import verify as verify_module

    for i in range(120):
        record_event("test.event", data={"n": i})
    seal_pending(grace_seconds=0)
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_ROWS", 10)
    intact = verify_database(workers=3)
    assert intact.intact and intact.events == 120 and intact.last_checkpoint is not None

    target, deleted = AuditSeal.objects.get(seq=95).event_id, AuditSeal.objects.get(seq=30).event_id
    with connection.cursor() as cursor:  # committed, so that the worker processes see it
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("UPDATE audit_event SET actor = 'mallory' WHERE id = %s", [target])
        cursor.execute("DELETE FROM audit_event WHERE id = %s", [deleted])
        cursor.execute("SET session_replication_role = origin")
    parallel, sequential = verify_database(workers=3), verify_database(workers=1)
    assert parallel.findings == sequential.findings
    assert [(f.code, f.seq) for f in parallel.findings] == [
        ("audit.event_deleted", 30),
        ("audit.event_altered", 95),
    ]


@pytest.mark.django_db
def test_batched_events_commit_together_or_not_at_all():
    from mgmt.audit.services import record_events

    assert record_events([{"action": "gateway.request", "actor_label": "sam", "data": {"tokens": 5}}] * 3) == 3
    with pytest.raises(ValueError, match="unknown audit outcome"):
        record_events([{"action": "gateway.request"}, {"action": "gateway.request", "outcome": "maybe"}])
    assert AuditEvent.objects.filter(action="gateway.request").count() == 3
    seal_pending(grace_seconds=0)
    assert verify_database().intact
