"""Writing to the audit trail. Every write elsewhere in the console calls record_event inside its own
transaction, so the change and its event commit (or roll back) together."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import transaction

from .models import AuditEvent, Outcome

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = ["client_ip", "record_event", "record_events"]


def client_ip(request: HttpRequest | None) -> str:
    if request is None:
        return ""
    # nginx on the appliance sets X-Real-IP from the socket; nothing else is trusted.
    return str(request.META.get("HTTP_X_REAL_IP") or request.META.get("REMOTE_ADDR") or "")[:45]


def record_event(
    action: str,
    *,
    actor: Any = None,
    actor_label: str = "",
    department: Any = None,
    target_type: str = "",
    target_id: str | int = "",
    outcome: str = Outcome.OK,
    data: dict[str, Any] | None = None,
    ip: str | None = None,
    request: HttpRequest | None = None,
) -> AuditEvent:
    """Append one event. `actor` is a User (or None for the system); `actor_label` names an actor that is
    not a user row (an unknown username typed at the login form). `department` is a Department or a name.
    """
    if outcome not in Outcome.values:
        raise ValueError(f"unknown audit outcome {outcome!r}")
    if department is None and actor is not None:
        department = getattr(actor, "department", None)
    with transaction.atomic():
        return AuditEvent.objects.create(
            actor_id=getattr(actor, "pk", None),
            actor=(getattr(actor, "username", "") or actor_label)[:150],
            department=(getattr(department, "name", department) or "")[:100],
            action=action,
            outcome=outcome,
            target_type=target_type,
            target_id=str(target_id)[:128],
            ip=ip if ip is not None else client_ip(request),
            data=data or {},
        )


def record_events(events: list[dict[str, Any]]) -> int:
    """Append many events in ONE transaction (group commit): for writers that batch, such as request
    logging under load. Each dict takes record_event's keyword arguments (actor_label, department as a
    name, action, outcome, target_type, target_id, ip, data). All or nothing."""
    rows = []
    for spec in events:
        outcome = spec.get("outcome", Outcome.OK)
        if outcome not in Outcome.values:
            raise ValueError(f"unknown audit outcome {outcome!r}")
        rows.append(
            AuditEvent(
                actor_id=spec.get("actor_id"),
                actor=str(spec.get("actor_label", ""))[:150],
                department=str(spec.get("department", ""))[:100],
                action=spec["action"],
                outcome=outcome,
                target_type=spec.get("target_type", ""),
                target_id=str(spec.get("target_id", ""))[:128],
                ip=spec.get("ip", ""),
                data=spec.get("data") or {},
            )
        )
    with transaction.atomic():
        AuditEvent.objects.bulk_create(rows, batch_size=1000)
    return len(rows)
