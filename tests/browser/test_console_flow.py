"""The console flow of issue 2 in Debian's Chromium against gunicorn (tests/fixtures/browser.py).

An appliance admin with a one-time password signs in, enrols TOTP, chooses a password, creates a
department and a user; that user signs in (second browser context), chooses a password and creates an
API key, seen once; the admin finds all of it on the audit page through htmx filters. Screenshots of
every step land in test-artifacts/screenshots/test_console_flow/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pyotp
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from mgmt.accounts.models import ApiKey, Department, Role, User
from mgmt.accounts.services import do_create_user, key_digest
from mgmt.audit.models import AuditEvent
from tests.fixtures.processes import ROOT

pytestmark = pytest.mark.browser

ADMIN_PASSWORD = "Winter lights over the harbour 7"
STAFF_PASSWORD = "Quiet corridors at midnight 42"
OTP_PATTERN = re.compile(r"^[a-z2-9]{5}(-[a-z2-9]{5}){3}$")


def expect_path(page, path: str) -> None:
    page.wait_for_url(lambda url: url.split("?")[0].endswith(path), timeout=15_000)


def enclavectl(server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **server.env, "ENCLAVE_AUDIT_SEAL_GRACE_SECONDS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def submit(page, label: str) -> None:
    page.get_by_role("button", name=label).click()
    page.wait_for_load_state()


def test_console_flow(chromium, console_server) -> None:
    _, one_time_password = do_create_user("ann.admin", role=Role.APPLIANCE_ADMIN, department=None, actor=None)
    base = console_server.base_url

    with chromium() as browser:
        admin = browser.new_page("admin")

        # 1. Sign in with the one-time password: the console insists on TOTP first.
        admin.goto("/login/")
        browser.screenshot(admin, "login")
        admin.fill("#id_username", "ann.admin")
        admin.fill("#id_password", one_time_password)
        submit(admin, "Sign in")
        expect_path(admin, "/mfa/enrol/")
        assert admin.locator("img.qr").evaluate("img => img.complete && img.naturalWidth > 0")
        expect(admin.locator("header nav")).to_have_count(0)  # nothing to navigate to before TOTP
        browser.screenshot(admin, "mfa-enrol")

        # 2. The code computed from the key shown on the page confirms the authenticator.
        secret = admin.locator("#totp-secret").inner_text().strip()
        admin.fill("#id_token", pyotp.TOTP(secret).now())
        submit(admin, "Confirm")

        # 3. Then a password of one's own.
        expect_path(admin, "/password/")
        browser.screenshot(admin, "password-change")
        admin.fill("#id_old_password", one_time_password)
        admin.fill("#id_new_password", ADMIN_PASSWORD)
        admin.fill("#id_new_password_again", ADMIN_PASSWORD)
        submit(admin, "Save password")
        expect_path(admin, "/")
        assert admin.locator("h1").inner_text() == "Dashboard"
        browser.screenshot(admin, "dashboard")

        # 4. A department.
        admin.get_by_role("link", name="Departments").click()
        expect_path(admin, "/departments/")
        admin.fill("#id_name", "Radiology")
        admin.fill("#id_weight", "3")
        submit(admin, "Create department")
        expect_path(admin, "/departments/")
        expect(admin.get_by_role("status")).to_have_text("Department “Radiology” created.")
        assert admin.get_by_role("cell", name="Radiology", exact=True).is_visible()
        assert admin.get_by_label("weight of Radiology").input_value() == "3"
        browser.screenshot(admin, "departments")

        # 5. A user in it; the one-time password is on the page once.
        admin.get_by_role("link", name="Users").click()
        expect_path(admin, "/users/")
        assert admin.locator("#id_role").input_value() == "staff"  # least privilege unless chosen
        admin.fill("#id_username", "sam.staff")
        admin.fill("#id_full_name", "Sam Staff")
        admin.fill("#id_email", "sam@hospital.test")
        admin.select_option("#id_role", "staff")
        admin.select_option("#id_department", label="Radiology")
        submit(admin, "Create user")
        staff_password = admin.locator("#one-time-password").inner_text().strip()
        assert OTP_PATTERN.match(staff_password), staff_password
        browser.screenshot(admin, "user-created")
        admin.get_by_role("link", name="Users").click()
        expect(admin.get_by_role("link", name="sam.staff")).to_be_visible()
        browser.screenshot(admin, "users")

        # 6. The new user signs in (own browser context), chooses a password and creates an API key.
        staff = browser.new_page("staff")
        staff.goto("/login/")
        staff.fill("#id_username", "sam.staff")
        staff.fill("#id_password", staff_password)
        submit(staff, "Sign in")
        expect_path(staff, "/password/")
        staff.fill("#id_old_password", staff_password)
        staff.fill("#id_new_password", STAFF_PASSWORD)
        staff.fill("#id_new_password_again", STAFF_PASSWORD)
        submit(staff, "Save password")
        expect_path(staff, "/")
        staff.get_by_role("link", name="API keys").click()
        expect_path(staff, "/keys/")
        staff.fill("#id_name", "dictation tool")
        submit(staff, "Create key")
        api_key = staff.locator("#api-key").inner_text().strip()
        match = re.fullmatch(r"enc_([A-Za-z0-9]+)_([A-Za-z0-9_-]+)", api_key)
        assert match, api_key
        prefix = match.group(1)
        browser.screenshot(staff, "key-created")

        # Shown once: the key list has the prefix only.
        staff.goto("/keys/")
        listing = staff.content()
        assert prefix in listing
        assert api_key not in listing
        assert match.group(2) not in listing
        browser.screenshot(staff, "keys-after-reload")

        # Staff cannot open the audit trail: a page that says so, with its code.
        refused = staff.goto("/audit/")
        assert refused.status == 403
        assert staff.get_by_role("alert").get_attribute("data-code") == "access.role"
        browser.screenshot(staff, "refused")

        # 7. The admin finds all of it on the audit page, filtering through htmx.
        admin.get_by_role("link", name="Audit").click()
        expect_path(admin, "/audit/")
        browser.screenshot(admin, "audit")
        admin.fill("#id_action", "apikey.create")
        submit(admin, "Filter")
        rows = admin.locator("#audit-rows tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("sam.staff")
        row = rows.first.inner_text()
        assert "apikey.create" in row
        assert "Radiology" in row
        assert "action=apikey.create" in admin.url  # hx-push-url kept the filter in the address bar
        browser.screenshot(admin, "audit-apikey-filter")

        admin.fill("#id_action", "")
        admin.fill("#id_actor", "ann.admin")
        submit(admin, "Filter")
        expect(admin.locator("#audit-rows")).to_contain_text("department.create")
        expect(admin.locator("#audit-rows")).not_to_contain_text("apikey.create")
        actions = admin.locator("#audit-rows tbody tr td:nth-child(5)").all_inner_texts()
        for action in ("auth.login", "mfa.enrol", "user.password_change", "department.create", "user.create"):
            assert action in actions, (action, actions)
        browser.screenshot(admin, "audit-actor-filter")

        # 8. Seal the trail with the real `enclavectl audit seal`; the verify page then checks it.
        sealed = enclavectl(console_server, "audit", "seal")
        assert sealed.returncode == 0, sealed.stderr
        admin.get_by_role("link", name="Verify the chain").click()
        expect_path(admin, "/audit/verify/")
        verdict = admin.locator(".alert")
        assert verdict.get_attribute("data-code") == "audit.intact"
        expect(verdict).to_contain_text("chain intact")
        browser.screenshot(admin, "audit-verify")

        # htmx came from the appliance itself and worked under the CSP.
        assert admin.evaluate("typeof window.htmx") == "object"
        assert f"{base}/static/console/htmx.min.js" in browser.requests
        assert browser.htmx_requests, "the audit filter did not go through htmx"
        assert all(url.startswith(f"{base}/") or url.startswith("data:") for url in browser.requests), [
            url for url in browser.requests if not url.startswith(base)
        ]
        assert browser.csp_violations() == []
        assert browser.page_errors == []

        # The check above can fail: an inline script (what an XSS would inject) is refused and reported.
        with pytest.raises(PlaywrightError, match="Content Security Policy"):
            admin.add_script_tag(content="window.enclaveInjected = true")
        assert admin.evaluate("window.enclaveInjected === undefined")
        assert any("inline script" in line for line in browser.csp_violations()), browser.console

    # What the pages claimed is what the database holds.
    admin_user = User.objects.get(username="ann.admin")
    assert not admin_user.must_change_password
    assert admin_user.check_password(ADMIN_PASSWORD)
    radiology = Department.objects.get(name="Radiology")
    assert radiology.weight == 3
    staff_user = User.objects.get(username="sam.staff")
    assert (staff_user.role, staff_user.department, staff_user.email) == (
        Role.STAFF,
        radiology,
        "sam@hospital.test",
    )
    assert staff_user.check_password(STAFF_PASSWORD)
    key = ApiKey.objects.get(prefix=prefix)
    assert (key.user, key.department, key.name, key.digest) == (
        staff_user,
        radiology,
        "dictation tool",
        key_digest(api_key),
    )
    assert AuditEvent.objects.filter(action="mfa.enrol", actor="ann.admin").count() == 1
    assert [path.stat().st_size > 0 for path in browser.shots] == [True] * 14
