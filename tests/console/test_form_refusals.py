"""Every refused account form is audited, as access denials are: who tried which change, and the refusal code.
Nothing else changes, and nothing typed into the form (a password) lands in the trail."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from mgmt.accounts.models import ApiKey, Department, User
from mgmt.accounts.services import do_create_api_key, do_revoke_api_key
from mgmt.audit.models import AuditEvent
from tests.fixtures.personas import PASSWORD, Personas, verified_client

pytestmark = pytest.mark.django_db

WEAK = "short-secret"  # typed as a new password, refused: it must not reach the audit trail


def _error_code(response: Any) -> str:
    match = re.search(rb'data-code="([^"]+)"', response.content)
    return match.group(1).decode() if match else ""


def _accounts() -> tuple[object, ...]:
    return (
        list(Department.objects.order_by("pk").values_list("pk", "name", "weight")),
        list(
            User.objects.order_by("pk").values_list(
                "pk", "username", "role", "department_id", "is_active", "password", "must_change_password"
            )
        ),
        list(ApiKey.objects.order_by("pk").values_list("pk", "name", "expires_at", "revoked_at")),
    )


# (persona, url, form, code, action, target "type:@row"): url, form and target name @rows of the `rows` fixture.
CASES = [
    (
        "admin",
        "/departments/",
        {"name": "Radiology", "weight": "1"},
        "department.exists",
        "department.create_refused",
        None,
    ),
    (
        "admin",
        "/departments/",
        {"name": "Oncology", "weight": "abc"},
        "form.invalid",
        "department.create_refused",
        None,
    ),
    (
        "dept_admin",
        "/departments/@radiology/weight/",
        {"weight": "0"},
        "form.invalid",
        "department.update_refused",
        "department:@radiology",
    ),
    (
        "admin",
        "/users/",
        {"username": "sam.staff", "role": "staff", "department": "@radiology"},
        "user.exists",
        "user.create_refused",
        None,
    ),
    ("dept_admin", "/users/", {"username": "a b", "role": "staff"}, "form.invalid", "user.create_refused", None),
    (
        "admin",
        "/users/@admin/",
        {"role": "staff", "department": "@radiology"},
        "user.self_role",
        "user.update_refused",
        "user:@admin",
    ),
    ("dept_admin", "/users/@staff/", {"role": "nope"}, "form.invalid", "user.update_refused", "user:@staff"),
    (
        "admin",
        "/users/@admin/active/",
        {"active": "0"},
        "user.self_deactivate",
        "user.deactivate_refused",
        "user:@admin",
    ),
    (
        "admin",
        "/users/@ldap/reset-password/",
        {},
        "user.directory_managed",
        "user.password_reset_refused",
        "user:@ldap",
    ),
    ("dept_admin", "/users/@staff/keys/", {"name": ""}, "form.invalid", "apikey.create_refused", "user:@staff"),
    ("admin", "/users/@auditor/keys/", {"name": "k"}, "apikey.no_department", "apikey.create_refused", "user:@auditor"),
    ("staff", "/keys/", {"name": "k", "expires_on": "2001-01-01"}, "apikey.expiry_past", "apikey.create_refused", None),
    ("staff", "/keys/", {"name": "k", "expires_on": "someday"}, "form.invalid", "apikey.create_refused", None),
    ("staff", "/keys/@revoked/revoke/", {}, "apikey.already_revoked", "apikey.revoke_refused", "apikey:@revoked"),
    (
        "staff",
        "/password/",
        {"old_password": PASSWORD, "new_password": WEAK, "new_password_again": WEAK + "!"},
        "form.invalid",
        "user.password_change_refused",
        None,
    ),
    (
        "staff",
        "/password/",
        {"old_password": PASSWORD, "new_password": PASSWORD, "new_password_again": PASSWORD},
        "user.password_reused",
        "user.password_change_refused",
        None,
    ),
]


@pytest.fixture
def rows(personas: Personas) -> dict[str, int]:
    ldap_user = User.objects.create(username="dora.directory", source="ldap", department=personas.radiology)
    revoked = do_create_api_key(personas.staff, name="old", expires_at=None, actor=None).key
    do_revoke_api_key(revoked, actor=None)
    return {
        "@radiology": personas.radiology.pk,
        "@admin": personas.admin.pk,
        "@staff": personas.staff.pk,
        "@auditor": personas.auditor.pk,
        "@ldap": ldap_user.pk,
        "@revoked": revoked.pk,
    }


def _resolve(value: str, rows: dict[str, int]) -> str:
    return re.sub(r"@\w+", lambda ref: str(rows.get(ref.group(), ref.group())), value)


@pytest.mark.parametrize(("persona", "url", "data", "code", "action", "target"), CASES)
def test_refused_account_form_is_audited_and_changes_nothing(personas, rows, persona, url, data, code, action, target):
    actor = personas.by_name(persona)
    client = verified_client(actor)
    before, last_event = _accounts(), AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()

    response = client.post(_resolve(url, rows), {k: _resolve(v, rows) for k, v in data.items()})

    assert (response.status_code, _error_code(response)) == (400, code), response.content[-600:]
    assert _accounts() == before
    event = AuditEvent.objects.get(id__gt=last_event)  # exactly one event: the refusal
    assert (event.action, event.outcome, event.actor, event.data["code"]) == (action, "denied", actor.username, code)
    kind, _, ref = (target or "").partition(":")
    assert (event.target_type, event.target_id) == (kind, _resolve(ref, rows))
    assert ("fields" in event.data) == (code == "form.invalid")
    assert PASSWORD not in json.dumps(event.data) and WEAK not in json.dumps(event.data)


def test_wrong_current_password_is_audited_once(personas):
    # do_change_password audits this refusal itself; the view must not add a second event.
    client = verified_client(personas.staff)
    last_event = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    data = {"old_password": "not it at all", "new_password": WEAK * 2, "new_password_again": WEAK * 2}
    response = client.post("/password/", data)
    assert (response.status_code, _error_code(response)) == (400, "auth.bad_password")
    event = AuditEvent.objects.get(id__gt=last_event)
    assert (event.action, event.outcome, event.actor) == ("user.password_change", "denied", "sam.staff")


def test_refused_user_creation_on_a_page_with_a_refused_search_is_audited(personas):
    client = verified_client(personas.admin)
    before, last_event = _accounts(), AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    response = client.post("/users/?q=" + "x" * 101, {"username": "new.person"})
    assert (response.status_code, _error_code(response)) == (400, "form.invalid")
    assert _accounts() == before
    event = AuditEvent.objects.get(id__gt=last_event)
    assert (event.action, event.outcome, event.data) == (
        "user.create_refused",
        "denied",
        {"code": "form.invalid", "fields": ["q"]},
    )
