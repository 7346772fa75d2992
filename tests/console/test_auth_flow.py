"""Sign-in, lockout, TOTP and CSRF through the real views and middleware; every refusal has its code."""

from __future__ import annotations

import re
import time

import pytest
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from mgmt.accounts.models import Role, User
from mgmt.accounts.services import do_create_user
from mgmt.audit.models import AuditEvent
from tests.fixtures.personas import PASSWORD, verified_client

pytestmark = pytest.mark.django_db


def _code(device: TOTPDevice, *, offset: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + offset * device.step
    return f"{totp.token():06d}"


def _login(client: Client, username: str, password: str):
    return client.post("/login/", {"username": username, "password": password})


def _error_code(response) -> str:
    import re

    match = re.search(rb'data-code="([^"]+)"', response.content)
    return match.group(1).decode() if match else ""


def test_staff_signs_in_and_the_login_is_audited(personas):
    client = Client()
    response = _login(client, "sam.staff", PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    event = AuditEvent.objects.filter(action="auth.login").latest("id")
    assert event.actor == "sam.staff" and event.department == "Radiology" and event.ip == "127.0.0.1"


@pytest.mark.parametrize(("username", "reason"), [("sam.staff", "bad_password"), ("nobody", "unknown_user")])
def test_wrong_password_and_unknown_user_get_the_same_refusal(personas, username, reason):
    response = _login(Client(), username, "not the password")
    assert response.status_code == 401
    assert _error_code(response) == "auth.bad_credentials"
    event = AuditEvent.objects.filter(action="auth.login_failed").latest("id")
    assert event.outcome == "denied" and event.data["reason"] == reason and event.actor == username
    assert not AuditEvent.objects.filter(action="auth.login").exists()


def test_repeated_failures_lock_the_account_even_for_the_right_password(personas):
    client = Client()
    for _ in range(5):
        _login(client, "sam.staff", "wrong password")
    response = _login(client, "sam.staff", PASSWORD)
    assert response.status_code == 429
    assert _error_code(response) == "auth.locked"
    assert AuditEvent.objects.filter(action="auth.lockout", actor="sam.staff").exists()
    assert "_auth_user_id" not in client.session
    # Another account is not affected by sam's lock.
    assert _login(Client(), "lee.lawyer", PASSWORD).status_code == 302


@pytest.mark.parametrize(
    "data",
    [{"username": "", "password": "x"}, {"username": "a" * 151, "password": "x"}, {"username": "sam.staff"}],
)
def test_malformed_login_forms_are_refused(personas, data):
    response = Client().post("/login/", data)
    assert response.status_code == 400
    assert _error_code(response) == "auth.malformed"


def test_admin_must_enrol_totp_before_anything_else(personas, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # the throttle has its own test below
    client = Client()
    assert _login(client, "alice.admin", PASSWORD).status_code == 302
    response = client.get("/users/")
    assert response.status_code == 302 and response["Location"] == "/mfa/enrol/"
    page = client.get("/mfa/enrol/")
    assert page.status_code == 200 and b"data:image/svg+xml;base64," in page.content
    device = TOTPDevice.objects.get(user=personas.admin, confirmed=False)

    bad = client.post("/mfa/enrol/", {"token": "000000" if _code(device) != "000000" else "111111"})
    assert _error_code(bad) == "mfa.bad_code"
    assert not TOTPDevice.objects.filter(user=personas.admin, confirmed=True).exists()

    ok = client.post("/mfa/enrol/", {"token": _code(device)})
    assert ok.status_code == 302 and ok["Location"] == "/"
    assert client.get("/users/").status_code == 200
    assert AuditEvent.objects.filter(action="mfa.enrol", actor="alice.admin").exists()
    assert AuditEvent.objects.filter(action="mfa.enrol_failed", actor="alice.admin").exists()


def test_totp_codes_cannot_be_replayed(personas):
    device = TOTPDevice.objects.create(user=personas.auditor, name="phone", confirmed=True)
    first = Client()
    _login(first, "ada.auditor", PASSWORD)
    assert first.get("/audit/")["Location"] == "/mfa/verify/"
    code = _code(device)
    assert first.post("/mfa/verify/", {"token": code}).status_code == 302
    assert first.get("/audit/").status_code == 200

    second = Client()
    _login(second, "ada.auditor", PASSWORD)
    replay = second.post("/mfa/verify/", {"token": code})
    assert replay.status_code in (401, 429)
    assert _error_code(replay) in ("mfa.bad_code", "mfa.throttled")
    assert second.get("/audit/")["Location"] == "/mfa/verify/"
    assert AuditEvent.objects.filter(action="mfa.failed", actor="ada.auditor").exists()


def test_wrong_codes_are_throttled(personas):
    device = TOTPDevice.objects.create(user=personas.auditor, name="phone", confirmed=True)
    client = Client()
    _login(client, "ada.auditor", PASSWORD)
    wrong = "000000" if _code(device) != "000000" else "111111"
    assert _error_code(client.post("/mfa/verify/", {"token": wrong})) == "mfa.bad_code"
    # Straight after a failure the right code is refused too, until the back-off has passed.
    response = client.post("/mfa/verify/", {"token": _code(device)})
    assert response.status_code == 429 and _error_code(response) == "mfa.throttled"
    assert client.get("/audit/")["Location"] == "/mfa/verify/"


def test_malformed_totp_code(personas):
    TOTPDevice.objects.create(user=personas.auditor, name="phone", confirmed=True)
    client = Client()
    _login(client, "ada.auditor", PASSWORD)
    response = client.post("/mfa/verify/", {"token": "12ab"})
    assert response.status_code == 400 and _error_code(response) == "mfa.malformed"


@pytest.mark.parametrize("token", ["12ab", "abcdef", "12345", "1234567", ""])
def test_malformed_totp_code_is_audited_and_counted_like_a_wrong_one(personas, token):
    device = TOTPDevice.objects.create(user=personas.auditor, name="phone", confirmed=True)
    client = Client()
    _login(client, "ada.auditor", PASSWORD)
    response = client.post("/mfa/verify/", {"token": token})
    assert response.status_code == 400 and _error_code(response) == "mfa.malformed"
    event = AuditEvent.objects.get(action="mfa.failed", actor="ada.auditor")
    assert (event.outcome, event.data) == ("denied", {"reason": "malformed"})
    device.refresh_from_db()
    assert device.throttling_failure_count == 1
    # As after a wrong code, the right code is refused too until the back-off has passed.
    response = client.post("/mfa/verify/", {"token": _code(device)})
    assert response.status_code == 429 and _error_code(response) == "mfa.throttled"
    assert client.get("/audit/")["Location"] == "/mfa/verify/"


def test_one_time_password_must_be_replaced_at_first_login(personas):
    user, one_time = do_create_user("nina.nurse", role=Role.STAFF, department=personas.radiology, actor=personas.admin)
    client = Client()
    assert _login(client, "nina.nurse", one_time).status_code == 302
    assert client.get("/keys/")["Location"] == "/password/"
    response = client.post(
        "/password/", {"old_password": one_time, "new_password": "short", "new_password_again": "short"}
    )
    assert response.status_code == 400
    new = "a long and private passphrase 7"
    response = client.post("/password/", {"old_password": one_time, "new_password": new, "new_password_again": new})
    assert response.status_code == 302
    user.refresh_from_db()
    assert not user.must_change_password and user.check_password(new)
    assert client.get("/keys/").status_code == 200


def test_missing_csrf_token_is_refused_and_changes_nothing(personas):
    client = verified_client(personas.admin)
    client.handler.enforce_csrf_checks = True
    response = client.post("/departments/", {"name": "Oncology", "weight": 1})
    assert response.status_code == 403 and _error_code(response) == "csrf.failed"
    from mgmt.accounts.models import Department

    assert not Department.objects.filter(name="Oncology").exists()


def test_oversized_and_malformed_fields_change_nothing(personas):
    client = verified_client(personas.admin)
    before = (User.objects.count(), AuditEvent.objects.filter(action="user.create").count())
    for data in (
        {"username": "x" * 200, "role": "staff"},
        {"username": "bad name!", "role": "staff"},
        {"username": "ok", "role": "emperor"},
        {"username": "ok", "role": "staff", "email": "nope"},
    ):
        response = client.post("/users/", data)
        assert response.status_code == 400 and _error_code(response) == "form.invalid", data
    assert (User.objects.count(), AuditEvent.objects.filter(action="user.create").count()) == before
    huge = client.post("/departments/", {"name": "n", "weight": 1, "pad": "x" * (3 * 1024 * 1024)})
    assert huge.status_code == 400 and _error_code(huge) == "bad_request"


def test_api_key_checks_refuse_invalid_revoked_and_expired_keys(personas):
    from datetime import timedelta

    from django.utils import timezone

    from mgmt.accounts.errors import AccountError
    from mgmt.accounts.services import authenticate_api_key, do_create_api_key, do_revoke_api_key

    good = do_create_api_key(personas.staff, name="a", expires_at=None, actor=personas.staff)
    assert authenticate_api_key(good.secret).pk == good.key.pk
    revoked = do_create_api_key(personas.staff, name="b", expires_at=None, actor=personas.staff)
    do_revoke_api_key(revoked.key, actor=personas.staff)
    expiring = do_create_api_key(
        personas.staff, name="c", expires_at=timezone.now() + timedelta(seconds=1), actor=personas.staff
    )
    type(expiring.key).objects.filter(pk=expiring.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    for secret, code in [
        (good.secret[:-2] + "xx", "apikey.invalid"),
        ("sk-something", "apikey.invalid"),
        (revoked.secret, "apikey.revoked"),
        (expiring.secret, "apikey.expired"),
    ]:
        with pytest.raises(AccountError) as caught:
            authenticate_api_key(secret)
        assert caught.value.code == code
    refused = AuditEvent.objects.filter(action="apikey.refused").values_list("data", flat=True)
    assert sorted(d["code"] for d in refused) == [
        "apikey.expired",
        "apikey.invalid",
        "apikey.invalid",
        "apikey.revoked",
    ]
    assert all(good.secret not in str(d) for d in refused)


def test_admin_issues_a_key_for_a_staff_member_shown_once(personas):
    from mgmt.accounts.models import ApiKey
    from mgmt.accounts.services import key_digest

    client = verified_client(personas.dept_admin)
    response = client.post(f"/users/{personas.staff.pk}/keys/", {"name": "PACS dictation"})
    assert response.status_code == 200
    import re

    secret = re.search(rb'id="api-key">([^<]+)<', response.content).group(1).decode()
    key = ApiKey.objects.get(digest=key_digest(secret))
    assert key.user == personas.staff and key.department == personas.radiology
    event = AuditEvent.objects.get(action="apikey.create", target_id=str(key.pk))
    assert event.actor == "rob.radadmin" and event.data["owner"] == "sam.staff"
    assert secret.encode() not in client.get(f"/users/{personas.staff.pk}/").content
    refused = client.post(f"/users/{personas.other_staff.pk}/keys/", {"name": "x"})
    assert refused.status_code == 403 and _error_code(refused) == "access.user"
    assert not ApiKey.objects.filter(user=personas.other_staff).exists()


def test_audit_search_filters_by_action_prefix_and_department(personas):
    from mgmt.audit.services import record_event

    for action in ("auth.login", "auth.logout", "authz.grant", "apikey.create"):
        record_event(action, actor_label="x", department="Radiology")
    record_event("auth.login", actor_label="y", department="Litigation")
    client = verified_client(personas.auditor)
    page = client.get("/audit/", {"action": "auth.*", "department": "Radiology"}).content.decode()
    shown = re.findall(r"<td>(auth[\w.]*|apikey[\w.]*)</td>", page)
    assert sorted(shown) == ["auth.login", "auth.logout"]
    bad = client.get("/audit/", {"since": "yesterday"})
    assert bad.status_code == 400 and _error_code(bad) == "form.invalid"
