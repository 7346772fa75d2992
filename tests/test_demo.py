"""`make demo` as a user runs it: nothing configured, embedded defaults, log in with the printed password."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.fixtures.processes import wait_for

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_demo_starts_with_embedded_defaults_and_the_printed_password_works(tmp_path: Path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}}
    env["ENCLAVE_STATE_DIR"] = str(tmp_path / "state")
    out = tmp_path / "demo.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: "Ctrl-C stops everything" in out.read_text() or proc.poll() is not None,
            timeout=180,
            what="the demo banner",
        )
        text = out.read_text()
        assert proc.poll() is None, text
        assert (tmp_path / "state" / "enclave.sqlite3").exists()  # SQLite: no database server configured
        password = re.search(r"one-time password:\s+(\S+)", text).group(1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False, timeout=30) as client:
            page = client.get("/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            response = client.post(
                "/login/",
                data={"username": "admin", "password": password, "csrfmiddlewaretoken": token},
                headers={"Referer": f"http://127.0.0.1:{port}/login/"},
            )
            assert response.status_code == 302
            assert client.get("/").headers["location"] == "/mfa/enrol/"  # admins enrol TOTP first
            assert client.get("/static/console/htmx.min.js").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0
