"""`make demo`: the whole appliance on this machine, with embedded defaults where nothing is configured.

- Database: DATABASE_URL if set, else SQLite under var/ (ENCLAVE_STATE_DIR).
- Redis: REDIS_URL if set, else a private redis-server started here on a free loopback port.
- Processes: the console (gunicorn, WSGI), a Celery worker with beat (the audit sealer), and — where the
  engine and gateway are installed (`make engine`) — the vLLM CPU engine and the gateway.
Prints the URL and the first admin's one-time password; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


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
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("ENCLAVE_DEMO_PORT", "8000")))
    args = parser.parse_args(argv)

    env = dict(os.environ)
    env.setdefault("ENCLAVE_STATE_DIR", str(ROOT / "var"))
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    state = Path(env["ENCLAVE_STATE_DIR"])
    demo = Demo(state)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if not env.get("REDIS_URL"):
            redis_server = shutil.which("redis-server")
            if redis_server is None:
                raise SystemExit("demo: no REDIS_URL and no redis-server installed (apt-get install redis-server)")
            port = free_port()
            (state / "demo" / "redis").mkdir(parents=True, exist_ok=True)
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
                    str(state / "demo" / "redis"),
                ],
                env,
            )
            wait_port(port, 20, proc)
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        python = sys.executable
        subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        firstboot = subprocess.run(
            [python, "manage.py", "enclave_firstboot", "--reset-admin"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
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
                "--timeout",
                "60",
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
        wait_port(args.port, 60, console)
        print("\n  Enclave demo is running.\n")
        print(f"  Console:  http://127.0.0.1:{args.port}/")
        print("  " + firstboot.strip().replace("\n", "\n  "))
        print(f"\n  Logs in {state / 'demo'}. Ctrl-C stops everything.\n", flush=True)
        while all(proc.poll() is None for proc in demo.procs):
            time.sleep(1)
        dead = [proc for proc in demo.procs if proc.poll() is not None]
        print(
            f"demo: {dead[0].args!r} stopped (exit {dead[0].returncode}); see {state / 'demo'}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        demo.stop()


if __name__ == "__main__":
    sys.exit(main())
