"""Names as long as the console takes them (100 characters, no space) wrap inside their cells: the pages an admin
and an auditor read never grow wider than the window (a long department name pushed the audit table past it)."""

from __future__ import annotations

import pyotp
import pytest

from mgmt.accounts.models import Role
from mgmt.accounts.services import do_create_department, do_create_user
from tests.browser.test_console_flow import ADMIN_PASSWORD, expect_path, submit

pytestmark = pytest.mark.browser

LONG = "R" * 100  # the longest department name the console takes


def test_a_long_unbroken_name_wraps_and_no_page_is_wider_than_the_window(chromium, console_server) -> None:
    _, otp = do_create_user("ann.admin", role=Role.APPLIANCE_ADMIN, department=None, actor=None)
    department = do_create_department(LONG, weight=1, actor=None)  # audited as department.create, with its name
    do_create_user("rita.rad", role=Role.STAFF, department=department, actor=None)  # listed with it on /users/
    with chromium() as browser:
        admin = browser.new_page("admin")
        admin.goto("/login/")
        admin.fill("#id_username", "ann.admin")
        admin.fill("#id_password", otp)
        submit(admin, "Sign in")
        expect_path(admin, "/mfa/enrol/")
        admin.fill("#id_token", pyotp.TOTP(admin.locator("#totp-secret").inner_text().strip()).now())
        submit(admin, "Confirm")
        expect_path(admin, "/password/")
        admin.fill("#id_old_password", otp)
        admin.fill("#id_new_password", ADMIN_PASSWORD)
        admin.fill("#id_new_password_again", ADMIN_PASSWORD)
        submit(admin, "Save password")
        expect_path(admin, "/")
        # Shown in a table on the first three; on the routing page in the new route's department list.
        for path in ("/audit/", "/departments/", "/users/", "/routing/"):
            admin.goto(path)
            if path != "/routing/":
                assert admin.get_by_text(LONG).first.is_visible()
            widths = admin.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            browser.screenshot(admin, path.strip("/"))
            assert widths[0] <= widths[1], f"{path} is {widths[0]} px wide in a {widths[1]} px window"
