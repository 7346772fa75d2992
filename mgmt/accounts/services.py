"""Every write to accounts goes through these functions. Each opens a transaction and writes its audit
event inside it (CONVENTIONS.md point 2). `actor` is the user doing it, or None for the system."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from mgmt.audit.services import record_event

from .errors import AccountError
from .models import ApiKey, Department, Role, User

__all__ = [
    "IssuedKey",
    "authenticate_api_key",
    "do_change_password",
    "do_create_api_key",
    "do_create_department",
    "do_create_user",
    "do_reset_password",
    "do_revoke_api_key",
    "do_set_active",
    "do_update_department",
    "do_update_user",
    "generate_one_time_password",
    "key_digest",
]

API_KEY_PREFIX = "enc_"
DEPARTMENT_NAME_MAX = 100  # Department.name and Department.slug hold this many characters
# The end of 9999-12-31 west of UTC is in year 10000 UTC: PostgreSQL stores it, but no Python datetime holds it,
# so every page listing such a key (and the gateway's key snapshot) would fail to read it back.
API_KEY_LATEST_EXPIRY = datetime(9999, 1, 1, tzinfo=UTC)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_one_time_password() -> str:
    # 4 groups of 5 from an unambiguous alphabet: ~100 bits, easy to read off a console screen.
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(4))


def do_create_department(name: str, *, weight: int = 1, actor: User | None, request: Any = None) -> Department:
    name = name.strip()
    slug = slugify(name)
    if not name or not slug:
        raise AccountError("department.name_required", "A department needs a name.")
    if len(name) > DEPARTMENT_NAME_MAX or len(slug) > DEPARTMENT_NAME_MAX:
        # The slug spells some characters out (ⅷ becomes "viii"): a name that fits can still make one too long.
        raise AccountError(
            "department.name_too_long",
            f"A department name is at most {DEPARTMENT_NAME_MAX} characters (ⅷ and the like count as several); "
            "choose a shorter one.",
        )
    if Department.objects.filter(slug=slug).exists() or Department.objects.filter(name__iexact=name).exists():
        raise AccountError("department.exists", f"A department named “{name}” already exists.")
    if weight < 1:
        raise AccountError("department.bad_weight", "The capacity weight must be 1 or more.")
    with transaction.atomic():
        department = Department.objects.create(name=name, slug=slug, weight=weight)
        record_event(
            "department.create",
            actor=actor,
            department=department,
            target_type="department",
            target_id=department.pk,
            data={"name": name, "weight": weight},
            request=request,
        )
    return department


def do_update_department(department: Department, *, weight: int, actor: User | None, request: Any = None) -> Department:
    if weight < 1:
        raise AccountError("department.bad_weight", "The capacity weight must be 1 or more.")
    with transaction.atomic():
        old = department.weight
        department.weight = weight
        department.save(update_fields=["weight"])
        record_event(
            "department.update",
            actor=actor,
            department=department,
            target_type="department",
            target_id=department.pk,
            data={"weight": [old, weight]},
            request=request,
        )
    return department


def _check_role_assignment(actor: User | None, role: str, department: Department | None) -> None:
    if role not in Role.values:
        raise AccountError("user.bad_role", f"Unknown role {role!r}.")
    if role in {Role.STAFF, Role.DEPARTMENT_ADMIN} and department is None:
        raise AccountError("user.department_required", "Staff and department admins belong to a department.")
    if actor is None or actor.role == Role.APPLIANCE_ADMIN:
        return
    if actor.role == Role.DEPARTMENT_ADMIN:
        if role != Role.STAFF or department is None or department.pk != actor.department_id:
            raise AccountError(
                "user.forbidden_role",
                "Department admins can only add staff to their own department.",
            )
        return
    raise AccountError("user.forbidden_role", "Your role cannot manage users.")


def do_create_user(
    username: str,
    *,
    role: str,
    department: Department | None,
    email: str = "",
    full_name: str = "",
    actor: User | None,
    request: Any = None,
    source: str = "local",
) -> tuple[User, str]:
    """Create a user with a one-time password (returned once; they must change it at first login)."""
    username = username.strip()
    if not username:
        raise AccountError("user.username_required", "A user needs a username.")
    if User.objects.filter(username__iexact=username).exists():
        raise AccountError("user.exists", f"A user named “{username}” already exists.")
    _check_role_assignment(actor, role, department)
    password = generate_one_time_password() if source == "local" else ""
    first, _, last = full_name.strip().partition(" ")
    with transaction.atomic():
        user = User(
            username=username,
            email=email,
            first_name=first[:150],
            last_name=last[:150],
            role=role,
            department=department,
            source=source,
            must_change_password=source == "local",
        )
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save()
        record_event(
            "user.create",
            actor=actor,
            department=department,
            target_type="user",
            target_id=user.pk,
            data={"username": username, "role": role, "source": source},
            request=request,
        )
    return user, password


def do_update_user(
    user: User, *, role: str, department: Department | None, actor: User | None, request: Any = None
) -> User:
    _check_role_assignment(actor, role, department)
    if actor is not None and actor.pk == user.pk and role != user.role:
        raise AccountError("user.self_role", "You cannot change your own role; ask another admin.")
    with transaction.atomic():
        changes = {}
        if user.role != role:
            changes["role"] = [user.role, role]
        if user.department_id != (department.pk if department else None):
            changes["department"] = [
                user.department.name if user.department else None,
                department.name if department else None,
            ]
        user.role = role
        user.department = department
        user.save(update_fields=["role", "department"])
        record_event(
            "user.update",
            actor=actor,
            department=department,
            target_type="user",
            target_id=user.pk,
            data={"username": user.username, **changes},
            request=request,
        )
    return user


def do_set_active(user: User, *, active: bool, actor: User | None, request: Any = None) -> User:
    if actor is not None and actor.pk == user.pk:
        raise AccountError("user.self_deactivate", "You cannot deactivate your own account.")
    with transaction.atomic():
        user.is_active = active
        user.save(update_fields=["is_active"])
        record_event(
            "user.activate" if active else "user.deactivate",
            actor=actor,
            department=user.department,
            target_type="user",
            target_id=user.pk,
            data={"username": user.username},
            request=request,
        )
    return user


def do_reset_password(user: User, *, actor: User | None, request: Any = None) -> str:
    if user.source != "local":
        raise AccountError("user.directory_managed", "This user's password is managed by the directory.")
    password = generate_one_time_password()
    with transaction.atomic():
        user.set_password(password)
        user.must_change_password = True
        user.save(update_fields=["password", "must_change_password"])
        record_event(
            "user.password_reset",
            actor=actor,
            department=user.department,
            target_type="user",
            target_id=user.pk,
            data={"username": user.username},
            request=request,
        )
    return password


def do_change_password(user: User, *, old: str, new: str, request: Any = None) -> None:
    if not user.check_password(old):
        with transaction.atomic():
            record_event(
                "user.password_change",
                actor=user,
                outcome="denied",
                data={"reason": "bad_old"},
                request=request,
            )
        raise AccountError("auth.bad_password", "The current password is wrong.")
    if old == new:
        raise AccountError("user.password_reused", "Choose a password different from the current one.")
    from django.core.exceptions import ValidationError

    try:
        validate_password(new, user)
    except ValidationError as exc:
        raise AccountError("user.weak_password", " ".join(exc.messages)) from exc
    with transaction.atomic():
        user.set_password(new)
        user.must_change_password = False
        user.save(update_fields=["password", "must_change_password"])
        record_event("user.password_change", actor=user, target_type="user", target_id=user.pk, request=request)


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str  # the full key string: shown once, never stored


def do_create_api_key(
    user: User,
    *,
    name: str,
    expires_at: datetime | None,
    actor: User | None,
    department: Department | None = None,
    request: Any = None,
) -> IssuedKey:
    department = department or user.department
    if department is None:
        raise AccountError("apikey.no_department", "API keys are bound to a department; this user has none.")
    if not name.strip():
        raise AccountError("apikey.name_required", "Give the key a name that says where it is used.")
    if expires_at is not None and expires_at <= timezone.now():
        raise AccountError("apikey.expiry_past", "The expiry date must be in the future.")
    if expires_at is not None and expires_at >= API_KEY_LATEST_EXPIRY:
        raise AccountError(
            "apikey.expiry_too_far", "Choose an expiry date before the year 9999, or none for a key that never expires."
        )
    prefix = secrets.token_hex(4)
    secret = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        key = ApiKey.objects.create(
            prefix=prefix,
            digest=key_digest(secret),
            user=user,
            department=department,
            name=name.strip(),
            expires_at=expires_at,
        )
        record_event(
            "apikey.create",
            actor=actor,
            department=department,
            target_type="apikey",
            target_id=key.pk,
            data={
                "prefix": prefix,
                "owner": user.username,
                "name": key.name,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
            request=request,
        )
    return IssuedKey(key, secret)


def do_revoke_api_key(key: ApiKey, *, actor: User | None, request: Any = None) -> ApiKey:
    if key.revoked_at is not None:
        raise AccountError("apikey.already_revoked", "This key is already revoked.")
    with transaction.atomic():
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        record_event(
            "apikey.revoke",
            actor=actor,
            department=key.department,
            target_type="apikey",
            target_id=key.pk,
            data={"prefix": key.prefix, "owner": key.user.username},
            request=request,
        )
    return key


def authenticate_api_key(secret: str, *, request: Any = None) -> ApiKey:
    """The reference check of an API key (the gateway does the same against its in-memory snapshot).

    Refusals are audited with the key's prefix, never the key itself.
    """
    key = None
    if secret.startswith(API_KEY_PREFIX) and len(secret) < 200:
        key = ApiKey.objects.select_related("user", "department").filter(digest=key_digest(secret)).first()
    if key is None:
        code, message = (
            "apikey.invalid",
            "This API key is not valid. Create one in the console under API keys.",
        )
    elif key.revoked_at is not None:
        code, message = "apikey.revoked", "This API key was revoked. Create a new one in the console."
    elif key.expires_at is not None and key.expires_at <= timezone.now():
        code, message = "apikey.expired", "This API key has expired. Create a new one in the console."
    elif not key.user.is_active:
        code, message = "apikey.user_inactive", "The owner of this API key is deactivated."
    else:
        return key
    with transaction.atomic():
        record_event(
            "apikey.refused",
            actor=key.user if key else None,
            department=key.department if key else None,
            outcome="denied",
            target_type="apikey",
            target_id=key.pk if key else "",
            data={"code": code, "prefix": key.prefix if key else secret[4:12]},
            request=request,
        )
    raise AccountError(code, message)
