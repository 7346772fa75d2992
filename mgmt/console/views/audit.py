"""Audit search (keyset-paginated, htmx-refreshed) and chain verification, for auditors and admins."""

from __future__ import annotations

from datetime import datetime, time

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from mgmt.accounts.access import require_role
from mgmt.accounts.models import Role
from mgmt.audit.models import AuditEvent
from mgmt.audit.verify import verify_database

from ..forms import AuditFilterForm

PAGE = 50


def _filtered(form: AuditFilterForm) -> QuerySet[AuditEvent]:
    data = form.cleaned_data
    events = AuditEvent.objects.all()
    if data.get("actor"):
        events = events.filter(actor=data["actor"])
    if data.get("department"):
        events = events.filter(department=data["department"])
    if data.get("action"):
        action = data["action"]
        if action.endswith("*") and len(action) > 1:
            prefix = action[:-1]
            # The range lets PostgreSQL use the (department, action) index; startswith keeps it exact in any
            # collation.
            upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            events = events.filter(action__gte=prefix, action__lt=upper, action__startswith=prefix)
        else:
            events = events.filter(action=action)
    if data.get("outcome"):
        events = events.filter(outcome=data["outcome"])
    if data.get("since"):
        events = events.filter(ts__gte=timezone.make_aware(datetime.combine(data["since"], time.min)))
    if data.get("until"):
        events = events.filter(ts__lte=timezone.make_aware(datetime.combine(data["until"], time.max)))
    if data.get("before"):
        events = events.filter(id__lt=data["before"])
    return events.order_by("-id")


@require_role(Role.AUDITOR, Role.APPLIANCE_ADMIN)
def audit_search(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    if request.GET and not form.is_valid():
        return render(
            request,
            "console/audit.html",
            {
                "form": form,
                "events": [],
                "error_code": "form.invalid",
                "error": "Check the filters marked below.",
            },
            status=400,
        )
    if not request.GET:
        form = AuditFilterForm({})
        form.is_valid()
    events = list(_filtered(form)[: PAGE + 1])
    more = len(events) > PAGE
    events = events[:PAGE]
    query = request.GET.copy()
    if more:
        query["before"] = str(events[-1].id)
    context = {"form": form, "events": events, "next_query": query.urlencode() if more else ""}
    template = "console/audit_rows.html" if request.htmx else "console/audit.html"  # type: ignore[attr-defined]
    return render(request, template, context)


@require_role(Role.AUDITOR, Role.APPLIANCE_ADMIN)
def audit_verify(request: HttpRequest) -> HttpResponse:
    report = verify_database()
    return render(request, "console/audit_verify.html", {"report": report}, status=200 if report.intact else 409)
