"""Issue 3's clinician: the staff Chat page in Chromium, relayed by the console (gunicorn) to the gateway
(gunicorn ASGI) with the console session, answered by the real vLLM CPU engine (tiny fixture model).
Screenshots land in test-artifacts/screenshots/test_chat_page_streams_refuses_and_deletes/."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from mgmt.audit.models import AuditEvent
from mgmt.chat.models import Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.engine]

PASSWORD = "Night shift on ward seven 93"
# About 40 pages: far beyond the fixture model's 2048-token context.
DISCHARGE_SUMMARY = "\n".join(f"Day {n}: vitals stable, wound clean, continue current medication." for n in range(1600))


@pytest.fixture
def chat_gateway(world, engine_route, gateway):
    world.nurse.set_password(PASSWORD)
    world.nurse.must_change_password = False
    world.nurse.save()
    return gateway()


@pytest.fixture
def console_server_env(chat_gateway) -> dict[str, str]:
    return {"ENCLAVE_GATEWAY_URL": chat_gateway.url, "ENCLAVE_CHAT_MAX_TOKENS": "16"}


def test_chat_page_streams_refuses_and_deletes(world, chromium, console_server, chat_gateway):
    assert len(DISCHARGE_SUMMARY.encode()) > 100_000
    with chromium() as browser:
        page = browser.new_page("nurse")
        page.goto("/login/")
        page.fill("#id_username", "nina.nurse")
        page.fill("#id_password", PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("link", name="Chat").click()
        page.wait_for_url(re.compile(r"/chat/$"))
        assert page.locator("#alias option").all_inner_texts() == ["default"]  # only her department's routes
        page.select_option("#alias", "default")
        page.get_by_role("button", name="New conversation").click()
        page.wait_for_url(re.compile(r"/chat/\d+/$"))

        # The 40-page summary: the engine's context is too small, and the page says so with the code.
        page.fill("#chat-text", DISCHARGE_SUMMARY)
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#chat-error")).to_have_attribute("data-code", "context_length_exceeded", timeout=120_000)
        expect(page.locator("#chat-log .msg")).to_have_count(0)  # refused: nothing stored, nothing shown
        browser.screenshot(page, "context-too-long")

        # A short question streams a real answer from the engine through the gateway.
        page.fill("#chat-text", "Summarise: patient stable, discharged home.")
        page.get_by_role("button", name="Send").click()
        answer = page.locator("#chat-log .msg.assistant")
        expect(answer).to_have_attribute("data-done", "true", timeout=120_000)
        expect(page.locator("#chat-error")).to_be_hidden()
        assert int(answer.get_attribute("data-chunks") or 0) >= 2  # arrived in pieces
        streamed = answer.text_content() or ""
        assert streamed.strip()
        browser.screenshot(page, "answer-streamed")

        page.reload()  # stored: the conversation shows both messages after a reload
        expect(page.locator("#chat-log .msg")).to_have_count(2)
        page.get_by_role("button", name="Delete conversation").click()
        page.wait_for_url(re.compile(r"/chat/$"))
        expect(page.locator(".conversations")).to_contain_text("No conversations yet")
        browser.screenshot(page, "deleted")
        assert browser.page_errors == [] and browser.csp_violations() == []

    assert not Conversation.objects.exists() and not Message.objects.exists()
    assert AuditEvent.objects.filter(action="chat.create", actor="nina.nurse").count() == 1
    assert AuditEvent.objects.get(action="chat.delete").data == {"messages": 2}
    codes = list(AuditEvent.objects.filter(action="gateway.request").values_list("data__code", flat=True))
    assert "context_length_exceeded" in codes
    assert all("Day 1:" not in str(e.data) for e in AuditEvent.objects.all())  # no content in the audit trail
