"""Directory (LDAP / Active Directory) settings from the environment. Off unless ENCLAVE_LDAP_URI is set.

ENCLAVE_LDAP_URI              ldap://dc1.hospital.local or ldaps://...
ENCLAVE_LDAP_BIND_DN          service account DN (ENCLAVE_LDAP_BIND_PASSWORD or ..._FILE for its password)
ENCLAVE_LDAP_USER_BASE        where users are searched, e.g. ou=people,dc=hospital,dc=local
ENCLAVE_LDAP_USER_FILTER      default (uid=%(user)s); Active Directory: (sAMAccountName=%(user)s)
ENCLAVE_LDAP_GROUP_BASE       where groups are searched
ENCLAVE_LDAP_GROUP_TYPE       groupOfNames (default) or activedirectory (nested AD groups)
ENCLAVE_LDAP_START_TLS        1 to upgrade ldap:// with StartTLS
ENCLAVE_LDAP_CA_FILE          PEM file of the CA(s) that signed the directory's certificate (an internal CA,
                              typically); without it the system's trust store is used. The certificate is
                              always verified, for StartTLS and ldaps:// alike.
ENCLAVE_LDAP_MAPPING          YAML file mapping group DNs to roles and departments (see mgmt/accounts/ldap.py)

settings.py star-imports the values of directory_settings() taken at start-up. The function is public so
that the tests build the settings from the same environment variables production reads.
"""

from __future__ import annotations

from pathlib import Path
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
    start_tls = env_bool("ENCLAVE_LDAP_START_TLS", False)
    plaintext = values["AUTH_LDAP_SERVER_URI"].lower().startswith("ldap://") and not start_tls
    if plaintext and env_bool("ENCLAVE_PRODUCTION", False) and not env_bool("ENCLAVE_LDAP_ALLOW_PLAINTEXT", False):
        raise SettingError(
            "ENCLAVE_LDAP_URI is plain ldap:// without StartTLS: directory passwords would cross the network in the "
            "clear. Use ldaps://, or set ENCLAVE_LDAP_START_TLS=1 (ENCLAVE_LDAP_ALLOW_PLAINTEXT=1 to override)."
        )
    ca_file = env_str("ENCLAVE_LDAP_CA_FILE", "")
    if ca_file and not Path(ca_file).is_file():
        raise SettingError(f"ENCLAVE_LDAP_CA_FILE={ca_file!r} is not a readable file")
    options: dict[int, Any] = {ldap.OPT_NETWORK_TIMEOUT: 5, ldap.OPT_TIMEOUT: 10, ldap.OPT_REFERRALS: 0}
    options[ldap.OPT_X_TLS_REQUIRE_CERT] = ldap.OPT_X_TLS_DEMAND
    if ca_file:
        options[ldap.OPT_X_TLS_CACERTFILE] = ca_file
    options[ldap.OPT_X_TLS_NEWCTX] = 0  # last: builds the TLS context from the options above
    values.update(
        AUTH_LDAP_BIND_DN=env_str("ENCLAVE_LDAP_BIND_DN", ""),
        AUTH_LDAP_BIND_PASSWORD=env_str("ENCLAVE_LDAP_BIND_PASSWORD", ""),
        AUTH_LDAP_START_TLS=start_tls,
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
        AUTH_LDAP_CONNECTION_OPTIONS=options,
    )
    return values


_values = directory_settings()
globals().update(_values)
__all__ = sorted(_values)  # what settings.py's star import takes: the settings, not this module's helpers
