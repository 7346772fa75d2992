"""`make demo`: the whole appliance on this machine, with embedded defaults where nothing is configured.

- PostgreSQL: DATABASE_URL if set, else a private cluster (initdb) under var/demo/pg on a free port.
- Redis: REDIS_URL if set, else a private redis-server on a free loopback port.
- The console (gunicorn, WSGI), a Celery worker with beat (audit sealer), the real vLLM CPU engine under
  the engine supervisor (`make engine` builds it), and the gateway (gunicorn's ASGI worker) routing the
  "General" department's `default` alias to that engine.
- The engine serves the model under the activated bundles' models pointer, or the fixture model while no
  bundle is active, and is restarted whenever an activation, a failed health gate or a Rollback moves
  that pointer (`PointerFollower`); the Updates health gate smoke-tests it (ENCLAVE_UPDATES_SMOKE_ENDPOINTS).
Prints the URLs and the first admin's one-time password; Ctrl-C stops everything. var/demo/enclavectl.env
holds the settings `enclavectl bundle import|activate|rollback` needs to act on this demo from a shell.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENGINE_PYTHON = ROOT / ".venv-engine" / "bin" / "python"
FIXTURE_MODEL = ROOT / "build" / "fixture-model"
SERVED_MODEL = "enclave-fixture"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout: float, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: {proc.args!r} exited with {proc.returncode}; see its log under var/demo/")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"demo: nothing answered on port {port} after {timeout:.0f}s")


class Demo:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.logs = state / "demo"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def start_private_postgres(demo: Demo, env: dict[str, str]) -> str:
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bindirs:
        raise SystemExit("demo: no DATABASE_URL and no PostgreSQL installed (apt-get install postgresql)")
    bindir = bindirs[-1].parent
    data = demo.logs / "pg"
    if os.geteuid() == 0:
        data.parent.mkdir(parents=True, exist_ok=True)
        reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(data.parent)], check=False)
        if reachable.returncode != 0:  # e.g. a state dir under a private (0700) home or pytest's tmp
            data = Path(tempfile.mkdtemp(prefix="enclave-demo-pg-")) / "pg"
            os.chmod(data.parent, 0o755)  # noqa: S103 - the postgres user must traverse it; it holds only pg/
            print(f"demo: {demo.logs} is not reachable by the postgres user; its cluster lives in {data}")
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-instructions"]
            ),
            check=True,
            capture_output=True,
        )
    port = free_port()
    proc = demo.start(
        "postgres",
        _as_postgres([str(bindir / "postgres"), "-D", str(data), "-k", str(data), "-h", "127.0.0.1", "-p", str(port)]),
        env,
    )
    wait_port(port, 60, proc)
    for _ in range(50):  # the port opens a moment before the server accepts logins
        ready = subprocess.run([str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], check=False)
        if ready.returncode == 0:
            break
        time.sleep(0.2)
    exists = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-tAc",
            "SELECT 1 FROM pg_database WHERE datname = 'enclave'",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if exists != "1":
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-qc", "CREATE DATABASE enclave"], check=True
        )
    return f"postgresql://postgres@127.0.0.1:{port}/enclave"


def start_private_redis(demo: Demo, env: dict[str, str]) -> str:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("demo: no REDIS_URL and no redis-server installed (apt-get install redis-server)")
    port = free_port()
    (demo.logs / "redis").mkdir(parents=True, exist_ok=True)
    proc = demo.start(
        "redis",
        [
            redis_server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(demo.logs / "redis"),
        ],
        env,
    )
    wait_port(port, 20, proc)
    return f"redis://127.0.0.1:{port}/0"


ENCLAVECTL_ENV = ("ENCLAVE_STATE_DIR", "DATABASE_URL", "REDIS_URL", "ENCLAVE_UPDATES_SMOKE_ENDPOINTS")


def write_enclavectl_env(path: Path, env: dict[str, str]) -> None:
    """A file to source before running enclavectl against this demo (its database, state and engine)."""
    lines = [f"export {name}={shlex.quote(env[name])}" for name in ENCLAVECTL_ENV if env.get(name)]
    path.write_text("\n".join(lines) + "\n")


SETUP_ROUTING = """
from mgmt.accounts.models import Department
from mgmt.accounts.services import do_create_department
from mgmt.routing.models import Deployment, Model
from mgmt.routing.services import TargetSpec, do_create_deployment, do_create_model, do_set_route, do_update_deployment
import os
endpoint = os.environ["DEMO_ENGINE_URL"]
model = Model.objects.filter(name="fixture").first() or do_create_model("fixture", served_name="{served}", actor=None)
deployment = Deployment.objects.filter(name="demo-cpu").first()
if deployment is None:
    deployment = do_create_deployment("demo-cpu", model=model, kind="vllm-cpu", endpoint=endpoint, max_context=2048,
                                      max_concurrency=4, actor=None)
elif deployment.endpoint != endpoint:
    do_update_deployment(deployment, endpoint=endpoint, actor=None)
