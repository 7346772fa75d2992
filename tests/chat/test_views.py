"""Refusals of /chat/ before anything reaches the engine: each a stable code, nothing stored."""

from __future__ import annotations

import pytest

from mgmt.chat.models import Conversation, Message
from mgmt.chat.services import do_create_conversation
from mgmt.routing.models import Route
from mgmt.routing.services import TargetSpec, do_create_deployment, do_create_model, do_set_route
from tests.fixtures.personas import verified_client
from tests.fixtures.slapd import free_port


@pytest.fixture
def chat(personas, settings):
    model = do_create_model("m", served_name="m", actor=None)
    deployment = do_create_deployment(
        "cpu-1", model=model, kind="vllm-cpu", endpoint="http://127.0.0.1:9", max_context=2048, actor=None
    )
    do_set_route(personas.radiology, "default", [TargetSpec(deployment)], actor=None)
    settings.ENCLAVE_GATEWAY_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    conversation = do_create_conversation(personas.staff, "default")
    return verified_client(personas.staff), conversation


def _code(response) -> str:
    return response.json()["error"]["code"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "status", "code"),
    [
        ("   ", 400, "chat.empty_message"),
        ("é" * (512 * 1024 + 1), 413, "chat.message_too_large"),
        ("Hello", 502, "chat.gateway_unavailable"),
    ],
)
def test_send_refusals(chat, text, status, code):
    client, conversation = chat
    response = client.post(f"/chat/{conversation.pk}/send/", {"text": text})
    assert (response.status_code, _code(response)) == (status, code)
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_alias_removed_from_the_department_is_refused_on_send(chat):
    client, conversation = chat
    Route.objects.all().delete()
    response = client.post(f"/chat/{conversation.pk}/send/", {"text": "Hello"})
    assert (response.status_code, _code(response)) == (403, "chat.alias_not_allowed")
    page = client.post("/chat/", {"alias": "default"})
    assert page.status_code == 400 and b'data-code="chat.alias_not_allowed"' in page.content
    assert Conversation.objects.count() == 1 and not Message.objects.exists()


@pytest.mark.django_db
def test_someone_elses_conversation_is_not_found(chat, personas):
    _, conversation = chat
    other = verified_client(personas.other_staff)
    assert other.get(f"/chat/{conversation.pk}/").status_code == 404
    assert other.post(f"/chat/{conversation.pk}/delete/").status_code == 404
    assert Conversation.objects.filter(pk=conversation.pk).exists()


@pytest.mark.django_db
def test_no_department_no_chat(personas):
    assert personas.auditor.department is None
    page = verified_client(personas.auditor).get("/chat/")
    assert page.status_code == 400 and b'data-code="chat.no_department"' in page.content
