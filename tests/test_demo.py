"""`make demo` as a user runs it: nothing configured, embedded PostgreSQL and Redis, the real engine behind the
gateway, and the printed one-time password works."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from tests.fixtures.processes import wait_for

ROOT = Path(__file__).resolve().parents[1]

MAKE_STAFF_KEY = """
from mgmt.accounts.models import Department, Role
from mgmt.accounts.services import do_create_api_key, do_create_user
user, _ = do_create_user("demo.staff", role=Role.STAFF, department=Department.objects.get(name="General"), actor=None)
print("KEY=" + do_create_api_key(user, name="demo test", expires_at=None, actor=None).secret)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.engine
def test_demo_serves_the_whole_stack_with_embedded_defaults(tmp_path: Path):
    port, gateway_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}}
    state = tmp_path / "state"
    env["ENCLAVE_STATE_DIR"] = str(state)
    out = tmp_path / "demo.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.demo", "--port", str(port), "--gateway-port", str(gateway_port)],
        cwd=ROOT,
        env=env,
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: "Ctrl-C stops everything" in out.read_text() or proc.poll() is not None,
            timeout=900,
            what="the demo banner",
            interval=1,
        )
        text = out.read_text()
        assert proc.poll() is None, text
        database = re.search(r"Database: (\S+)", text).group(1)
        assert database.startswith("postgresql://postgres@127.0.0.1:") and ":5432/" not in database  # private
        redis_url = re.search(r"Redis:\s+(\S+)", text).group(1)
        password = re.search(r"one-time password:\s+(\S+)", text).group(1)

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False, timeout=30) as client:
            page = client.get("/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            response = client.post(
                "/login/", data={"username": "admin", "password": password, "csrfmiddlewaretoken": token}
            )
            assert response.status_code == 302
            assert client.get("/").headers["location"] == "/mfa/enrol/"  # admins enrol TOTP first

        made = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", MAKE_STAFF_KEY],
            cwd=ROOT,
            env={**env, "DATABASE_URL": database, "REDIS_URL": redis_url},
            capture_output=True,
            text=True,
            check=True,
        )
        key = re.search(r"KEY=(\S+)", made.stdout).group(1)
        api = OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key=key, max_retries=0, timeout=120)

        def models_listed() -> bool:  # the gateway reloads its snapshot on the probe's pub/sub message
            try:
                return [m.id for m in api.models.list().data] == ["default"]
            except openai.APIStatusError:
                return False

        wait_for(models_listed, timeout=30, what="the gateway to list the demo's model")
        reply = api.chat.completions.create(
            model="default", max_tokens=8, messages=[{"role": "user", "content": "Hello"}]
        )
        assert reply.choices[0].message.content is not None and reply.usage.completion_tokens > 0

        # `make demo-bundle`, then `enclavectl bundle import ... --activate` from another shell (with the
        # demo's enclavectl.env): the engine is restarted on the 2026Q4 model, which the gate smoke-tested.
        model_2026q4 = ROOT / "build" / "fixture-model-2026q4"
        assert (model_2026q4 / "manifest.json").is_file(), "make build/fixture-model-2026q4/manifest.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "appliance.bundles.demo_bundle",
                "--state-dir",
                str(state),
                "--model",
                str(model_2026q4),
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        exported = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1)
            for line in (state / "demo" / "enclavectl.env").read_text().splitlines()
        )
        assert exported["DATABASE_URL"] == database
        engine_url = exported["ENCLAVE_UPDATES_SMOKE_ENDPOINTS"]
        activated = subprocess.run(
            [
                sys.executable,
                "-m",
                "appliance.cli",
                "bundle",
                "import",
                str(state / "media" / "ENCLAVE-2026Q4"),
                "--activate",
            ],
            cwd=ROOT,
            env={**env, **exported},
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert activated.returncode == 0, activated.stderr[-3000:]
        assert "activated release 2026Q4" in activated.stdout
        served = Path(httpx.get(f"{engine_url}/v1/models", timeout=10).json()["data"][0]["root"])
        assert (
            served
            == (state / "bundles" / "releases" / "2026Q4" / "files" / "models" / "fixture-model-2026q4").resolve()
        )

        def answers_again() -> bool:  # the deployment probe may have seen the engine down while it restarted
            try:
                again = api.chat.completions.create(
                    model="default", max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
                )
            except openai.APIError:
                return False
            return again.usage.completion_tokens > 0

        wait_for(answers_again, timeout=180, what="the gateway to reach the restarted engine", interval=2)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0, out.read_text()[-3000:]
