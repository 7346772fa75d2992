"""People, departments and API keys. Writes go through mgmt.accounts.services, never .save() elsewhere."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone


class Role(models.TextChoices):
    APPLIANCE_ADMIN = "appliance_admin", "Appliance admin"
    DEPARTMENT_ADMIN = "department_admin", "Department admin"
    STAFF = "staff", "Staff"
    AUDITOR = "auditor", "Auditor"


# Roles that must use a second factor (TOTP) before any page beyond enrolment.
MFA_REQUIRED_ROLES = frozenset({Role.APPLIANCE_ADMIN, Role.DEPARTMENT_ADMIN, Role.AUDITOR})


class Department(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    # Share of engine capacity under saturation (weighted fair queuing); no quotas, no budgets.
    weight = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    role = models.CharField(max_length=32, choices=Role.choices, default=Role.STAFF)
    department = models.ForeignKey(Department, null=True, blank=True, on_delete=models.PROTECT, related_name="members")
    # Set for a password handed out once (first admin, admin reset): the user must choose a new one.
    must_change_password = models.BooleanField(default=False)
    # "local" or "ldap": directory users never get a local password.
    source = models.CharField(max_length=16, default="local")

    class Meta:
        ordering = ["username"]

    @property
    def needs_mfa(self) -> bool:
        return self.role in MFA_REQUIRED_ROLES

    def __str__(self) -> str:
        return self.username


class ApiKey(models.Model):
    """A personal API key. Only a SHA-256 digest is stored; the key itself is shown once.

    Keys carry 256 bits of randomness, so a fast hash is the right one: nothing to brute-force, and the
    gateway checks a key per request without Argon2's deliberate cost.
    """

    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="api_keys")
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def is_active(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"
