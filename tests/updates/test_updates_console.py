"""The console's Updates flow: discovery in a watch directory, import/activate/rollback as claimed job
rows run by a real Celery worker, progress over htmx, audit events with digests and signer key ids."""

from __future__ import annotations

import json
import socket

import pytest

from mgmt.audit.models import AuditEvent
from mgmt.updates.models import ImportJob
from mgmt.updates.services import do_request_import, run_job
from tests.bundles.conftest import PAYLOAD
from tests.fixtures.personas import verified_client
from tests.fixtures.processes import wait_for
from tests.updates.conftest import put_on_stick


def _job_done(job_id: int) -> bool:
    return ImportJob.objects.get(pk=job_id).status in ("done", "failed")


@pytest.mark.slow
def test_import_activate_rollback_with_a_real_worker(celery_worker_process, personas, media, vendor_kit):
    # celery_worker_process comes first: its committed_db must be set up before personas' db fixture.
    worker = celery_worker_process(beat=False)
    admin = verified_client(personas.admin)
    put_on_stick(vendor_kit, media, PAYLOAD, "2026Q3", 1)

    page = admin.get("/updates/")
    assert page.status_code == 200
    assert b'data-bundle="ENCLAVE-2026Q3"' in page.content
    assert b'data-code="bundle.verified"' in page.content
    assert b"<code>models</code> 2 files" in page.content

    def run(path: str, data: dict[str, str] | None = None) -> ImportJob:
        response = admin.post(path, data or {})
        assert response.status_code == 302, response.content[-800:]
        job = ImportJob.objects.order_by("-id").first()
        assert response["Location"] == f"/updates/?job={job.pk}"  # the redirect names the job just requested
        wait_for(lambda: _job_done(job.pk), timeout=60, what=f"job {job.pk} ({worker.output()[-500:]})")
        job.refresh_from_db()
        assert job.status == "done", (job.error_code, job.error_message)
        # the page it redirected to still shows that job's box once the job has ended, without polling
        shown = admin.get(response["Location"]).content.decode()
        assert f'<div class="job" data-job="{job.pk}" data-status="done"' in shown
        assert "<h2>Requested step</h2>" in shown
        assert 'data-testid="took">' in shown and "MB/s" not in shown  # an ended job says how long it took
        assert 'hx-trigger="every 1s"' not in shown
        return job

    job = run("/updates/import/", {"bundle": "ENCLAVE-2026Q3"})
    progress = admin.get(f"/updates/progress/?job={job.pk}")
    assert b'data-status="done"' in progress.content
    assert b"100.0%" in progress.content
    assert b'hx-trigger="every 1s"' not in progress.content  # polling stops once the job ended
    assert "HX-Refresh" not in progress  # a plain GET is not told to reload
    polled = admin.get(f"/updates/progress/?job={job.pk}", headers={"HX-Request": "true"})
    assert polled["HX-Refresh"] == "true"  # htmx reloads the page so its state and History are current
    run("/updates/activate/")
    page = admin.get("/updates/").content
    assert b'data-testid="current-release">2026Q3<' in page
    assert b'data-testid="rollback">Roll back to factory image<' in page  # the first update can be undone too

    q4_payload = {**PAYLOAD, "policies/retention.yaml": b"content_retention: 30d\n"}
    put_on_stick(vendor_kit, media, q4_payload, "2026Q4", 2)
    run("/updates/import/", {"bundle": "ENCLAVE-2026Q4"})
    run("/updates/activate/")
    assert b'data-testid="current-release">2026Q4<' in admin.get("/updates/").content
    run("/updates/rollback/")
    assert b'data-testid="current-release">2026Q3<' in admin.get("/updates/").content

    imported = AuditEvent.objects.filter(action="bundle.import", outcome="ok").order_by("id").last()
    assert imported.actor == personas.admin.username
    assert imported.data["release"]["release"] == "2026Q4"
    assert set(imported.data["signers"]["targets"]) == {
        vendor_kit.public["targets-1"].keyid,
        vendor_kit.public["targets-2"].keyid,
    }
    assert len(imported.data["digests"]["targets"]) == 64
    activated = AuditEvent.objects.filter(action="bundle.activate", outcome="ok").order_by("id").last()
    assert activated.data["release"] == "2026Q4"
    assert AuditEvent.objects.filter(action="bundle.rollback", outcome="ok").exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db
def test_unreachable_engine_fails_the_health_gate_and_rolls_back(personas, media, vendor_kit, settings):
    settings.UPDATES_SMOKE_ENDPOINTS = [f"http://127.0.0.1:{_closed_port()}"]
    settings.UPDATES_HEALTH_TIMEOUT_SECONDS = 2
    put_on_stick(vendor_kit, media, PAYLOAD, "2026Q3", 1)
    job = do_request_import("ENCLAVE-2026Q3", actor=personas.admin)
    assert run_job(job.pk) == "done"
    admin = verified_client(personas.admin)
    assert admin.post("/updates/activate/").status_code == 302
    job = ImportJob.objects.get(kind="activate")
    assert run_job(job.pk) == "bundle.health_check_failed"
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error_code == "bundle.health_check_failed"
    event = AuditEvent.objects.get(action="bundle.activate")
    assert (event.outcome, event.data["code"]) == ("error", "bundle.health_check_failed")
    assert not (settings.STATE_DIR / "bundles" / "current" / "models").exists()  # back to "no release"


