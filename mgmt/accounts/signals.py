"""Logins, failures, lockouts and logouts land in the audit trail."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.dispatch import receiver

from mgmt.audit.services import record_event

from .models import User


@receiver(user_logged_in)
def on_login(sender: Any, request: Any, user: User, **kwargs: Any) -> None:
    with transaction.atomic():
        record_event("auth.login", actor=user, data={"source": user.source}, request=request)


@receiver(user_logged_out)
def on_logout(sender: Any, request: Any, user: User | None, **kwargs: Any) -> None:
    if user is not None:
        with transaction.atomic():
            record_event("auth.logout", actor=user, request=request)


@receiver(user_login_failed)
def on_login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    username = str(credentials.get("username", ""))[:150]
    user = User.objects.filter(username=username).first()
    if request is not None and getattr(request, "axes_locked_out", False):
        reason = "locked"
    elif getattr(request, "enclave_login_refusal", None):  # set by the directory backend (mgmt.accounts.ldap)
        reason = request.enclave_login_refusal.removeprefix("auth.")
    elif user is None:
        reason = "unknown_user"
    elif not user.is_active:
        reason = "inactive"
    else:
        reason = "bad_password"
    with transaction.atomic():
        record_event(
            "auth.login_failed",
            actor=user,
            actor_label=username,
            outcome="denied",
            data={"reason": reason},
            request=request,
        )


@receiver(user_locked_out)
def on_locked_out(sender: Any, request: Any = None, username: str = "", **kwargs: Any) -> None:
    user = User.objects.filter(username=username).first()
    with transaction.atomic():
        record_event(
            "auth.lockout",
            actor=user,
            actor_label=username,
            outcome="denied",
            data={"reason": "too_many_failures"},
            request=request,
        )
