"""Directory login through the console's login view against a real slapd (tests/fixtures/slapd.py)."""

from __future__ import annotations

import re

import pyotp
import pytest
from django.test import Client

from mgmt.accounts.models import Role, User
from mgmt.accounts.services import do_set_active
from mgmt.audit.models import AuditEvent
from tests.fixtures.personas import PASSWORD, make_user
from tests.fixtures.slapd import Directory

pytestmark = pytest.mark.django_db


def sign_in(client: Client, username: str, password: str):
    return client.post("/login/", {"username": username, "password": password})


def error_code(response) -> str:
    match = re.search(r'data-code="([^"]+)"', response.content.decode())
    return match.group(1) if match else ""


def events(action: str, actor: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, actor=actor).order_by("id"))


def test_directory_user_signs_in_and_is_placed_by_groups(ldap_directory: Directory) -> None:
    client = Client()
    response = sign_in(client, "rita.rad", ldap_directory.password("rita.rad"))

    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    user = User.objects.get(username="rita.rad")
    assert (user.source, user.role, user.department.name) == ("ldap", Role.STAFF, "Radiology")
    assert (user.first_name, user.last_name, user.email) == ("Rita", "Radiographer", "rita.rad@hospital.test")
    assert not user.has_usable_password()
    assert not user.must_change_password
    [login] = events("auth.login", "rita.rad")
    assert login.data == {"source": "ldap"}
    [sync] = events("user.directory_sync", "")
    assert sync.target_id == str(user.pk)
    assert sync.data == {
        "username": "rita.rad",
        "created": True,
        "role": [None, "staff"],
        "department": [None, "Radiology"],
    }
    assert client.get("/").status_code == 200  # staff needs no TOTP

    # A second login with nothing changed in the directory writes no further sync event.
    client.post("/logout/")
    assert sign_in(Client(), "rita.rad", ldap_directory.password("rita.rad")).status_code == 302
    assert len(events("auth.login", "rita.rad")) == 2
    assert AuditEvent.objects.filter(action="user.directory_sync").count() == 1


def test_wrong_directory_password_is_refused_and_creates_nothing(ldap_directory: Directory) -> None:
    response = sign_in(Client(), "eric.er", "not the directory password")

    assert response.status_code == 401
    assert error_code(response) == "auth.bad_credentials"
    assert not User.objects.filter(username="eric.er").exists()
    [failed] = events("auth.login_failed", "eric.er")
    assert failed.outcome == "denied"
    assert failed.data == {"reason": "unknown_user"}
    assert not AuditEvent.objects.filter(action__in=["auth.login", "user.directory_sync"]).exists()


def test_person_outside_required_group_is_refused(ldap_directory: Directory) -> None:
    response = sign_in(Client(), "otto.outside", ldap_directory.password("otto.outside"))

    assert response.status_code == 403
    assert error_code(response) == "auth.directory_group"
    assert "not in the group allowed to use Enclave" in response.content.decode()
    assert not User.objects.filter(username="otto.outside").exists()
    [failed] = events("auth.login_failed", "otto.outside")
    assert failed.data == {"reason": "directory_group"}


def test_staff_without_a_department_group_is_refused(ldap_directory: Directory) -> None:
    response = sign_in(Client(), "nina.nodept", ldap_directory.password("nina.nodept"))

    assert response.status_code == 403
    assert error_code(response) == "auth.directory_no_department"
    assert not User.objects.filter(username="nina.nodept").exists()
    [failed] = events("auth.login_failed", "nina.nodept")
    assert failed.data == {"reason": "directory_no_department"}


