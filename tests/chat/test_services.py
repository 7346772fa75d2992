"""Chat writes on the real PostgreSQL: audited without content, cascade on delete, retention by policy."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from mgmt.accounts.models import Role
from mgmt.accounts.services import do_create_department, do_create_user
from mgmt.audit.models import AuditEvent
from mgmt.chat.models import Conversation, Message
from mgmt.chat.services import (
    ChatError,
    check_message,
    do_add_message,
    do_create_conversation,
    do_delete_conversation,
    do_purge_expired,
)
from mgmt.chat.tasks import chat_retention_task
from mgmt.routing.services import TargetSpec, do_create_deployment, do_create_model, do_set_route

SECRET = "Patient Jane Roe, MRN 0042, discharged"


@pytest.fixture
def nurse(db):
    ward = do_create_department("Emergency", weight=1, actor=None)
    model = do_create_model("m", served_name="m", actor=None)
    deployment = do_create_deployment(
        "cpu-1", model=model, kind="vllm-cpu", endpoint="http://127.0.0.1:9", max_context=2048, actor=None
    )
    do_set_route(ward, "default", [TargetSpec(deployment)], actor=None)
    user, _ = do_create_user("nora.nurse", role=Role.STAFF, department=ward, actor=None)
    return user


def test_create_add_delete_audited_without_content(nurse):
    conversation = do_create_conversation(nurse, "default")
    do_add_message(conversation, "user", SECRET)
    do_add_message(conversation, "assistant", "Noted.")
    conversation.refresh_from_db()
    assert conversation.title == SECRET  # the first message names the conversation
    assert list(conversation.messages.values_list("role", flat=True)) == ["user", "assistant"]

    do_delete_conversation(conversation, actor=nurse)
    assert not Conversation.objects.exists() and not Message.objects.exists()
    events = {e.action: e for e in AuditEvent.objects.filter(action__startswith="chat.")}
    assert events["chat.create"].data == {"alias": "default"}
    assert events["chat.delete"].data == {"messages": 2}
    assert events["chat.delete"].department == "Emergency"
    assert all(SECRET not in str(e.data) and "Jane" not in str(e.data) for e in AuditEvent.objects.all())


def test_alias_without_a_route_is_refused_and_changes_nothing(nurse):
    with pytest.raises(ChatError) as refused:
        do_create_conversation(nurse, "reasoning")
    assert refused.value.code == "chat.alias_not_allowed"
    assert not Conversation.objects.exists()
    assert not AuditEvent.objects.filter(action="chat.create").exists()


@pytest.mark.parametrize(
    ("text", "code"),
    [("", "chat.empty_message"), ("  \n\t", "chat.empty_message"), ("x" * (1024 * 1024 + 1), "chat.message_too_large")],
)
def test_bad_messages_have_codes(text, code):
    with pytest.raises(ChatError) as refused:
        check_message(text)
    assert refused.value.code == code


def test_retention_deletes_only_expired_conversations(nurse):
    old = do_create_conversation(nurse, "default")
    do_add_message(old, "user", "old question")
    fresh = do_create_conversation(nurse, "default")
    Conversation.objects.filter(pk=old.pk).update(updated=timezone.now() - timedelta(days=31))
    Conversation.objects.filter(pk=fresh.pk).update(updated=timezone.now() - timedelta(days=29))

    assert chat_retention_task() == 1  # the Celery task, run in-process; policy default: 30 days
    assert list(Conversation.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert not Message.objects.filter(conversation_id=old.pk).exists()
    event = AuditEvent.objects.filter(action="chat.retention").get()
    assert event.data == {"deleted": 1, "days": 30} and event.actor == ""

    assert do_purge_expired(days=0) == 1  # a shorter policy removes the rest
    assert not Conversation.objects.exists()
