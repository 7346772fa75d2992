"""Names as long as the console takes them (100 characters, no space) wrap inside their cells: the pages an admin
and an auditor read never grow wider than the window (a long department name pushed the audit table past it)."""

from __future__ import annotations

import pytest

from mgmt.accounts.models import Role
from mgmt.accounts.services import do_create_department
from tests.fixtures.personas import make_user, verified_client

pytestmark = pytest.mark.browser

LONG = "R" * 100  # the longest department name the console takes


def test_a_long_unbroken_name_wraps_and_no_page_is_wider_than_the_window(chromium, console_server, personas) -> None:
    department = do_create_department(LONG, weight=1, actor=personas.admin)  # audited with its name
    make_user("rita.rad", Role.STAFF, department)  # listed with it on /users/
    session_id = verified_client(personas.admin).cookies["sessionid"].value
    with chromium() as browser:
        admin = browser.new_page("admin")
        admin.context.add_cookies([{"name": "sessionid", "value": session_id, "url": console_server.base_url}])
        # Shown in a table on the first three; on the routing page in the new route's department list.
        for path in ("/audit/", "/departments/", "/users/", "/routing/"):
            admin.goto(path)
            if path != "/routing/":
                assert admin.get_by_text(LONG).first.is_visible()
            widths = admin.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            browser.screenshot(admin, path.strip("/"))
            assert widths[0] <= widths[1], f"{path} is {widths[0]} px wide in a {widths[1]} px window"
