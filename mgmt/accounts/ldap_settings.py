"""Directory (LDAP / Active Directory) settings from the environment. Off unless ENCLAVE_LDAP_URI is set.

ENCLAVE_LDAP_URI              ldap://dc1.hospital.local or ldaps://...
ENCLAVE_LDAP_BIND_DN          service account DN (ENCLAVE_LDAP_BIND_PASSWORD or ..._FILE for its password)
ENCLAVE_LDAP_USER_BASE        where users are searched, e.g. ou=people,dc=hospital,dc=local
ENCLAVE_LDAP_USER_FILTER      default (uid=%(user)s); Active Directory: (sAMAccountName=%(user)s)
ENCLAVE_LDAP_GROUP_BASE       where groups are searched
ENCLAVE_LDAP_GROUP_TYPE       groupOfNames (default) or activedirectory (nested AD groups)
ENCLAVE_LDAP_START_TLS        1 to upgrade ldap:// with StartTLS
ENCLAVE_LDAP_MAPPING          YAML file mapping group DNs to roles and departments (see mgmt/accounts/ldap.py)

settings.py star-imports the values of directory_settings() taken at start-up. The function is public so
that the tests build the settings from the same environment variables production reads.
"""

from __future__ import annotations

from typing import Any

from mgmt.env import SettingError, env_bool, env_str

GROUP_TYPES = ("groupOfNames", "activedirectory")


def directory_settings() -> dict[str, Any]:
    """The AUTH_LDAP_* settings (and ENCLAVE_LDAP_MAPPING) for the current environment."""
    values: dict[str, Any] = {
        "AUTH_LDAP_SERVER_URI": env_str("ENCLAVE_LDAP_URI", ""),
        "ENCLAVE_LDAP_MAPPING": env_str("ENCLAVE_LDAP_MAPPING", ""),
    }
    if not values["AUTH_LDAP_SERVER_URI"]:
        return values
    import ldap
    from django_auth_ldap.config import GroupOfNamesType, LDAPSearch, NestedActiveDirectoryGroupType

    group_type = env_str("ENCLAVE_LDAP_GROUP_TYPE", "groupOfNames")
    if group_type not in GROUP_TYPES:
        raise SettingError(f"ENCLAVE_LDAP_GROUP_TYPE={group_type!r} must be one of {', '.join(GROUP_TYPES)}")
    values.update(
        AUTH_LDAP_BIND_DN=env_str("ENCLAVE_LDAP_BIND_DN", ""),
        AUTH_LDAP_BIND_PASSWORD=env_str("ENCLAVE_LDAP_BIND_PASSWORD", ""),
        AUTH_LDAP_START_TLS=env_bool("ENCLAVE_LDAP_START_TLS", False),
        AUTH_LDAP_USER_SEARCH=LDAPSearch(
            env_str("ENCLAVE_LDAP_USER_BASE"),
            ldap.SCOPE_SUBTREE,
            env_str("ENCLAVE_LDAP_USER_FILTER", "(uid=%(user)s)"),
        ),
        AUTH_LDAP_GROUP_SEARCH=LDAPSearch(env_str("ENCLAVE_LDAP_GROUP_BASE"), ldap.SCOPE_SUBTREE, "(objectClass=*)"),
        AUTH_LDAP_GROUP_TYPE=(
            NestedActiveDirectoryGroupType() if group_type == "activedirectory" else GroupOfNamesType()
        ),
        AUTH_LDAP_USER_ATTR_MAP={"first_name": "givenName", "last_name": "sn", "email": "mail"},
        AUTH_LDAP_ALWAYS_UPDATE_USER=True,
        AUTH_LDAP_FIND_GROUP_PERMS=False,
        AUTH_LDAP_CACHE_TIMEOUT=0,
        AUTH_LDAP_CONNECTION_OPTIONS={
            ldap.OPT_NETWORK_TIMEOUT: 5,
            ldap.OPT_TIMEOUT: 10,
            ldap.OPT_REFERRALS: 0,
        },
    )
    return values


_values = directory_settings()
globals().update(_values)
__all__ = sorted(_values)  # what settings.py's star import takes: the settings, not this module's helpers
