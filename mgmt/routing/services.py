"""Every write to routing goes through these functions: one transaction, one audit event inside it, and a
gateway invalidation published once it commits (CONVENTIONS.md point 2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from django.utils.text import slugify

from mgmt.accounts.models import Department, User
from mgmt.audit.services import record_event

from .errors import RoutingError
from .invalidation import publish_on_commit
from .models import (
    THINKING_MAX_MIN_CONTEXT,
    Deployment,
    EngineKind,
    Model,
    Route,
    RouteTarget,
    Task,
    Thinking,
)

__all__ = [
    "TargetSpec",
    "do_create_deployment",
    "do_create_model",
    "do_delete_route",
    "do_set_deployment_health",
    "do_set_route",
    "do_update_deployment",
]


@dataclass(frozen=True)
class TargetSpec:
    deployment: Deployment
    priority: int = 0
    weight: int = 1


# The columns' limits: a longer value must be refused here, not by the database.
INT_MAX = 2**31 - 1  # PositiveIntegerField is a PostgreSQL integer
NAME_MAX = 100  # Model.name, Deployment.name
ALIAS_MAX = 64  # Route.alias
SERVED_NAME_MAX = 200  # Model.served_name
ENDPOINT_MAX = 300  # Deployment.endpoint


def _slug(value: str, code: str, what: str, max_length: int = NAME_MAX) -> str:
    slug = slugify(value.strip())
    if not slug or slug != value.strip():
        raise RoutingError(code, f"“{value}” is not a valid {what}: use lower-case letters, digits and dashes.")
    if len(slug) > max_length:
        raise RoutingError(code, f"A {what} is at most {max_length} characters long.")
    return slug


def _check_endpoint(endpoint: str) -> str:
    try:
        parts = urlsplit(endpoint)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # an unclosed [IPv6 address, a port out of range
        valid = False
    if not valid or not endpoint.isprintable() or " " in endpoint:
        raise RoutingError(
            "deployment.bad_endpoint", f"“{endpoint}” is not an http(s) URL such as http://127.0.0.1:8001."
        )
    if len(endpoint) > ENDPOINT_MAX:
        raise RoutingError("deployment.bad_endpoint", f"An endpoint is at most {ENDPOINT_MAX} characters long.")
    return endpoint.rstrip("/")


def _positive(value: int, code: str, what: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= INT_MAX:
        raise RoutingError(code, f"{what} must be a whole number from {minimum} to {INT_MAX}.")
    return value


def do_create_model(
    name: str, *, served_name: str, task: str = Task.CHAT, actor: User | None, request: Any = None
) -> Model:
    name = _slug(name, "model.bad_name", "model name")
    if task not in Task.values:
        raise RoutingError("model.bad_task", f"Unknown task “{task}”; use one of {', '.join(Task.values)}.")
    if not served_name.strip():
        raise RoutingError("model.served_name_required", "Give the name the engines serve the model under.")
    if len(served_name.strip()) > SERVED_NAME_MAX or not served_name.strip().isprintable():
        raise RoutingError(
            "model.bad_served_name",
            f"The served name is at most {SERVED_NAME_MAX} printable characters, such as org/model-name.",
        )
    if Model.objects.filter(name=name).exists():
        raise RoutingError("model.exists", f"A model named “{name}” already exists.")
    with transaction.atomic():
        model = Model.objects.create(name=name, served_name=served_name.strip(), task=task)
        record_event(
            "routing.model.create",
            actor=actor,
            target_type="model",
            target_id=model.pk,
            data={"name": name, "served_name": model.served_name, "task": task},
            request=request,
        )
        publish_on_commit("routing.model")
    return model


def do_create_deployment(
    name: str,
    *,
    model: Model,
    kind: str,
    endpoint: str,
    max_context: int,
    max_concurrency: int = 8,
    actor: User | None,
    request: Any = None,
) -> Deployment:
    name = _slug(name, "deployment.bad_name", "deployment name")
    if kind not in EngineKind.values:
        raise RoutingError(
            "deployment.bad_kind", f"Unknown engine kind “{kind}”; use one of {', '.join(EngineKind.values)}."
        )
    endpoint = _check_endpoint(endpoint)
    _positive(max_context, "deployment.bad_context", "The maximum context")
    _positive(max_concurrency, "deployment.bad_concurrency", "The concurrency limit")
    if Deployment.objects.filter(name=name).exists():
        raise RoutingError("deployment.exists", f"A deployment named “{name}” already exists.")
    with transaction.atomic():
        deployment = Deployment.objects.create(
            name=name,
            model=model,
            kind=kind,
            endpoint=endpoint,
            max_context=max_context,
            max_concurrency=max_concurrency,
        )
        record_event(
            "routing.deployment.create",
            actor=actor,
            target_type="deployment",
            target_id=deployment.pk,
            data={
                "name": name,
                "model": model.name,
                "kind": kind,
                "endpoint": endpoint,
                "max_context": max_context,
                "max_concurrency": max_concurrency,
            },
            request=request,
        )
        publish_on_commit("routing.deployment")
    return deployment


def do_update_deployment(
    deployment: Deployment,
    *,
    endpoint: str | None = None,
    max_context: int | None = None,
    max_concurrency: int | None = None,
    enabled: bool | None = None,
    actor: User | None,
    request: Any = None,
) -> Deployment:
    changes: dict[str, Any] = {}
    if endpoint is not None:
        changes["endpoint"] = _check_endpoint(endpoint)
    if max_context is not None:
        changes["max_context"] = _positive(max_context, "deployment.bad_context", "The maximum context")
    if max_concurrency is not None:
        changes["max_concurrency"] = _positive(max_concurrency, "deployment.bad_concurrency", "The concurrency limit")
    if enabled is not None:
        changes["enabled"] = bool(enabled)
    with transaction.atomic():
        diff = {k: [getattr(deployment, k), v] for k, v in changes.items() if getattr(deployment, k) != v}
        for field, (_old, new) in diff.items():
            setattr(deployment, field, new)
        if diff:
            deployment.save(update_fields=list(diff))
        record_event(
            "routing.deployment.update",
            actor=actor,
            target_type="deployment",
            target_id=deployment.pk,
            data={"name": deployment.name, "changes": diff},
            request=request,
        )
        publish_on_commit("routing.deployment")
    return deployment


def do_set_deployment_health(
    deployment: Deployment, *, healthy: bool, reason: str = "", actor: User | None = None
) -> Deployment:
    """Health probes (actor None, the system) and admins mark a deployment up or down."""
    with transaction.atomic():
        if deployment.healthy == healthy:
            return deployment
        deployment.healthy = healthy
        deployment.save(update_fields=["healthy"])
        record_event(
            "routing.deployment.health",
            actor=actor,
            target_type="deployment",
            target_id=deployment.pk,
            outcome="ok",
            data={"name": deployment.name, "healthy": healthy, "reason": reason},
        )
        publish_on_commit("routing.deployment")
    return deployment


def do_set_route(
    department: Department,
    alias: str,
    targets: Sequence[TargetSpec],
    *,
    thinking: str = Thinking.OFF,
    actor: User | None,
    request: Any = None,
) -> Route:
    """Create or replace the route for department x alias with these targets (in priority order)."""
    alias = _slug(alias, "route.bad_alias", "alias", ALIAS_MAX)
    if thinking not in Thinking.values:
        raise RoutingError("route.bad_thinking", f"Unknown thinking mode “{thinking}”.")
    if not targets:
        raise RoutingError("route.no_targets", "A route needs at least one deployment.")
    seen: set[int] = set()
    tasks: set[str] = set()
    for target in targets:
        _positive(target.weight, "route.bad_weight", "A target's weight")
        _positive(target.priority, "route.bad_priority", "A target's priority", minimum=0)
        if target.deployment.pk in seen:
            raise RoutingError("route.duplicate_target", f"“{target.deployment.name}” is listed twice.")
        seen.add(target.deployment.pk)
        tasks.add(target.deployment.model.task)
        if thinking == Thinking.MAX and target.deployment.max_context < THINKING_MAX_MIN_CONTEXT:
            raise RoutingError(
                "route.thinking_max_context",
                f"Thinking “max” needs a context of at least {THINKING_MAX_MIN_CONTEXT} tokens; "
                f"“{target.deployment.name}” has {target.deployment.max_context}.",
            )
    if len(tasks) > 1:
        raise RoutingError("route.mixed_tasks", "A route cannot mix chat and embedding deployments.")
    with transaction.atomic():
        route, created = Route.objects.select_for_update().get_or_create(
            department=department, alias=alias, defaults={"thinking": thinking}
        )
        before = [] if created else _describe(route)
        if route.thinking != thinking:
            route.thinking = thinking
            route.save(update_fields=["thinking"])
        route.targets.all().delete()
        RouteTarget.objects.bulk_create(
            RouteTarget(route=route, deployment=t.deployment, priority=t.priority, weight=t.weight) for t in targets
        )
        record_event(
            "routing.route.set",
            actor=actor,
            department=department,
            target_type="route",
            target_id=route.pk,
            data={"alias": alias, "thinking": thinking, "before": before, "after": _describe(route)},
            request=request,
        )
        publish_on_commit("routing.route")
    return route


def do_delete_route(route: Route, *, actor: User | None, request: Any = None) -> None:
    with transaction.atomic():
        description = {"alias": route.alias, "targets": _describe(route)}
        department = route.department
        route_id = route.pk
        route.delete()
        record_event(
            "routing.route.delete",
            actor=actor,
            department=department,
            target_type="route",
            target_id=route_id,
            data=description,
            request=request,
        )
        publish_on_commit("routing.route")


def _describe(route: Route) -> list[dict[str, Any]]:
    return [
        {"deployment": t.deployment.name, "priority": t.priority, "weight": t.weight}
        for t in route.targets.select_related("deployment").order_by("priority", "id")
    ]
