"""Updates: bundles found on the attached media (verified before anything is copied), import with
progress (htmx polling), activate, rollback, history. Appliance admins only."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from appliance.bundles.errors import BundleError
from mgmt.accounts.access import require_role
from mgmt.accounts.models import Role
from mgmt.updates.config import update_manager
from mgmt.updates.discovery import discover
from mgmt.updates.models import ImportJob
from mgmt.updates.services import do_request_activate, do_request_import, do_request_rollback

# state.json's last outcome, as the page words it.
OUTCOME_LABELS = {
    "staged": "Imported",
    "activated": "Activated",
    "rolled_back": "Rolled back",
    "failed": "Failed",
    "interrupted": "Interrupted",
}


def _job(job_id: str) -> ImportJob | None:
    # isascii: isdigit() also accepts digits such as "²" that int() refuses.
    return ImportJob.objects.filter(pk=int(job_id)).first() if job_id.isascii() and job_id.isdigit() else None


def _context(job_id: str = "") -> dict[str, object]:
    """The page; `?job=ID` (where a request redirects) shows that job's box even when it ended before
    the page loaded, so the admin always sees the outcome of what they clicked. Otherwise the box shows
    the unfinished job, if any."""
    state = update_manager().read_state()
    outcome = (state.get("last") or {}).get("outcome", "")
    return {
        "state": state,
        "last_outcome": OUTCOME_LABELS.get(outcome, outcome),
        "bundles": discover(),
        "jobs": ImportJob.objects.select_related("requested_by")[:20],
        "shown_job": _job(job_id) or ImportJob.objects.filter(active=True).first(),
    }


def _requested(job: ImportJob) -> HttpResponse:
    return redirect(f"{reverse('console:updates')}?job={job.pk}")


def _refused(request: HttpRequest, error: BundleError) -> HttpResponse:
    status = 400 if error.code == "bundle.not_a_bundle" else 409
    context = {**_context(), "error_code": error.code, "error": f"{error.message}. {error.hint}".strip()}
    return render(request, "console/updates.html", context, status=status)


@require_role(Role.APPLIANCE_ADMIN)
@require_GET
def updates(request: HttpRequest) -> HttpResponse:
    return render(request, "console/updates.html", _context(request.GET.get("job", "")))


@require_role(Role.APPLIANCE_ADMIN)
@require_POST
def update_import(request: HttpRequest) -> HttpResponse:
    try:
        job = do_request_import(request.POST.get("bundle", ""), actor=request.user, request=request)
    except BundleError as error:
        return _refused(request, error)
    return _requested(job)


@require_role(Role.APPLIANCE_ADMIN)
@require_POST
def update_activate(request: HttpRequest) -> HttpResponse:
    try:
        job = do_request_activate(actor=request.user, request=request)
    except BundleError as error:
        return _refused(request, error)
    return _requested(job)


@require_role(Role.APPLIANCE_ADMIN)
@require_POST
def update_rollback(request: HttpRequest) -> HttpResponse:
    try:
        job = do_request_rollback(actor=request.user, request=request)
    except BundleError as error:
        return _refused(request, error)
    return _requested(job)


@require_role(Role.APPLIANCE_ADMIN)
@require_GET
def update_progress(request: HttpRequest) -> HttpResponse:
    """The htmx fragment polled while a job runs (`?job=ID`); once the job ends it stops polling and
    tells htmx to reload the page."""
    job = _job(request.GET.get("job", ""))
    if job is None:
        return render(
            request,
            "console/error.html",
            {"error_code": "updates.no_such_job", "error": "There is no such update job."},
            status=404,
        )
    response = render(request, "console/updates_job.html", {"job": job})
    if not job.active and request.headers.get("HX-Request") == "true":
        # The job ended while the page polled: reload it, so the release, state and History are current.
        response["HX-Refresh"] = "true"
    return response
