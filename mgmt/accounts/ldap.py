"""Directory login: django-auth-ldap authenticates; group membership maps to role and department.

The mapping file (ENCLAVE_LDAP_MAPPING) is YAML:

    require_group: cn=enclave-users,ou=groups,dc=hospital,dc=local   # optional
    roles:            # checked in this order: first group the user is in wins; default staff
      appliance_admin: cn=enclave-admins,ou=groups,dc=hospital,dc=local
      auditor: cn=enclave-auditors,ou=groups,dc=hospital,dc=local
      department_admin: cn=enclave-dept-admins,ou=groups,dc=hospital,dc=local
    departments:      # first group the user is in wins
      Radiology: cn=radiology,ou=groups,dc=hospital,dc=local
      Emergency: cn=emergency,ou=groups,dc=hospital,dc=local

Rules (docs/decisions/0200-directory-login-rules.md):
- A username that belongs to a local account is never sent to the directory: local accounts (the
  break-glass appliance admin) keep working when the directory is down, their passwords never reach
  the directory server, and a directory entry with the same name cannot take the local account over.
- Only the entry's exact name (the value of the attribute in ENCLAVE_LDAP_USER_FILTER) signs in, not
  a variant the directory also matches (another case, fullwidth letters): each variant would have its
  own lockout counter and its own user row.
- Everything is decided before the user row is written: a person outside `require_group`, a staff
  member or department admin without a mapped department, or a deactivated account is refused and
  nothing changes.
- A refusal the person can act on is left on the request (`login_refusal`) for the login page to show
  with its stable code; an unreachable directory is `auth.directory_unavailable`, never a 500.
- Creating a directory user, and role or department changes found at login, are audited as
  user.directory_sync in the same transaction as the change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db import transaction
from django.dispatch import receiver
from django_auth_ldap.backend import LDAPBackend, ldap_error

from mgmt.audit.services import record_event

from .models import Department, Role, User

__all__ = ["DIRECTORY_REFUSALS", "EnclaveLDAPBackend", "LoginRefusal", "load_mapping", "login_refusal"]

ROLE_ORDER = (Role.APPLIANCE_ADMIN, Role.AUDITOR, Role.DEPARTMENT_ADMIN, Role.STAFF)
# The attributes the user search compares with the typed name: "uid" in (uid=%(user)s).
_LOGIN_ATTRIBUTE = re.compile(r"\(([A-Za-z][\w;-]*)=%\(user\)s\)")
_REFUSAL_ATTR = "enclave_login_refusal"


@dataclass(frozen=True)
class LoginRefusal:
    code: str
    status: int
    message: str


DIRECTORY_REFUSALS = {
    refusal.code: refusal
    for refusal in (
        LoginRefusal(
            "auth.directory_group",
            403,
            "Your directory account is not in the group allowed to use Enclave. Ask your IT team to add you to it.",
        ),
        LoginRefusal(
            "auth.directory_no_department",
            403,
            "Your directory account is in no department group known to Enclave, so it cannot be given a "
            "department. Ask your IT team to add you to your department's group.",
        ),
        LoginRefusal(
            "auth.directory_unavailable",
            503,
            "The directory server did not answer, so directory accounts cannot sign in right now "
            "(local accounts still can). Try again in a few minutes or tell your IT team.",
        ),
    )
}


def login_refusal(request: Any) -> LoginRefusal | None:
    """The directory refusal left on this request by the last authenticate() call, if any."""
    code = getattr(request, _REFUSAL_ATTR, None)
    return DIRECTORY_REFUSALS.get(code) if code else None


def _refuse(request: Any, code: str) -> None:
    assert code in DIRECTORY_REFUSALS
    if request is not None:
        setattr(request, _REFUSAL_ATTR, code)


@lru_cache(maxsize=4)
def load_mapping(path: str) -> dict[str, Any]:
    if not path:
        return {"roles": {}, "departments": {}, "require_group": None}
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    roles = {str(k): str(v).lower() for k, v in (document.get("roles") or {}).items()}
    unknown = set(roles) - set(Role.values)
    if unknown:
        raise ValueError(f"{path}: unknown roles {sorted(unknown)}")
    departments = {str(k): str(v).lower() for k, v in (document.get("departments") or {}).items()}
    require = document.get("require_group")
    return {
        "roles": roles,
        "departments": departments,
        "require_group": str(require).lower() if require else None,
    }


def _names_entry(username: str, attrs: Any) -> bool:
    """Whether `username` is, exactly, a value of an attribute the user search matched it against.

    A filter that names no such attribute ((uid=%(user)s) or (sAMAccountName=%(user)s) do) signs nobody in.
    """
    search = getattr(settings, "AUTH_LDAP_USER_SEARCH", None)
    names = {name.lower() for name in _LOGIN_ATTRIBUTE.findall(getattr(search, "filterstr", ""))}
    values = {value for key, found in (attrs or {}).items() if key.lower() in names for value in found}
    return username in values


@dataclass(frozen=True)
class _Placement:
    role: str
    department_name: str | None


def _placement(group_dns: set[str], mapping: dict[str, Any]) -> _Placement:
    role = next((r for r in ROLE_ORDER if mapping["roles"].get(r) in group_dns), Role.STAFF)
    department = next((name for name, dn in mapping["departments"].items() if dn in group_dns), None)
    return _Placement(role, department)


class EnclaveLDAPBackend(LDAPBackend):
    def authenticate(
        self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        if not getattr(settings, "AUTH_LDAP_SERVER_URI", "") or not username:
            return None
        if User.objects.filter(username__iexact=username.strip(), source="local").exists():
            return None  # a local account: ModelBackend's business, never the directory's
        self._request = request
        self._placement: _Placement | None = None
        self._built = False
        # One transaction for the user row and its audit event (the LDAP binds happen before any write).
        with transaction.atomic():
            return super().authenticate(request, username=username, password=password, **kwargs)

    def get_user(self, user_id: int) -> Any:
        user = super().get_user(user_id)
        # django-auth-ldap ignores is_active (ModelBackend does not): a deactivated user's session ends here.
        return user if user is not None and user.is_active else None

    def get_or_build_user(self, username: str, ldap_user: Any) -> tuple[Any, bool]:
        """Called after the directory accepted the password and before anything is written."""
        failed = type(ldap_user).AuthenticationFailed
        if not _names_entry(username, ldap_user.attrs):
            # The directory matches names by its own rules (any case, Unicode compatibility forms such as
            # fullwidth letters), so "RITA.RAD" finds rita.rad's entry. Only her exact uid signs her in: a
            # variant would have its own lockout counter (django-axes counts the typed name), its own user
            # row, or slip past the local-account check above. Checked first, so that no refusal below tells
            # a variant that its password was right.
            raise failed("the name differs from the directory entry's")
        mapping = load_mapping(settings.ENCLAVE_LDAP_MAPPING)
        groups = {dn.lower() for dn in ldap_user.group_dns}
        if mapping.get("require_group") and mapping["require_group"] not in groups:
            _refuse(self._request, "auth.directory_group")
            raise failed("not in the required group")
        placement = _placement(groups, mapping)
        if placement.role in {Role.STAFF, Role.DEPARTMENT_ADMIN} and placement.department_name is None:
            _refuse(self._request, "auth.directory_no_department")
            raise failed("no mapped department for a role that needs one")
        user, built = super().get_or_build_user(username, ldap_user)
        if not built and (user.source != "ldap" or not user.is_active):
            raise failed("local or deactivated account")
        if built:
            user.source = "ldap"
            user.role = placement.role
        self._placement, self._built = placement, built
        return user, built

    def authenticate_ldap_user(self, ldap_user: Any, password: str) -> Any:
        user = super().authenticate_ldap_user(ldap_user, password)
        if user is None or self._placement is None:
            return None
        self._sync(user, self._placement, created=self._built)
        return user

    @staticmethod
    def _sync(user: User, placement: _Placement, *, created: bool) -> None:
        department = None
        if placement.department_name:
            department = Department.objects.filter(name=placement.department_name).first()
            if department is None:
                from .services import do_create_department

                department = do_create_department(placement.department_name, actor=None)
        changes: dict[str, Any] = {}
        if created or user.role != placement.role:
            changes["role"] = [None if created else user.role, placement.role]
        if created or user.department_id != (department.pk if department else None):
            changes["department"] = [
                None if created or user.department is None else user.department.name,
                placement.department_name,
            ]
        if not changes:
            return
        user.role, user.department = placement.role, department
        user.must_change_password = False
        user.save(update_fields=["role", "department", "must_change_password"])
        record_event(
            "user.directory_sync",
            actor=None,
            department=department,
            target_type="user",
            target_id=user.pk,
            data={"username": user.username, "created": created, **changes},
        )


@receiver(ldap_error, sender=EnclaveLDAPBackend)
def _directory_unreachable(sender: Any, context: str, user: Any, request: Any = None, **kwargs: Any) -> None:
    _refuse(request, "auth.directory_unavailable")
