"""A directory auditor signs in through Chromium to a gunicorn configured only by ENCLAVE_LDAP_* variables.

tests/ldap drives the login view in-process; this proves the production path end to end: environment
-> mgmt.accounts.ldap_settings -> django-auth-ldap in a real server process -> the real slapd.
"""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import expect

from mgmt.accounts.models import Role, User
from mgmt.audit.models import AuditEvent
from tests.fixtures.slapd import PEOPLE_ENTRIES, SlapdServer, directory_env

pytestmark = pytest.mark.browser


@pytest.fixture
def console_server_env(slapd_server: SlapdServer, tmp_path: Path) -> dict[str, str]:
    return directory_env(slapd_server, tmp_path)


def test_directory_auditor_signs_in_and_enrols_totp(chromium, console_server) -> None:
    password = PEOPLE_ENTRIES["ava.browser"][2]
    with chromium() as browser:
        page = browser.new_page("auditor")
        page.goto("/login/")
        page.fill("#id_username", "ava.browser")
        page.fill("#id_password", "not my directory password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_attribute("data-code", "auth.bad_credentials")
        browser.screenshot(page, "wrong-password")

        page.fill("#id_password", password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/mfa/enrol/")
        secret = page.locator("#totp-secret").inner_text().strip()
        page.fill("#id_token", pyotp.TOTP(secret).now())
        page.get_by_role("button", name="Confirm").click()
        page.wait_for_url(lambda url: url.endswith("/"))  # no password change: the directory owns it
        expect(page.locator("header .who")).to_contain_text("ava.browser · Auditor")

        page.get_by_role("link", name="Audit").click()
        page.fill("#id_actor", "")
        page.fill("#id_action", "user.directory_sync")
        page.get_by_role("button", name="Filter").click()
        rows = page.locator("#audit-rows tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("ava.browser")
        browser.screenshot(page, "audit-directory-sync")
        assert browser.csp_violations() == []
        assert browser.page_errors == []

    user = User.objects.get(username="ava.browser")
    assert (user.source, user.role, user.department, user.email) == (
        "ldap",
        Role.AUDITOR,
        None,
        "ava.browser@hospital.test",
    )
    assert not user.has_usable_password()
    actions = list(AuditEvent.objects.filter(actor="ava.browser").order_by("id").values_list("action", "data"))
    assert actions == [
        ("auth.login_failed", {"reason": "unknown_user"}),
        ("auth.login", {"source": "ldap"}),
        ("mfa.enrol", {}),
    ]
