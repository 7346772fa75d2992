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

Role or department changes found at login are audited as user.directory_sync.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db import transaction
from django_auth_ldap.backend import LDAPBackend

from mgmt.audit.services import record_event

from .models import Department, Role

ROLE_ORDER = (Role.APPLIANCE_ADMIN, Role.AUDITOR, Role.DEPARTMENT_ADMIN, Role.STAFF)


@lru_cache(maxsize=4)
def load_mapping(path: str) -> dict[str, Any]:
    if not path:
        return {"roles": {}, "departments": {}}
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    roles = {str(k): str(v).lower() for k, v in (document.get("roles") or {}).items()}
    unknown = set(roles) - set(Role.values)
    if unknown:
        raise ValueError(f"{path}: unknown roles {sorted(unknown)}")
    departments = {str(k): str(v).lower() for k, v in (document.get("departments") or {}).items()}
    require = document.get("require_group")
    return {"roles": roles, "departments": departments, "require_group": str(require).lower() if require else None}


class EnclaveLDAPBackend(LDAPBackend):
    def authenticate(self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any) -> Any:
        if not getattr(settings, "AUTH_LDAP_SERVER_URI", ""):
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)

    def get_or_build_user(self, username: str, ldap_user: Any) -> tuple[Any, bool]:
        user, built = super().get_or_build_user(username, ldap_user)
        if built:
            user.source = "ldap"
        return user, built

    def authenticate_ldap_user(self, ldap_user: Any, password: str) -> Any:
        mapping = load_mapping(settings.ENCLAVE_LDAP_MAPPING)
        user = super().authenticate_ldap_user(ldap_user, password)
        if user is None:
            return None
        groups = {dn.lower() for dn in ldap_user.group_dns}
        if mapping.get("require_group") and mapping["require_group"] not in groups:
            return None
        role = next((r for r in ROLE_ORDER if mapping["roles"].get(r) in groups), Role.STAFF)
        department_name = next((name for name, dn in mapping["departments"].items() if dn in groups), None)
        self._sync(user, role, department_name)
        return user

    @staticmethod
    def _sync(user: Any, role: str, department_name: str | None) -> None:
        with transaction.atomic():
            department = None
            if department_name:
                department = Department.objects.filter(name=department_name).first()
                if department is None:
                    from .services import do_create_department

                    department = do_create_department(department_name, actor=None)
            changes: dict[str, Any] = {}
            if user.role != role:
                changes["role"] = [user.role, role]
            if user.department_id != (department.pk if department else None):
                changes["department"] = [user.department.name if user.department else None, department_name]
            if user.source != "ldap":
                changes["source"] = [user.source, "ldap"]
            if changes:
                user.role, user.department, user.source = role, department, "ldap"
                user.must_change_password = False
                user.set_unusable_password()
                user.save()
                record_event(
                    "user.directory_sync", actor=None, department=department, target_type="user",
                    target_id=user.pk, data={"username": user.username, **changes},
                )