@pytest.mark.django_db
def test_duplicate_delivery_runs_a_job_once(personas, media, vendor_kit):
    put_on_stick(vendor_kit, media, PAYLOAD, "2026Q3", 1)
    job = do_request_import("ENCLAVE-2026Q3", actor=personas.admin)
    assert run_job(job.pk) == "done"
    assert run_job(job.pk) == "not-claimed"
    assert AuditEvent.objects.filter(action="bundle.import").count() == 1


@pytest.mark.django_db
def test_tampered_bundle_is_shown_refused_and_audited(personas, media, vendor_kit, settings):
    bundle = put_on_stick(vendor_kit, media, PAYLOAD, "2026Q3", 1, signers=("targets-1", "rogue"))
    admin = verified_client(personas.admin)
    page = admin.get("/updates/")
    assert b'data-code="bundle.unknown_key"' in page.content
    assert b'data-testid="import-ENCLAVE-2026Q3"' not in page.content
    # An admin who forges the form still gets nothing: the worker verifies again and refuses.
    assert admin.post("/updates/import/", {"bundle": bundle.name}).status_code == 302
    job = ImportJob.objects.get()
    assert run_job(job.pk) == "bundle.unknown_key"
    event = AuditEvent.objects.get(action="bundle.import")
    assert (event.outcome, event.data["code"]) == ("error", "bundle.unknown_key")
    state = json.loads((settings.STATE_DIR / "bundles" / "state.json").read_text())
    assert (state["phase"], state["current"]) == ("idle", None)
    assert list((settings.STATE_DIR / "bundles" / "objects").iterdir()) == []


@pytest.mark.django_db
def test_refusals_are_clear_and_audited(personas, media, vendor_kit):
    put_on_stick(vendor_kit, media, PAYLOAD, "2026Q3", 1)
    admin = verified_client(personas.admin)
    response = admin.post("/updates/import/", {"bundle": "../../etc"})
    assert response.status_code == 400
    assert b'data-code="bundle.not_a_bundle"' in response.content
    assert admin.post("/updates/import/", {"bundle": "ENCLAVE-2026Q3"}).status_code == 302
    busy = admin.post("/updates/import/", {"bundle": "ENCLAVE-2026Q3"})
    assert busy.status_code == 409
    assert b'data-code="bundle.busy"' in busy.content
    nothing = admin.post("/updates/activate/")
    assert b'data-code="bundle.bad_state"' in nothing.content
    codes = sorted(e.data["code"] for e in AuditEvent.objects.filter(outcome="denied", action__startswith="bundle."))
    assert codes == ["bundle.bad_state", "bundle.busy", "bundle.not_a_bundle"]
    assert ImportJob.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["dept_admin", "staff", "auditor"])
def test_only_appliance_admins_may_import(personas, media, vendor_kit, persona):
    put_on_stick(vendor_kit, media, PAYLOAD, "2026Q3", 1)
    client = verified_client(personas.by_name(persona))
    response = client.post("/updates/import/", {"bundle": "ENCLAVE-2026Q3"})
    assert response.status_code == 403
    assert b'data-code="access.role"' in response.content
    assert ImportJob.objects.count() == 0


@pytest.mark.slow
def test_enclavectl_import_from_ssh_is_audited(committed_db, media, vendor_kit, tmp_path):
    """The same flow from a shell: `enclavectl bundle import --activate`, recorded in the one trail."""
    import os
    import subprocess
    import sys

    from tests.fixtures.processes import ROOT, test_database_url

    good = put_on_stick(vendor_kit, media, PAYLOAD, "2026Q3", 1)
    bad = put_on_stick(vendor_kit, media, PAYLOAD, "2026Q4", 2, signers=("targets-1",))
    env = {**os.environ, "DATABASE_URL": test_database_url()}

    def enclavectl(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "appliance.cli", "bundle", *args]
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    done = enclavectl("import", str(good), "--activate")
    assert done.returncode == 0, done.stderr
    refused = enclavectl("import", str(bad))
    assert refused.returncode == 1
    assert "bundle.threshold_not_met" in refused.stderr
    events = {(e.action, e.outcome): e for e in AuditEvent.objects.filter(action__startswith="bundle.")}
    assert set(events) == {("bundle.import", "ok"), ("bundle.activate", "ok"), ("bundle.import", "error")}
    assert events[("bundle.import", "ok")].actor.startswith("enclavectl:")
    assert events[("bundle.activate", "ok")].data["signers"]["targets"]
    assert events[("bundle.import", "error")].data["code"] == "bundle.threshold_not_met"
    env["DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/nowhere"
    unaudited = enclavectl("import", str(bad))
    assert unaudited.returncode == 2
    assert "bundle.audit_unavailable" in unaudited.stderr
