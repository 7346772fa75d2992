"""The Updates page in Debian's Chromium against gunicorn, with a real Celery worker doing the work:
the admin sees the bundle verified before anything is copied, clicks Import, watches the htmx
progress fragment poll until the job ends, then Activate, then Roll back to the factory image; screenshots in
test-artifacts/screenshots/."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from mgmt.updates.models import ImportJob
from tests.bundles.conftest import PAYLOAD
from tests.fixtures.personas import verified_client
from tests.updates.conftest import put_on_stick

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_import_and_activate_in_the_browser(
    media, celery_worker_process, console_server, chromium, personas, vendor_kit
):
    celery_worker_process(beat=False)
    payload = {**PAYLOAD, **{f"models/tiny/shard-{i}.safetensors": os.urandom(32 << 20) for i in range(3)}}
    put_on_stick(vendor_kit, media, payload, "2026Q3", 1)
    session_id = verified_client(personas.admin).cookies["sessionid"].value

    with chromium() as browser:
        page = browser.new_page("admin")
        page.context.add_cookies([{"name": "sessionid", "value": session_id, "url": console_server.base_url}])
        page.goto("/updates/")
        row = page.locator('tr[data-bundle="ENCLAVE-2026Q3"]')
        expect(row.locator('[data-code="bundle.verified"]')).to_be_visible()
        expect(row).to_contain_text("models")
        browser.screenshot(page, "bundle-found")

        page.get_by_test_id("import-ENCLAVE-2026Q3").click()
        job = page.locator("div.job")
        expect(job).to_have_attribute("data-status", "done", timeout=60_000)
        # the page reloads itself once the job ends (HX-Refresh), so the History is current too
        expect(page.get_by_role("heading", name="Requested step")).to_be_visible()
        expect(page.locator("section", has=page.get_by_role("heading", name="History"))).to_contain_text("Done")
        expect(job.get_by_test_id("percent")).to_have_text("100.0%")
        browser.screenshot(page, "imported")

        page.goto("/updates/")
        page.get_by_test_id("activate").click()
        expect(page.locator("div.job")).to_have_attribute("data-status", "done", timeout=60_000)
        page.goto("/updates/")
        expect(page.get_by_test_id("current-release")).to_have_text("2026Q3")
        browser.screenshot(page, "activated")

        # The first update can be undone: back to what the appliance shipped with.
        page.get_by_test_id("rollback").click()
        expect(page.locator("div.job")).to_have_attribute("data-status", "done", timeout=60_000)
        page.goto("/updates/")
        expect(page.get_by_test_id("current-release")).to_have_text("factory image")
        expect(page.get_by_test_id("rollback")).to_have_text("Roll back to 2026Q3")
        expect(page.get_by_test_id("last-outcome")).to_have_text("Rolled back: returned from 2026Q3 to factory image")
        browser.screenshot(page, "rolled-back")
        assert any("/updates/progress/?job=" in url for url in browser.htmx_requests)
        assert browser.page_errors == []
        assert browser.csp_violations() == []

    assert list(ImportJob.objects.order_by("id").values_list("kind", "status")) == [
        ("import", "done"),
        ("activate", "done"),
        ("rollback", "done"),
    ]
