"""Directory login over StartTLS against a slapd that refuses anything but TLS (tests/fixtures/slapd.py).

The appliance verifies the directory's certificate against ENCLAVE_LDAP_CA_FILE (the hospital's internal
CA): a certificate from another CA, or a directory reached without TLS, is a clear refusal and nothing
is written.
"""

from __future__ import annotations

import pytest
from django.test import Client

from mgmt.accounts.models import Role, User
from mgmt.audit.models import AuditEvent
from mgmt.env import SettingError
from tests.fixtures.slapd import PEOPLE_ENTRIES, SlapdServer, directory_env, use_directory

from .test_ldap_login import error_code, sign_in

pytestmark = pytest.mark.django_db
UID = "rita.rad"


def tls_env(server: SlapdServer, tmp_path, **extra: str) -> dict[str, str]:
    assert server.tls is not None
    return {
        **directory_env(server, tmp_path),
        "ENCLAVE_LDAP_START_TLS": "1",
        "ENCLAVE_LDAP_CA_FILE": str(server.tls.ca),
        **extra,
    }


def test_starttls_with_the_directory_ca_signs_in(slapd_tls_server, settings, monkeypatch, tmp_path) -> None:
    use_directory(tls_env(slapd_tls_server, tmp_path), settings, monkeypatch)

    response = sign_in(Client(), UID, PEOPLE_ENTRIES[UID][2])

    assert response.status_code == 302
    user = User.objects.get(username=UID)
    assert (user.source, user.role, user.department.name) == ("ldap", Role.STAFF, "Radiology")


def test_certificate_from_another_ca_is_refused(slapd_tls_server, settings, monkeypatch, tmp_path) -> None:
    env = tls_env(slapd_tls_server, tmp_path, ENCLAVE_LDAP_CA_FILE=str(slapd_tls_server.tls.other_ca))
    use_directory(env, settings, monkeypatch)

    response = sign_in(Client(), UID, PEOPLE_ENTRIES[UID][2])

    assert response.status_code == 503
    assert error_code(response) == "auth.directory_unavailable"
    assert not User.objects.filter(username=UID).exists()
    [failed] = AuditEvent.objects.filter(action="auth.login_failed", actor=UID)
    assert failed.data == {"reason": "directory_unavailable"}


def test_plaintext_to_a_tls_only_directory_is_refused(slapd_tls_server, settings, monkeypatch, tmp_path) -> None:
    use_directory(tls_env(slapd_tls_server, tmp_path, ENCLAVE_LDAP_START_TLS="0"), settings, monkeypatch)

    response = sign_in(Client(), UID, PEOPLE_ENTRIES[UID][2])

    assert response.status_code == 503
    assert error_code(response) == "auth.directory_unavailable"
    assert not User.objects.filter(username=UID).exists()


def test_missing_ca_file_is_a_setting_error(slapd_tls_server, monkeypatch, tmp_path) -> None:
    from mgmt.accounts.ldap_settings import directory_settings

    for name, value in tls_env(slapd_tls_server, tmp_path, ENCLAVE_LDAP_CA_FILE=str(tmp_path / "nope.pem")).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingError, match="ENCLAVE_LDAP_CA_FILE"):
        directory_settings()


def test_production_refuses_a_plaintext_directory(monkeypatch) -> None:
    from mgmt.accounts.ldap_settings import directory_settings

    for name, value in {
        "ENCLAVE_PRODUCTION": "1",
        "ENCLAVE_LDAP_URI": "ldap://dc1.hospital.local",
        "ENCLAVE_LDAP_USER_BASE": "ou=people,dc=hospital,dc=local",
        "ENCLAVE_LDAP_GROUP_BASE": "ou=groups,dc=hospital,dc=local",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ENCLAVE_LDAP_START_TLS", raising=False)
    with pytest.raises(SettingError, match="without StartTLS"):
        directory_settings()
    monkeypatch.setenv("ENCLAVE_LDAP_START_TLS", "1")
    assert directory_settings()["AUTH_LDAP_START_TLS"] is True
