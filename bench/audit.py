"""Audit benchmark: ingest through the service layer vs a bare INSERT loop, verify speed over >= 1M events,
and the audit search page's p95 at 1M events. Runs on a scratch PostgreSQL database (enclave_bench)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = os.environ.get("ENCLAVE_BENCH_DB", "enclave_bench")
PG = "postgresql://postgres@127.0.0.1:5432"
N_INGEST = int(os.environ.get("ENCLAVE_BENCH_INGEST", "20000"))
N_VERIFY = int(os.environ.get("ENCLAVE_BENCH_EVENTS", "1000000"))


def _fresh_database() -> None:
    for sql in (f"DROP DATABASE IF EXISTS {BENCH_DB}", f"CREATE DATABASE {BENCH_DB}"):
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)
    os.environ["DATABASE_URL"] = f"{PG}/{BENCH_DB}"
    os.environ.setdefault("ENCLAVE_STATE_DIR", str(ROOT / "build" / "bench-state"))
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True, env=os.environ)


WRITERS = int(os.environ.get("ENCLAVE_BENCH_WRITERS", "8"))


BATCH = 100


def _writer(args: tuple[str, int, int]) -> None:
    kind, offset, count = args
    from django.db import connection, transaction

    from mgmt.audit.services import record_event, record_events

    connection.close()
    if kind == "service-batch":
        for base in range(offset, offset + count, BATCH):
            record_events(
                [
                    {
                        "action": "bench.event",
                        "actor_label": "bench",
                        "department": "Radiology",
                        "target_type": "user",
                        "target_id": i,
                        "data": {"n": i, "tokens": 1234},
                    }
                    for i in range(base, min(base + BATCH, offset + count))
                ]
            )
    elif kind == "bare-batch":
        with connection.cursor() as cursor:
            for base in range(offset, offset + count, BATCH):
                with transaction.atomic():
                    cursor.executemany(
                        "INSERT INTO audit_event (ts, actor, department, action, outcome, target_type, target_id,"
                        " ip, data) VALUES (now(), 'bench', 'Radiology', 'bench.bare', 'ok', 'user', %s, '',"
                        " %s::jsonb)",
                        [
                            (str(i), f'{{"n": {i}, "tokens": 1234}}')
                            for i in range(base, min(base + BATCH, offset + count))
                        ],
                    )
    elif kind == "service":
        for i in range(offset, offset + count):
            record_event(
                "bench.event",
                actor_label="bench",
                department="Radiology",
                target_type="user",
                target_id=i,
                data={"n": i, "tokens": 1234},
            )
    else:
        with connection.cursor() as cursor:
            for i in range(offset, offset + count):
                cursor.execute(
                    "INSERT INTO audit_event (ts, actor, department, action, outcome, target_type, target_id, ip,"
                    " data) VALUES (now(), 'bench', 'Radiology', 'bench.bare', 'ok', 'user', %s, '', %s::jsonb)",
                    [str(i), f'{{"n": {i}, "tokens": 1234}}'],
                )
    connection.close()


def _ingest(kind: str, total: int, writers: int) -> float:
    import multiprocessing

    per = total // writers
    with multiprocessing.get_context("fork").Pool(writers) as pool:
        start = time.perf_counter()
        pool.map(_writer, [(kind, w * per, per) for w in range(writers)])
        elapsed = time.perf_counter() - start
    return per * writers / elapsed


def main() -> int:
    sys.path.insert(0, str(ROOT))
    _fresh_database()
    os.environ["DJANGO_SETTINGS_MODULE"] = "mgmt.settings"
    import django

    django.setup()
    from django.db import connection

    from bench.common import percentile, print_table, write_results
    from mgmt.audit.seal import seal_pending
    from mgmt.audit.verify import verify_database

    # 1. Ingest: WRITERS concurrent processes, one committed transaction per event (as console workers and
    #    the gateway's audit writers do), through record_event vs a bare INSERT loop, same run.
    connection.close()
    service_rate = _ingest("service-batch", N_INGEST * 4, WRITERS)
    bare_rate = _ingest("bare-batch", N_INGEST * 4, WRITERS)
    single_rate = _ingest("service", N_INGEST, WRITERS)
    single_bare_rate = _ingest("bare", N_INGEST, WRITERS)

    # 2. Fill up to N_VERIFY events in bulk (server side), then seal them all.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_event (ts, actor, department, action, outcome, target_type, target_id, ip, data) "
            "SELECT now() - (g || ' seconds')::interval, 'user' || (g %% 500), "
            "(ARRAY['Radiology','Emergency','Litigation','Cardiology'])[1 + g %% 4], "
            "(ARRAY['auth.login','gateway.request','apikey.create','user.update'])[1 + g %% 4], "
            "CASE WHEN g %% 17 = 0 THEN 'denied' ELSE 'ok' END, 'user', g::text, '10.0.0.' || (g %% 250), "
            "jsonb_build_object('n', g, 'tokens', g %% 4000) FROM generate_series(1, %s) g",
            [max(0, N_VERIFY - 2 * N_INGEST)],
        )
        cursor.execute("ANALYZE audit_event")
    start = time.perf_counter()
    sealed = 0
    while True:
        result = seal_pending(grace_seconds=0, batch=50_000)
        if result.sealed == 0:
            break
        sealed += result.sealed
    seal_rate = sealed / (time.perf_counter() - start)

    start = time.perf_counter()
    report = verify_database()
    verify_seconds = time.perf_counter() - start
    assert report.intact, report.summary()
    verify_rate = report.events / verify_seconds

    # 3. Search page at 1M events: an auditor's filtered queries through the real view.
    from django.test import Client
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from mgmt.accounts.models import Role, User

    auditor = User.objects.create(username="bench.auditor", role=Role.AUDITOR)
    device = TOTPDevice.objects.create(user=auditor, name="bench", confirmed=True)
    client = Client(HTTP_HOST="localhost")
    client.force_login(auditor)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    queries = [
        "",
        "actor=user42",
        "department=Emergency",
        "action=auth.login",
        "outcome=denied",
        "action=gateway.*&department=Radiology",
        "actor=user7&outcome=denied",
        "since=2026-01-01",
        "department=Cardiology&action=user.update",
        f"before={N_VERIFY // 2}",
    ]
    for query in queries:  # warm-up round, not counted: templates and connections, as on a running console
        client.get(f"/audit/?{query}")
    timings = []
    for _round in range(6):
        for query in queries:
            start = time.perf_counter()
            response = client.get(f"/audit/?{query}")
            timings.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, (query, response.status_code)
    search_p95 = percentile(timings, 95)

    figures = {
        "ingest_events_per_s": round(service_rate),
        "ingest_ratio_vs_bare_insert": round(service_rate / bare_rate, 3),
        "verify_events_per_s": round(verify_rate),
        "search_p95_ms_at_1m": round(search_p95, 1),
    }
    details = {
        "reference": "bare INSERT loop, same run, same concurrency and the same commit batching",
        "ingest_mode": f"record_events: group commit of {BATCH} events per transaction, {WRITERS} writer processes",
        "writers": WRITERS,
        "single_commit_ingest_events_per_s": round(single_rate),
        "single_commit_bare_insert_events_per_s": round(single_bare_rate),
        "bare_insert_events_per_s": round(bare_rate),
        "events_total": report.events,
        "seal_events_per_s": round(seal_rate),
        "verify_seconds": round(verify_seconds, 2),
        "search_p50_ms": round(percentile(timings, 50), 1),
        "search_requests": len(timings),
    }
    path = write_results("audit", figures, details)
    print_table(
        f"Audit ({report.events:,} events, PostgreSQL, {os.cpu_count()} cores) -> {path.relative_to(ROOT)}",
        [
            (
                f"ingest, record_events x{BATCH}/commit",
                f"{service_rate:,.0f} ev/s",
                "goal >= 5,000 ev/s",
                "ok" if service_rate >= 5000 else "below goal",
            ),
            (f"bare INSERT x{BATCH}/commit", f"{bare_rate:,.0f} ev/s", "reference", "-"),
            ("ingest ratio vs bare", f"{service_rate / bare_rate:.2f}x", "1.00x = no overhead", "-"),
            ("record_event, 1 commit/event", f"{single_rate:,.0f} ev/s", "console actions", "-"),
            ("bare INSERT, 1 commit/event", f"{single_bare_rate:,.0f} ev/s", "reference (fsync-bound)", "-"),
            ("seal (hash + store)", f"{seal_rate:,.0f} ev/s", "-", "-"),
            (
                "verify",
                f"{verify_rate:,.0f} ev/s",
                "goal >= 200,000 ev/s",
                "ok" if verify_rate >= 200_000 else "below goal",
            ),
            (
                "search p95 at 1M",
                f"{search_p95:.1f} ms",
                "goal < 150 ms",
                "ok" if search_p95 < 150 else "above goal",
            ),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
