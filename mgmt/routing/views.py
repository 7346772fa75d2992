"""Console pages for appliance admins: engines (deployments), routes per department, usage charts."""

from __future__ import annotations

from typing import TypeVar

from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from appliance.hardware import cached_report
from mgmt.accounts.access import require_role
from mgmt.accounts.models import Department, Role
from mgmt.accounts.refusals import audit_refusal

from .errors import RoutingError
from .health import deployment_loads
from .models import Deployment, EngineKind, Model, Route, Thinking
from .services import (
    TargetSpec,
    do_create_deployment,
    do_create_model,
    do_delete_route,
    do_set_route,
    do_update_deployment,
)
from .usage import HEIGHT, WIDTH, usage_charts

Row = TypeVar("Row", bound=models.Model)

# The engines page's forms (its hidden `form` field), named as the audit trail names the change they make.
FORM_ACTIONS = {"model": "routing.model.create", "deployment": "routing.deployment.create"}


def _refused(request: HttpRequest, action: str, error: RoutingError) -> HttpResponse:
    audit_refusal(request, action, error.code)
    return _page(request, error)


def _page(request: HttpRequest, error: RoutingError | None = None) -> HttpResponse:
    deployments = list(Deployment.objects.select_related("model"))
    loads = deployment_loads(deployments)
    for deployment in deployments:
        deployment.load = loads.get(deployment.pk)  # type: ignore[attr-defined]
    context = {
        "models": Model.objects.all(),
        "deployments": deployments,
        "routes": Route.objects.select_related("department").prefetch_related("targets__deployment"),
        "departments": Department.objects.all(),
        "kinds": EngineKind.choices,
        "thinking_modes": Thinking.choices,
        "hardware": cached_report(),
    }
    if error is not None:
        context.update(error=error.message, error_code=error.code)
    return render(request, "routing/engines.html", context, status=400 if error else 200)


@require_role(Role.APPLIANCE_ADMIN)
@require_http_methods(["GET", "POST"])
def engines(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _page(request)
    form = request.POST
    action = FORM_ACTIONS.get(form.get("form", ""), "routing.form")
    try:
        if form.get("form") == "model":
            do_create_model(
                form.get("name", ""),
                served_name=form.get("served_name", ""),
                task=form.get("task", "chat"),
                actor=request.user,
                request=request,
            )  # type: ignore[arg-type]
        elif form.get("form") == "deployment":
            do_create_deployment(
                form.get("name", ""),
                model=_row(
                    Model.objects.all(),
                    form.get("model"),
                    "deployment.unknown_model",
                    "There is no such model: choose one from the catalog.",
                ),
                kind=form.get("kind", ""),
                endpoint=form.get("endpoint", ""),
                max_context=_int(form.get("max_context")),
                max_concurrency=_int(form.get("max_concurrency")),
                actor=request.user,
                request=request,  # type: ignore[arg-type]
            )
        else:
            return _refused(request, action, RoutingError("form.unknown", "Unknown form."))
    except RoutingError as exc:
        return _refused(request, action, exc)
    return redirect("routing:engines")


@require_role(Role.APPLIANCE_ADMIN)
@require_POST
def deployment_enabled(request: HttpRequest, deployment_id: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment, pk=deployment_id)
    do_update_deployment(
        deployment,
        enabled=request.POST.get("enabled") == "1",
        actor=request.user,  # type: ignore[arg-type]
        request=request,
    )
    return redirect("routing:engines")


@require_role(Role.APPLIANCE_ADMIN)
@require_POST
def route_set(request: HttpRequest) -> HttpResponse:
    """Targets come as lines `deployment [priority [weight]]`, in the order they are tried."""
    form = request.POST
    try:
        department = _row(
            Department.objects.all(),
            form.get("department"),
            "route.unknown_department",
            "There is no such department: choose one from the list.",
        )
        deployments = {d.name: d for d in Deployment.objects.select_related("model")}
        targets = []
        for index, line in enumerate(t.split() for t in form.get("targets", "").splitlines() if t.strip()):
            deployment = deployments.get(line[0])
            if deployment is None:
                raise RoutingError("route.unknown_deployment", f"There is no deployment “{line[0]}”.")
            priority = _int(line[1]) if len(line) > 1 else index
            weight = _int(line[2]) if len(line) > 2 else 1
            targets.append(TargetSpec(deployment, priority, weight))
        do_set_route(
            department,
            form.get("alias", ""),
            targets,
            thinking=form.get("thinking", "off"),
            actor=request.user,
            request=request,
        )  # type: ignore[arg-type]
    except RoutingError as exc:
        return _refused(request, "routing.route.set", exc)
    return redirect("routing:engines")


@require_role(Role.APPLIANCE_ADMIN)
@require_POST
def route_delete(request: HttpRequest, route_id: int) -> HttpResponse:
    do_delete_route(get_object_or_404(Route, pk=route_id), actor=request.user, request=request)  # type: ignore[arg-type]
    return redirect("routing:engines")


@require_role(Role.APPLIANCE_ADMIN)
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    charts = usage_charts(hours=24)
    return render(request, "routing/usage.html", {"charts": charts, "width": WIDTH, "height": HEIGHT})


def _row(rows: QuerySet[Row], value: str | None, code: str, message: str) -> Row:
    """The row whose id the form sent: an id that is missing, not a number or not there is refused with `code`."""
    row = rows.filter(pk=int(value)).first() if value and value.isascii() and value.isdigit() else None
    if row is None:
        raise RoutingError(code, message)
    return row


def _int(value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError:
        raise RoutingError("form.not_a_number", f"“{value}” is not a whole number.") from None
