"""Requesting update steps (console) and running them (Celery worker), each audited in the same
transaction as the job row it changes. Appliance admins only: the views check the role."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from appliance.bundles.errors import BadState, BundleBusy, BundleError, NoPreviousRelease, NotABundle
from appliance.bundles.staging import Progress
from mgmt.audit.services import record_event

from .config import update_manager
from .discovery import find_bundle
from .health import engine_health_gate
from .models import ImportJob

__all__ = ["do_request_activate", "do_request_import", "do_request_rollback", "run_job"]

PROGRESS_INTERVAL = 0.5


def _audit_refusal(kind: str, error: BundleError, actor: Any, request: HttpRequest | None, target: str) -> None:
    with transaction.atomic():
        record_event(
            f"bundle.{kind}",
            actor=actor,
            outcome="denied",
            target_type="bundle",
            target_id=target,
            data={"code": error.code, "message": error.message},
            request=request,
        )


def _enqueue(
    kind: str, *, actor: Any, request: HttpRequest | None, bundle: Path | None = None, release: str = ""
) -> ImportJob:
    target = bundle.name if bundle else release
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    job = ImportJob.objects.create(
                        kind=kind, bundle_path=str(bundle or ""), release=release, requested_by=actor
                    )
            except IntegrityError as exc:
                raise BundleBusy("another update step is queued or running; wait for it to finish") from exc
            record_event(
                f"bundle.{kind}_requested",
                actor=actor,
                target_type="bundle",
                target_id=target,
                data={"job": job.pk, "path": str(bundle or "")},
                request=request,
            )
            from .tasks import run_update_job

            transaction.on_commit(lambda: run_update_job.delay(job.pk))
            return job
    except BundleError as error:
        _audit_refusal(kind, error, actor, request, target)
        raise


def do_request_import(bundle_name: str, *, actor: Any, request: HttpRequest | None = None) -> ImportJob:
    bundle = find_bundle(bundle_name)
    if bundle is None:
        shown = bundle_name[:128].replace("\x00", "\ufffd")  # as typed, less what PostgreSQL text cannot hold
        error = NotABundle(f"no bundle called {shown!r} is on the attached media")
        _audit_refusal("import", error, actor, request, shown)
        raise error
    return _enqueue(ImportJob.Kind.IMPORT, actor=actor, request=request, bundle=bundle)


def do_request_activate(*, actor: Any, request: HttpRequest | None = None) -> ImportJob:
    state = update_manager().read_state()
    if state["phase"] != "staged":
        error = BadState("there is no imported bundle waiting to be activated")
        _audit_refusal("activate", error, actor, request, "")
        raise error
    return _enqueue(ImportJob.Kind.ACTIVATE, actor=actor, request=request, release=state["job"]["release"]["release"])


def do_request_rollback(*, actor: Any, request: HttpRequest | None = None) -> ImportJob:
    state = update_manager().read_state()
    if not state.get("previous"):
        error = NoPreviousRelease("there is no previous release on this appliance to return to")
        _audit_refusal("rollback", error, actor, request, "")
        raise error
    return _enqueue(ImportJob.Kind.ROLLBACK, actor=actor, request=request, release=state["previous"]["release"])


def _claim(job_id: int) -> bool:
    """Claim a queued job with a conditional UPDATE; a duplicate delivery claims nothing. A job left
    'running' by a worker that died (the bundle lock is free again) is claimed again and resumed."""
    worker = f"{socket.gethostname()}:{__import__('os').getpid()}"
    now = timezone.now()
    if ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.RUNNING, started_at=now, worker=worker
    ):
        return True
    job = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.RUNNING).first()
    if job is None or update_manager().busy():
        return False
    return bool(
        ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.RUNNING, worker=job.worker).update(
            started_at=now, worker=worker
        )
    )


def _progress_writer(job_id: int) -> Any:
    last = [0.0]

    def write(progress: Progress) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_INTERVAL and progress.done_bytes < progress.total_bytes:
            return
        last[0] = now
        ImportJob.objects.filter(pk=job_id).update(
            done_bytes=progress.done_bytes,
            total_bytes=progress.total_bytes,
            skipped_bytes=progress.skipped_bytes,
            current_file=progress.current[:1024],
        )

    return write


def _finish(job: ImportJob, *, outcome: str, data: dict[str, Any], error: BundleError | None = None) -> None:
    with transaction.atomic():
        job.status = ImportJob.Status.FAILED if error else ImportJob.Status.DONE
        job.active = None
        job.finished_at = timezone.now()
        job.result = data
        if error:
            job.error_code, job.error_message = error.code, error.message
        job.save()
        record_event(
            f"bundle.{job.kind}",
            actor=job.requested_by,
            outcome=outcome,
            target_type="bundle",
            target_id=job.release or Path(job.bundle_path).name,
            data={**data, "job": job.pk, **({"code": error.code, "message": error.message} if error else {})},
        )


def run_job(job_id: int) -> str:
    """The worker's side: claim, run the step through appliance.bundles, record the outcome."""
    if not _claim(job_id):
        return "not-claimed"
    job = ImportJob.objects.select_related("requested_by").get(pk=job_id)
    manager = update_manager()
    try:
        if job.kind == ImportJob.Kind.IMPORT:
            staged = manager.import_bundle(Path(job.bundle_path), _progress_writer(job_id))
            job.refresh_from_db()
            job.release = staged["release"]["release"]
            data = {k: staged[k] for k in ("release", "digests", "signers", "total_bytes")}
        elif job.kind == ImportJob.Kind.ACTIVATE:
            state = manager.activate(engine_health_gate)
            keys = ("release", "sequence", "pointers", "digests", "signers", "provisioning")
            data = {k: state["current"][k] for k in keys}
        else:
            state = manager.rollback()
            data = {"release": state["current"]["release"], "from": state["previous"]["release"]}
    except BundleError as error:
        job.refresh_from_db()
        _finish(job, outcome="error", data={}, error=error)
        return error.code
    _finish(job, outcome="ok", data=data)
    return "done"
