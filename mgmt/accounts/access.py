"""Who may do what. Views declare their roles with @require_role; object checks are access_* helpers
that raise AccessDenied. The permission-matrix test reads `enclave_roles` off every console view."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from mgmt.audit.services import record_event

from .models import ApiKey, Department, Role, User

__all__ = [
    "ALL_ROLES",
    "PUBLIC",
    "AccessDenied",
    "access_api_key",
    "access_department",
    "access_user",
    "public",
    "require_role",
]

ALL_ROLES = frozenset(Role.values)
PUBLIC = "public"
View = TypeVar("View", bound=Callable[..., HttpResponse])


class AccessDenied(PermissionDenied):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def public(view: View) -> View:
    """Mark a view as reachable without login (login page, health). The matrix test checks the list."""
    view.enclave_roles = PUBLIC  # type: ignore[attr-defined]
    return view


def require_role(*roles: str) -> Callable[[View], View]:
    allowed = frozenset(roles)
    unknown = allowed - ALL_ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect(f"/login/?next={request.path}")
            if user.role not in allowed:  # type: ignore[union-attr]
                _deny(request, "access.role", f"This page is for {_names(allowed)}; your role cannot open it.")
            return view(request, *args, **kwargs)

        wrapper.enclave_roles = allowed  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _names(roles: frozenset[str]) -> str:
    return ", ".join(sorted(Role(r).label.lower() + "s" for r in roles))


def _deny(request: HttpRequest, code: str, message: str) -> None:
    with transaction.atomic():
        record_event(
            "access.denied",
            actor=request.user,
            outcome="denied",
            target_type="path",
            target_id=request.path[:128],
            data={"code": code},
            request=request,
        )
    raise AccessDenied(code, message)


def access_department(request: HttpRequest, department_id: int) -> Department:
    user: User = request.user  # type: ignore[assignment]
    department = Department.objects.filter(pk=department_id).first()
    if department is None:
        _deny(request, "department.not_found", "That department does not exist.")
    assert department is not None
    if user.role == Role.APPLIANCE_ADMIN:
        return department
    if user.role == Role.DEPARTMENT_ADMIN and user.department_id == department.pk:
        return department
    _deny(request, "access.department", "You can only manage your own department.")
    raise AssertionError  # unreachable


def access_user(request: HttpRequest, user_id: int) -> User:
    actor: User = request.user  # type: ignore[assignment]
    target = User.objects.select_related("department").filter(pk=user_id).first()
    if target is None:
        _deny(request, "user.not_found", "That user does not exist.")
    assert target is not None
    if actor.role == Role.APPLIANCE_ADMIN:
        return target
    if (
        actor.role == Role.DEPARTMENT_ADMIN
        and target.department_id == actor.department_id
        and target.role == Role.STAFF
    ):
        return target
    _deny(request, "access.user", "You can only manage staff in your own department.")
    raise AssertionError  # unreachable


def access_api_key(request: HttpRequest, key_id: int) -> ApiKey:
    actor: User = request.user  # type: ignore[assignment]
    key = ApiKey.objects.select_related("user", "department").filter(pk=key_id).first()
    if key is None:
        _deny(request, "apikey.not_found", "That API key does not exist.")
    assert key is not None
    if actor.role == Role.APPLIANCE_ADMIN or key.user_id == actor.pk:
        return key
    if actor.role == Role.DEPARTMENT_ADMIN and key.department_id == actor.department_id:
        return key
    _deny(request, "access.apikey", "You can only manage your own keys (or your department's, as its admin).")
    raise AssertionError  # unreachable
