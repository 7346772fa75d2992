"""Writes for staff chat. Conversation create/delete and retention are audited in the same transaction;
the audit data never holds message content (titles included)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from appliance.policies import load_policy
from mgmt.accounts.models import User
from mgmt.audit.services import record_event
from mgmt.routing.models import Route

from .models import Conversation, Message

__all__ = [
    "MAX_MESSAGE_BYTES",
    "ChatError",
    "allowed_aliases",
    "check_message",
    "do_add_message",
    "do_create_conversation",
    "do_delete_conversation",
    "do_purge_expired",
]

MAX_MESSAGE_BYTES = 1024 * 1024


class ChatError(Exception):
    """A refused chat action. `code` is stable; `status` is the HTTP status the console answers with."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def allowed_aliases(user: User) -> list[str]:
    """The aliases the user's department has routes for (none without a department)."""
    if user.department_id is None:
        return []
    return sorted(Route.objects.filter(department_id=user.department_id).values_list("alias", flat=True))


def check_alias(user: User, alias: str) -> str:
    if alias not in allowed_aliases(user):
        raise ChatError("chat.alias_not_allowed", f"Your department has no route for the alias “{alias}”.", 403)
    return alias


def check_message(text: str) -> str:
    if not text.strip():
        raise ChatError("chat.empty_message", "Type a message first.")
    if "\x00" in text:  # PostgreSQL text cannot hold it: the message and its answer could not be stored
        raise ChatError("chat.bad_character", "The message contains a NUL character; remove it and send again.")
    if len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
        raise ChatError("chat.message_too_large", "A message may be at most 1 MiB.", 413)
    return text


def do_create_conversation(user: User, alias: str, *, request: Any = None) -> Conversation:
    check_alias(user, alias)
    with transaction.atomic():
        conversation = Conversation.objects.create(user=user, alias=alias, title="New conversation")
        record_event(
            "chat.create",
            actor=user,
            department=user.department,
            target_type="conversation",
            target_id=str(conversation.pk),
            data={"alias": alias},
            request=request,
        )
    return conversation


def do_add_message(conversation: Conversation, role: str, content: str) -> Message:
    """Not audited here: the gateway audits every request it serves (without content)."""
    with transaction.atomic():
        message = Message.objects.create(conversation=conversation, role=role, content=content)
        fields = {"updated": message.created}
        if role == "user" and conversation.title == "New conversation":
            fields["title"] = " ".join(content.split())[:60] or conversation.title
        Conversation.objects.filter(pk=conversation.pk).update(**fields)
    return message


def do_delete_conversation(conversation: Conversation, *, actor: User, request: Any = None) -> None:
    with transaction.atomic():
        conversation_id = str(conversation.pk)
        count = conversation.messages.count()
        conversation.delete()  # messages go with it (on_delete=CASCADE)
        record_event(
            "chat.delete",
            actor=actor,
            department=actor.department,
            target_type="conversation",
            target_id=conversation_id,
            data={"messages": count},
            request=request,
        )


def do_purge_expired(*, days: int | None = None) -> int:
    """Delete conversations not used for `chat_history_days` (policies/retention.yaml). Returns how many."""
    if days is None:
        days = int(load_policy(settings.POLICY_DIR, "retention")["chat_history_days"])
    cutoff = timezone.now() - timedelta(days=days)
    with transaction.atomic():
        expired = Conversation.objects.filter(updated__lt=cutoff)
        count = expired.count()
        expired.delete()
        record_event("chat.retention", actor=None, data={"deleted": count, "days": days})
    return count
