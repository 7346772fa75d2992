"""Account services: each write commits with its audit event; refusals carry stable codes and change nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from mgmt.accounts.errors import AccountError
from mgmt.accounts.models import ApiKey, Department, Role, User
from mgmt.accounts.services import (
    do_change_password,
    do_create_api_key,
    do_create_department,
    do_create_user,
    do_revoke_api_key,
    do_update_user,
    key_digest,
)
from mgmt.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_production_hashes_passwords_with_argon2id_defaults():
    from django.contrib.auth.hashers import get_hasher

    from mgmt import settings as production

    assert production.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"
    with override_settings(PASSWORD_HASHERS=production.PASSWORD_HASHERS):
        encoded = get_hasher("default").encode("a passphrase", "somesalt1234")
    assert encoded.startswith("argon2$argon2id$v=19$m=102400,t=2,p=8$")


def test_passwords_are_hashed_with_argon2(personas):
    user, one_time = do_create_user("nina.nurse", role=Role.STAFF, department=personas.radiology, actor=personas.admin)
    assert user.password.startswith("argon2$argon2id$")
    assert user.check_password(one_time) and user.must_change_password
    event = AuditEvent.objects.get(action="user.create", target_id=str(user.pk))
    assert event.actor == personas.admin.username and event.department == "Radiology"


def test_a_write_and_its_audit_event_roll_back_together(personas):
    before = AuditEvent.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        do_create_department("Emergency", actor=personas.admin)
        raise RuntimeError("the surrounding transaction fails")
    assert not Department.objects.filter(name="Emergency").exists()
    assert AuditEvent.objects.count() == before


@pytest.mark.parametrize(
    ("name", "weight", "code"),
    [
        ("", 1, "department.name_required"),
        ("Radiology", 1, "department.exists"),
        ("radiology", 1, "department.exists"),
        ("Oncology", 0, "department.bad_weight"),
    ],
)
def test_department_refusals(personas, name, weight, code):
    before = (Department.objects.count(), AuditEvent.objects.count())
    with pytest.raises(AccountError) as caught:
        do_create_department(name, weight=weight, actor=personas.admin)
    assert caught.value.code == code
    assert (Department.objects.count(), AuditEvent.objects.count()) == before


def test_department_admin_may_only_add_staff_to_their_own_department(personas):
    with pytest.raises(AccountError) as caught:
        do_create_user("x1", role=Role.APPLIANCE_ADMIN, department=personas.radiology, actor=personas.dept_admin)
    assert caught.value.code == "user.forbidden_role"
    with pytest.raises(AccountError) as caught:
        do_create_user("x2", role=Role.STAFF, department=personas.litigation, actor=personas.dept_admin)
    assert caught.value.code == "user.forbidden_role"
    assert not User.objects.filter(username__in=["x1", "x2"]).exists()
    user, _ = do_create_user("x3", role=Role.STAFF, department=personas.radiology, actor=personas.dept_admin)
    assert user.department == personas.radiology


def test_admins_cannot_change_their_own_role(personas):
    with pytest.raises(AccountError) as caught:
        do_update_user(personas.admin, role=Role.STAFF, department=personas.radiology, actor=personas.admin)
    assert caught.value.code == "user.self_role"
    personas.admin.refresh_from_db()
    assert personas.admin.role == Role.APPLIANCE_ADMIN


def test_api_key_is_shown_once_and_stored_only_as_a_digest(personas):
    issued = do_create_api_key(personas.staff, name="dictation", expires_at=None, actor=personas.staff)
    assert issued.secret.startswith(f"enc_{issued.key.prefix}_")
    stored = ApiKey.objects.get(pk=issued.key.pk)
    assert stored.digest == key_digest(issued.secret)
    assert issued.secret not in str(ApiKey.objects.filter(pk=stored.pk).values().get())
    assert stored.department == personas.radiology and stored.status == "active"
    event = AuditEvent.objects.get(action="apikey.create")
    assert issued.secret not in str(event.data) and event.data["prefix"] == stored.prefix


def test_api_key_revocation_and_expiry(personas):
    issued = do_create_api_key(
        personas.staff, name="tool", expires_at=timezone.now() + timedelta(days=1), actor=personas.staff
    )
    do_revoke_api_key(issued.key, actor=personas.dept_admin)
    issued.key.refresh_from_db()
    assert issued.key.status == "revoked" and not issued.key.is_active
    with pytest.raises(AccountError) as caught:
        do_revoke_api_key(issued.key, actor=personas.dept_admin)
    assert caught.value.code == "apikey.already_revoked"
    with pytest.raises(AccountError) as caught:
        do_create_api_key(
            personas.staff,
            name="late",
            expires_at=timezone.now() - timedelta(minutes=1),
            actor=personas.staff,
        )
    assert caught.value.code == "apikey.expiry_past"
    with pytest.raises(AccountError) as caught:
        do_create_api_key(personas.auditor, name="no dept", expires_at=None, actor=personas.auditor)
    assert caught.value.code == "apikey.no_department"


def test_password_change_refusals_change_nothing(personas):
    from tests.fixtures.personas import PASSWORD

    old_hash = personas.staff.password
    for old, new, code in [
        ("wrong", "a much better password 1", "auth.bad_password"),
        (PASSWORD, PASSWORD, "user.password_reused"),
        (PASSWORD, "short", "user.weak_password"),
    ]:
        with pytest.raises(AccountError) as caught:
            do_change_password(personas.staff, old=old, new=new)
        assert caught.value.code == code
        personas.staff.refresh_from_db()
        assert personas.staff.password == old_hash
    assert AuditEvent.objects.filter(action="user.password_change", outcome="denied").count() == 1
