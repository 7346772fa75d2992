"""One row per requested update step (import, activate, rollback), claimed by a Celery worker."""

from __future__ import annotations

from django.conf import settings
from django.db import models

__all__ = ["ImportJob"]


class ImportJob(models.Model):
    class Kind(models.TextChoices):
        IMPORT = "import", "Import"
        ACTIVATE = "activate", "Activate"
        ROLLBACK = "rollback", "Rollback"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # True while queued or running, NULL after: the unique constraint allows one unfinished job at a time.
    active = models.BooleanField(null=True, default=True)
    bundle_path = models.CharField(max_length=1024, blank=True)
    release = models.CharField(max_length=64, blank=True)
    done_bytes = models.BigIntegerField(default=0)
    total_bytes = models.BigIntegerField(default=0)
    skipped_bytes = models.BigIntegerField(default=0)
    current_file = models.CharField(max_length=1024, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT)
    worker = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "updates_import_job"
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["active"], name="updates_one_unfinished_job")]

    def __str__(self) -> str:
        return f"{self.kind} {self.release or self.bundle_path} ({self.status})"

    @property
    def percent(self) -> float:
        return 100.0 * self.done_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def speed_mb_s(self) -> float:
        if not self.started_at or self.status != self.Status.RUNNING:
            return 0.0
        from django.utils import timezone

        elapsed = (timezone.now() - self.started_at).total_seconds()
        return (self.done_bytes - self.skipped_bytes) / elapsed / 1e6 if elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> int | None:
        speed = self.speed_mb_s * 1e6
        if speed <= 0:
            return None
        return int((self.total_bytes - self.done_bytes) / speed)

    @property
    def took_seconds(self) -> float | None:
        """How long an ended job ran (claimed to finished); None while it runs."""
        if not self.started_at or not self.finished_at:
            return None
        return (self.finished_at - self.started_at).total_seconds()
