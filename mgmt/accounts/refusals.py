"""Console forms refused with a code are audited, as access denials are (access.py): who tried which change and
the code they got. One event per refusal, named like the other failures (`auth.login_failed`, `mfa.enrol_failed`):
the action of the change that was tried plus `_refused` (`department.create_refused`,
`routing.route.set_refused`), outcome `denied`, `data.code` the refusal code. The change's own action keeps
meaning that the change was made, and an auditor's `department.create*` finds both.

Nothing the person typed goes into the event: values may be secrets (passwords) or text PostgreSQL cannot store
(NUL). A form that failed validation adds the names of its invalid fields."""

from __future__ import annotations

from django import forms
from django.db import models, transaction
from django.http import HttpRequest

from mgmt.audit.services import record_event

__all__ = ["audit_refusal"]


def audit_refusal(
    request: HttpRequest,
    action: str,
    code: str,
    *,
    form: forms.Form | None = None,
    target: models.Model | None = None,
) -> None:
    """`action` is the change that was tried, as its service audits it (`user.create`); `target` is the row the
    change was for, if there is one (named as the services name it: user, apikey...)."""
    data: dict[str, object] = {"code": code}
    if form is not None and form.errors:
        data["fields"] = sorted(form.errors)
    target_type, target_id = (target._meta.model_name or "", target.pk) if target is not None else ("", "")
    with transaction.atomic():
        record_event(
            f"{action}_refused",
            actor=request.user,
            outcome="denied",
            target_type=target_type,
            target_id=target_id,
            data=data,
            request=request,
        )