general = Department.objects.filter(name="General").first() or do_create_department("General", actor=None)
do_set_route(general, "default", [TargetSpec(deployment=deployment)], actor=None)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("ENCLAVE_DEMO_PORT", "8000")))
    parser.add_argument("--gateway-port", type=int, default=int(os.environ.get("ENCLAVE_DEMO_GATEWAY_PORT", "8080")))
    args = parser.parse_args(argv)
    if not ENGINE_PYTHON.is_file() or not (FIXTURE_MODEL / "manifest.json").is_file():
        print(
            "demo: the vLLM CPU engine or the fixture model is missing: run `make engine` (make demo does)",
            file=sys.stderr,
        )
        return 2

    env = dict(os.environ)
    env.setdefault("ENCLAVE_STATE_DIR", str(ROOT / "var"))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    state = Path(env["ENCLAVE_STATE_DIR"])
    demo = Demo(state)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    from appliance.engines import RestartPolicy, Supervisor, VllmCpuEngine
    from appliance.engines.follow import PointerFollower

    supervisor = Supervisor(state / "demo" / "engines", RestartPolicy(initial_delay_s=1.0, max_delay_s=30.0))
    engine_port = free_port()

    def make_engine(model: Path) -> VllmCpuEngine:
        return VllmCpuEngine(
            name="demo-cpu", model=model, served_model_name=SERVED_MODEL, port=engine_port, python=ENGINE_PYTHON
        )

    follower = PointerFollower(supervisor, make_engine, state / "bundles" / "current" / "models", FIXTURE_MODEL)
    try:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = start_private_postgres(demo, env)
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = start_private_redis(demo, env)
        python = sys.executable
        serving = follower.start()  # starts now: it takes about a minute, the rest comes up meanwhile
        engine = make_engine(serving)
        env["ENCLAVE_UPDATES_SMOKE_ENDPOINTS"] = engine.base_url  # the Updates health gate tests this engine
        write_enclavectl_env(demo.logs / "enclavectl.env", env)
        subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        firstboot = subprocess.run(
            [python, "manage.py", "enclave_firstboot", "--reset-admin"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        subprocess.run(
            [python, "manage.py", "shell", "-c", SETUP_ROUTING.replace("{served}", SERVED_MODEL)],
            cwd=ROOT,
            env={**env, "DEMO_ENGINE_URL": engine.base_url},
            check=True,
        )
        env["ENCLAVE_GATEWAY_URL"] = f"http://127.0.0.1:{args.gateway_port}"  # the console's chat relay
        # Threaded workers: a streaming chat answer holds its thread for as long as it runs.
        console = demo.start(
            "console",
            [
                python,
                "-m",
                "gunicorn",
                "mgmt.wsgi:application",
                "--bind",
                f"127.0.0.1:{args.port}",
                "--workers",
                "2",
                "--worker-class",
                "gthread",
                "--threads",
                "8",
                "--timeout",
                "120",
            ],
            env,
        )
        demo.start(
            "celery",
            [
                python,
                "-m",
                "celery",
                "-A",
                "mgmt",
                "worker",
                "-B",
                "--pool=solo",
                "-s",
                str(state / "demo" / "beat-schedule"),
                "--loglevel=INFO",
            ],
            env,
        )
        gateway = demo.start(
            "gateway",
            [
                python,
                "-m",
                "gunicorn",
                "--worker-class",
                "asgi",
                "--workers",
                "1",
                "--bind",
                f"127.0.0.1:{args.gateway_port}",
                "appliance.gateway.asgi:app",
            ],
            env,
        )
        wait_port(args.port, 60, console)
        wait_port(args.gateway_port, 60, gateway)
        print(
            f"  Console is up at http://127.0.0.1:{args.port}/ ; waiting for the engine (about a minute)...", flush=True
        )
        supervisor.wait_ready("demo-cpu", timeout=900)
        # Probe now rather than wait for beat's next round: the deployment may have been marked down while the
        # engine was still loading.
        subprocess.run(
            [
                python,
                "manage.py",
                "shell",
                "-c",
                "from mgmt.routing.health import probe_deployments; probe_deployments()",
            ],
            cwd=ROOT,
            env=env,
            check=True,
        )
        print("\n  Enclave demo is running.\n")
        print(f"  Console:  http://127.0.0.1:{args.port}/")
        print(f"  API:      http://127.0.0.1:{args.gateway_port}/v1  (OpenAI-compatible; model alias 'default')")
        print(f"  Engine:   vLLM CPU on {serving} ({engine.base_url}, loopback only)")
        print(f"  Database: {env['DATABASE_URL']}\n  Redis:    {env['REDIS_URL']}")
        print("  " + firstboot.strip().replace("\n", "\n  "))
        print("\n  Sign in, enrol TOTP, add yourself to the General department or create users there,")
        print(
            "  create an API key, then: curl -H 'Authorization: Bearer KEY' "
            f"http://127.0.0.1:{args.gateway_port}/v1/models"
        )
        print("\n  Updates:  `make demo-bundle`, then import ENCLAVE-2026Q4 on the console's Updates page, or")
        print(f"            . {demo.logs / 'enclavectl.env'}")
        print(f"            enclavectl bundle import {state / 'media' / 'ENCLAVE-2026Q4'} --activate")
        print(f"\n  Logs in {state / 'demo'}. Ctrl-C stops everything.\n", flush=True)
        while all(proc.poll() is None for proc in demo.procs):
            time.sleep(1)
        dead = next(proc for proc in demo.procs if proc.poll() is not None)
        print(f"demo: {dead.args!r} stopped (exit {dead.returncode}); see {state / 'demo'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        follower.stop()
        supervisor.stop_all()
        demo.stop()


if __name__ == "__main__":
    sys.exit(main())
