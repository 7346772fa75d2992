"""Randomized tampering behind the application's back: verify catches every change at the right event.

Each trial disables the append-only triggers inside a savepoint (as a database superuser could), makes
one random edit, delete, insert or swap on a sealed trail, runs the real verifier, and rolls back.
"""

from __future__ import annotations

import json
import os
import random
from datetime import timedelta

import pytest
from django.db import connection, transaction

from mgmt.audit.models import AuditEvent, AuditSeal
from mgmt.audit.seal import seal_pending
from mgmt.audit.services import record_event
from mgmt.audit.verify import verify_database

TRIALS = 240
SEED = int(os.environ.get("ENCLAVE_TAMPER_SEED", "20261122"))
EDITABLE = ("action", "actor", "department", "outcome", "target_id", "ip", "data", "ts", "actor_id")


class _Rollback(Exception):
    pass


def _build_trail(rng: random.Random) -> None:
    """~400 events sealed in batches (several checkpoints), with id gaps from rolled-back transactions."""
    for batch in range(8):
        for i in range(60):
            try:
                with transaction.atomic():
                    record_event(
                        rng.choice(["auth.login", "user.create", "apikey.create", "gateway.request"]),
                        actor_label=f"user{rng.randrange(20)}",
                        department=rng.choice(["Radiology", "Emergency", "Litigation", ""]),
                        target_id=str(rng.randrange(10_000)),
                        data={"n": batch * 100 + i, "tokens": rng.randrange(5000)},
                    )
                    if rng.random() < 0.2:
                        raise _Rollback  # burns the id: leaves gaps an attacker could fill
            except _Rollback:
                pass
        seal_pending(grace_seconds=0)


def _tamper(cursor, rng: random.Random, ids: list[int], seq_of: dict[int, int]) -> tuple[str, str, int]:
    """Apply one random change; return (kind, expected finding code, expected seq or event id)."""
    kind = rng.choice(["edit", "delete", "insert", "swap"])
    if kind == "edit":
        event_id = rng.choice(ids)
        column = rng.choice(EDITABLE)
        if column == "data":
            cursor.execute(
                "UPDATE audit_event SET data = data || %s::jsonb WHERE id = %s",
                [json.dumps({"tokens": -1}), event_id],
            )
        elif column == "ts":
            cursor.execute("UPDATE audit_event SET ts = ts - %s WHERE id = %s", [timedelta(seconds=1), event_id])
        elif column == "actor_id":
            cursor.execute("UPDATE audit_event SET actor_id = coalesce(actor_id, 0) + 1 WHERE id = %s", [event_id])
        elif column == "outcome":
            cursor.execute(
                "UPDATE audit_event SET outcome = CASE outcome WHEN 'ok' THEN 'denied' ELSE 'ok' END WHERE id = %s",
                [event_id],
            )
        else:
            cursor.execute(f"UPDATE audit_event SET {column} = {column} || 'x' WHERE id = %s", [event_id])
        return kind, "audit.event_altered", event_id
    if kind == "delete":
        event_id = rng.choice(ids)
        cursor.execute("DELETE FROM audit_event WHERE id = %s", [event_id])
        return kind, "audit.event_deleted", seq_of[event_id]
    if kind == "insert":
        gaps = sorted(set(range(ids[0], ids[-1])) - set(ids))
        new_id = rng.choice(gaps)
        neighbour = max(i for i in ids if i < new_id)
        cursor.execute(
            "INSERT INTO audit_event (id, ts, actor_id, actor, department, action, outcome, target_type, "
            "target_id, ip, data) SELECT %s, ts, actor_id, 'mallory', department, 'user.create', 'ok', "
            "target_type, target_id, ip, data FROM audit_event WHERE id = %s",
            [new_id, neighbour],
        )
        return kind, "audit.event_unsealed", new_id
    first, second = sorted(rng.sample(ids, 2))
    cursor.execute(
        "UPDATE audit_event a SET ts = b.ts, actor_id = b.actor_id, actor = b.actor, department = b.department, "
        "action = b.action, outcome = b.outcome, target_type = b.target_type, target_id = b.target_id, "
        "ip = b.ip, data = b.data FROM (SELECT * FROM audit_event WHERE id IN (%s, %s)) b "
        "WHERE a.id IN (%s, %s) AND b.id <> a.id",
        [first, second, first, second],
    )
    return kind, "audit.event_altered", first


@pytest.mark.django_db
def test_verify_catches_every_random_tamper_at_the_right_event(settings):
    settings.AUDIT_SEAL_GRACE_SECONDS = 0
    rng = random.Random(SEED)
    _build_trail(rng)
    ids = list(AuditSeal.objects.order_by("seq").values_list("event_id", flat=True))
    seq_of = dict(AuditSeal.objects.values_list("event_id", "seq"))
    assert len(ids) > 300
    assert verify_database().intact

    seen: dict[str, int] = {}
    for trial in range(TRIALS):
        with pytest.raises(_Rollback), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL session_replication_role = replica")  # triggers off, as an attacker
                kind, code, where = _tamper(cursor, rng, ids, seq_of)
            report = verify_database()
            first = report.first_bad
            context = f"trial {trial} (seed {SEED}): {kind} -> {report.findings[:3]}"
            assert first is not None, f"missed tamper: {context}"
            assert first.code == code, context
            located = first.seq if code == "audit.event_deleted" else first.event_id
            assert located == where, context
            seen[kind] = seen.get(kind, 0) + 1
            raise _Rollback
    assert set(seen) == {"edit", "delete", "insert", "swap"}
    assert verify_database().intact  # every trial was rolled back


@pytest.mark.django_db
def test_rewritten_seals_are_caught_by_the_signed_checkpoint():
    """An attacker who edits an event and recomputes every later seal still cannot forge a signature."""
    from appliance.auditchain import chain_hash
    from mgmt.audit.seal import EVENT_VALUE_FIELDS

    for i in range(20):
        record_event("test.event", data={"n": i})
    seal_pending(grace_seconds=0)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute(
                "UPDATE audit_event SET actor = 'nobody' WHERE id = (SELECT event_id FROM audit_seal WHERE seq = 5)"
            )
            previous = bytes.fromhex(AuditSeal.objects.get(seq=4).hash)
            for seal in AuditSeal.objects.filter(seq__gte=5).order_by("seq"):
                values = AuditEvent.objects.filter(id=seal.event_id).values_list(*EVENT_VALUE_FIELDS).get()
                previous = chain_hash(previous, values)
                cursor.execute("UPDATE audit_seal SET hash = %s WHERE seq = %s", [previous.hex(), seal.seq])
        report = verify_database()
        assert report.first_bad is not None
        assert report.first_bad.code == "audit.checkpoint_mismatch"
        assert report.first_bad.seq == 20
        transaction.set_rollback(True)
