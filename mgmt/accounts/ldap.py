from django_auth_ldap.backend import LDAPBackend


class EnclaveLDAPBackend(LDAPBackend):
    pass