def test_group_change_in_directory_applies_at_next_login(ldap_directory: Directory) -> None:
    password = ldap_directory.password("mona.mover")
    assert sign_in(Client(), "mona.mover", password).status_code == 302
    user = User.objects.get(username="mona.mover")
    assert (user.role, user.department.name) == (Role.STAFF, "Radiology")

    server = ldap_directory.server
    server.move_member("mona.mover", remove=("radiology",), add=("litigation", "enclave-dept-admins"))
    try:
        assert sign_in(Client(), "mona.mover", password).status_code == 302
    finally:
        server.move_member("mona.mover", remove=("litigation", "enclave-dept-admins"), add=("radiology",))

    user.refresh_from_db()
    assert (user.role, user.department.name) == (Role.DEPARTMENT_ADMIN, "Litigation")
    first, moved = events("user.directory_sync", "")
    assert first.data["created"] is True
    assert moved.department == "Litigation"
    assert moved.data == {
        "username": "mona.mover",
        "created": False,
        "role": ["staff", "department_admin"],
        "department": ["Radiology", "Litigation"],
    }
    assert len(events("auth.login", "mona.mover")) == 2


def test_directory_admin_must_still_enrol_totp(ldap_directory: Directory) -> None:
    client = Client()
    assert sign_in(client, "amir.admin", ldap_directory.password("amir.admin")).status_code == 302
    user = User.objects.get(username="amir.admin")
    assert (user.role, user.department, user.source) == (Role.APPLIANCE_ADMIN, None, "ldap")

    for path in ("/", "/users/", "/audit/"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"] == "/mfa/enrol/", path

    page = client.get("/mfa/enrol/").content.decode()
    secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page).group(1)
    response = client.post("/mfa/enrol/", {"token": pyotp.TOTP(secret).now()})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert client.get("/users/").status_code == 200
    assert len(events("mfa.enrol", "amir.admin")) == 1


def test_local_account_is_never_sent_to_the_directory(ldap_directory: Directory, personas) -> None:
    """lena.local exists locally (staff) and, with another password, in the directory's admin group."""
    local = make_user("lena.local", Role.STAFF, personas.radiology)

    response = sign_in(Client(), "lena.local", ldap_directory.password("lena.local"))
    assert response.status_code == 401
    assert error_code(response) == "auth.bad_credentials"
    local.refresh_from_db()
    assert (local.source, local.role, local.department.name) == ("local", Role.STAFF, "Radiology")
    assert local.check_password(PASSWORD)
    assert not AuditEvent.objects.filter(action="user.directory_sync").exists()

    assert sign_in(Client(), "lena.local", PASSWORD).status_code == 302
    [login] = events("auth.login", "lena.local")
    assert login.data == {"source": "local"}


def test_deactivated_directory_user_is_refused_and_signed_out(ldap_directory: Directory, personas) -> None:
    password = ldap_directory.password("dina.deact")
    session = Client()
    assert sign_in(session, "dina.deact", password).status_code == 302
    assert session.get("/").status_code == 200
    user = User.objects.get(username="dina.deact")

    do_set_active(user, active=False, actor=personas.admin)

    response = sign_in(Client(), "dina.deact", password)
    assert response.status_code == 401
    assert error_code(response) == "auth.bad_credentials"
    [failed] = events("auth.login_failed", "dina.deact")
    assert failed.data == {"reason": "inactive"}
    # The session opened before the deactivation no longer works either.
    response = session.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login/")


def test_unreachable_directory_is_a_clear_refusal(ldap_directory: Directory, personas) -> None:
    server = ldap_directory.server
    password = ldap_directory.password("dora.down")
    server.stop()
    try:
        response = sign_in(Client(), "dora.down", password)
        assert response.status_code == 503
        assert error_code(response) == "auth.directory_unavailable"
        assert "directory server did not answer" in response.content.decode()
        assert not User.objects.filter(username="dora.down").exists()
        [failed] = events("auth.login_failed", "dora.down")
        assert failed.data == {"reason": "directory_unavailable"}
        # Local accounts (the break-glass admin) still sign in while the directory is down.
        assert sign_in(Client(), personas.admin.username, PASSWORD).status_code == 302
    finally:
        server.start()
    assert sign_in(Client(), "dora.down", password).status_code == 302
    assert User.objects.get(username="dora.down").department.name == "Litigation"
