"""A staff member's conversations. Writes go through mgmt.chat.services (audited, never the content)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from mgmt.accounts.models import User


class Conversation(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="conversations")
    alias = models.SlugField(max_length=64)
    title = models.CharField(max_length=120)
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-updated", "-id"]

    def __str__(self) -> str:
        return self.title


class Message(models.Model):
    ROLES = (("user", "user"), ("assistant", "assistant"))

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=ROLES)
    content = models.TextField()
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return f"{self.role} message {self.pk}"
