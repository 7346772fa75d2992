"""The append-only audit trail. Rows are written by mgmt.audit.services.record_event only.

A database trigger refuses UPDATE and DELETE on these tables (see migration 0002); the sealer chains
events into AuditSeal and signs AuditCheckpoint rows, so changes made behind the application's back
(with the trigger disabled) are caught by verify.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Outcome(models.TextChoices):
    OK = "ok", "ok"
    DENIED = "denied", "denied"
    ERROR = "error", "error"


class AuditEvent(models.Model):
    id = models.BigAutoField(primary_key=True)
    ts = models.DateTimeField(default=timezone.now, db_index=True)
    # Plain values, not foreign keys: the trail must outlive and never block changes to what it describes.
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor = models.CharField(max_length=150, blank=True, db_index=True)
    department = models.CharField(max_length=100, blank=True, db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.OK)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=128, blank=True)
    ip = models.CharField(max_length=45, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "audit_event"
        ordering = ["-id"]
        indexes = [
            # Auditors filter by department and action (or an action prefix) together.
            models.Index(fields=["department", "action"], name="audit_event_dept_action"),
            models.Index(fields=["actor", "action"], name="audit_event_actor_action"),
        ]

    def __str__(self) -> str:
        return f"#{self.id} {self.action} by {self.actor or 'system'} ({self.outcome})"


class AuditSeal(models.Model):
    """h_seq for the event sealed at position seq of the chain. No foreign key: a deleted event must
    leave its seal behind so that verify can name it."""

    seq = models.BigIntegerField(primary_key=True)
    event_id = models.BigIntegerField(unique=True)
    hash = models.CharField(max_length=64)

    class Meta:
        db_table = "audit_seal"

    def __str__(self) -> str:
        return f"seal {self.seq} (event {self.event_id})"


class AuditCheckpoint(models.Model):
    seq = models.BigIntegerField(unique=True)
    event_id = models.BigIntegerField()
    hash = models.CharField(max_length=64)
    signed_at = models.CharField(max_length=32)
    key_id = models.CharField(max_length=16)
    signature = models.CharField(max_length=128)

    class Meta:
        db_table = "audit_checkpoint"
        ordering = ["-seq"]

    def __str__(self) -> str:
        return f"checkpoint at seq {self.seq}, signed {self.signed_at} by {self.key_id}"
