"""Settings come from the environment through typed helpers that fail loudly; production is hardened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mgmt.env import SettingError, env_bool, env_int, env_str, parse_database_url

ROOT = Path(__file__).resolve().parents[1]


def test_typed_helpers_refuse_bad_values(monkeypatch):
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(SettingError, match="X_BOOL='maybe' is not a boolean"):
        env_bool("X_BOOL")
    monkeypatch.setenv("X_INT", "12a")
    with pytest.raises(SettingError, match="not an integer"):
        env_int("X_INT", 1)
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(SettingError, match="below the minimum 1"):
        env_int("X_INT", 5, minimum=1)
    monkeypatch.delenv("X_REQUIRED", raising=False)
    with pytest.raises(SettingError, match="X_REQUIRED must be set"):
        env_str("X_REQUIRED")


def test_secrets_come_from_files(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env_str("X_SECRET") == "s3cr3t"
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingError, match="cannot be read"):
        env_str("X_SECRET")


def test_database_urls():
    pg = parse_database_url("postgresql://enclave:p%40ss@db.local:5433/enclave?sslmode=require")
    assert (pg.engine, pg.name, pg.user, pg.password, pg.host, pg.port) == (
        "django.db.backends.postgresql",
        "enclave",
        "enclave",
        "p@ss",
        "db.local",
        "5433",
    )
    assert pg.options == {"sslmode": "require"}
    assert parse_database_url("sqlite:////var/lib/enclave/db.sqlite3").name == "/var/lib/enclave/db.sqlite3"
    for bad in ("mysql://x/y", "postgresql://host/", "sqlite://relative.db"):
        with pytest.raises(SettingError):
            parse_database_url(bad)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True
    )


def test_production_requires_a_secret_key_and_passes_check_deploy(tmp_path):
    production = {
        "ENCLAVE_PRODUCTION": "1",
        "ENCLAVE_ALLOWED_HOSTS": "enclave.local",
        "ENCLAVE_STATE_DIR": str(tmp_path),
    }
    missing = _run(production, "check")
    assert missing.returncode != 0 and "ENCLAVE_SECRET_KEY must be set" in missing.stderr
    key = tmp_path / "secret_key"
    key.write_text("k" * 20 + os.urandom(24).hex())
    ok = _run({**production, "ENCLAVE_SECRET_KEY_FILE": str(key)}, "check", "--deploy", "--fail-level", "WARNING")
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.django_db
def test_console_pages_carry_csp_and_no_inline_script(client):
    response = client.get("/login/")
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert response["X-Frame-Options"] == "DENY"
    assert b"<script>" not in response.content and b"https://" not in response.content
