"""Real processes for the gateway tests: gunicorn's ASGI worker running the gateway on the test database,
and the OpenAI-shaped test upstream (bench/gateway_upstream.py, a stand-in engine that can misbehave on
demand; the real vLLM CPU engine is exercised in test_engine.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.conf import settings as django_settings

from mgmt.accounts.models import Department, Role, User
from mgmt.accounts.services import do_create_api_key, do_create_department, do_create_user
from mgmt.routing.models import Deployment, EngineKind, Task
from mgmt.routing.services import TargetSpec, do_create_deployment, do_create_model, do_set_route
from tests.fixtures.processes import ends_with_the_tests, test_database_url, wait_for

from .scripted_engine import ScriptedEngine

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start the OpenAI-shaped test upstream with the given command-line switches."""
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        port_file = tmp_path / f"upstream-{len(started)}.port"
        log = tmp_path / f"upstream-{len(started)}.log"
        proc = subprocess.Popen(
            ends_with_the_tests(
                [sys.executable, str(ROOT / "bench" / "gateway_upstream.py"), "--port-file", str(port_file), *args]
            ),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: port_file.exists() or proc.poll() is not None, timeout=20, what="upstream port")
        assert proc.poll() is None, log.read_text()
        handle = Proc(proc, log, f"http://127.0.0.1:{port_file.read_text()}")
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def gateway(committed_db: None, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start the gateway under `gunicorn --worker-class asgi` against the test database and Redis DB."""
    started: list[Proc] = []

    def start(workers: int = 1, **env: str) -> Proc:
        port = free_port()
        log = tmp_path / f"gateway-{len(started)}.log"
        full_env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": django_settings.REDIS_URL,
            "ENCLAVE_GATEWAY_WORKERS": str(workers),
            # Only pub/sub can make a change visible within the tests' waits.
            "ENCLAVE_GATEWAY_RELOAD_SECONDS": "600",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "--worker-class",
            "asgi",
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-connections",
            "4096",
            "--graceful-timeout",
            "5",
            "appliance.gateway.asgi:app",
        ]
        proc = subprocess.Popen(
            ends_with_the_tests(argv), cwd=ROOT, env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        handle = Proc(proc, log, f"http://127.0.0.1:{port}")
        started.append(handle)
        wait_for(lambda: _healthy(handle.url) or proc.poll() is not None, timeout=60, what="gateway /healthz")
        assert proc.poll() is None, handle.output()[-3000:]
        return handle

    yield start
    for handle in started:
        handle.stop()


@dataclass
class World:
    emergency: Department
    litigation: Department
    nurse: User
    lawyer: User
    nurse_key: str
    lawyer_key: str


@pytest.fixture
def world(committed_db: None) -> World:
    """Two departments (Emergency weight 3, Litigation weight 1), one staff member and one key in each."""
    emergency = do_create_department("Emergency", weight=3, actor=None)
    litigation = do_create_department("Litigation", weight=1, actor=None)
    nurse, _ = do_create_user("nina.nurse", role=Role.STAFF, department=emergency, actor=None)
    lawyer, _ = do_create_user("larry.lawyer", role=Role.STAFF, department=litigation, actor=None)
    nurse_key = do_create_api_key(nurse, name="laptop", expires_at=None, actor=nurse).secret
    lawyer_key = do_create_api_key(lawyer, name="laptop", expires_at=None, actor=lawyer).secret
    return World(emergency, litigation, nurse, lawyer, nurse_key, lawyer_key)


def add_deployment(
    name: str,
    url: str,
    *,
    max_context: int = 2048,
    concurrency: int = 8,
    task: str = Task.CHAT,
    kind: str = EngineKind.VLLM_CPU,
) -> Deployment:
    from mgmt.routing.models import Model

    model = Model.objects.filter(name=f"m-{task}").first() or do_create_model(
        f"m-{task}", served_name="fixture-model", task=task, actor=None
    )
    return do_create_deployment(
        name,
        model=model,
        kind=kind,
        endpoint=url,
        max_context=max_context,
        max_concurrency=concurrency,
        actor=None,
    )


def route(department: Department, alias: str, *deployments: Deployment, thinking: str = "off") -> None:
    """Deployments in the order given are tried in that order (each its own priority)."""
    targets = [TargetSpec(dep, priority=i) for i, dep in enumerate(deployments)]
    do_set_route(department, alias, targets, thinking=thinking, actor=None)


def _route_to_engine(world: World, engine, name: str, kind: str, max_context: int, concurrency: int) -> Deployment:
    """The Emergency department's `default` alias routed to one of the session's real engines."""
    model = do_create_model(f"{name}-model", served_name=engine.model, actor=None)
    deployment = do_create_deployment(
        name,
        model=model,
        kind=kind,
        endpoint=engine.base_url,
        max_context=max_context,
        max_concurrency=concurrency,
        actor=None,
    )
    do_set_route(world.emergency, "default", [TargetSpec(deployment)], actor=None)
    return deployment


@pytest.fixture
def engine_route(world, vllm_engine):
    """The Emergency department's `default` alias routed to the session's real vLLM CPU engine."""
    return _route_to_engine(world, vllm_engine, "vllm-cpu-1", EngineKind.VLLM_CPU, 2048, 4)


@pytest.fixture
def llama_route(world, llama_engine):
    """The Emergency department's `default` alias routed to the session's real llama.cpp `llama-server`."""
    return _route_to_engine(
        world, llama_engine, "llama-cpp-1", EngineKind.LLAMA_CPP, llama_engine.launch.max_context, 2
    )


# -- the scripted engine (scripted_engine.py), for test_fuzz_requests and test_engine_answers -------------------
@pytest.fixture
def engine(world) -> Iterator[ScriptedEngine]:
    """Emergency's `default` (chat) and `embed`, Litigation's `legal`: all served by one scripted engine."""
    with ScriptedEngine() as scripted:
        route(world.emergency, "default", add_deployment("er-engine", scripted.url))
        route(world.emergency, "embed", add_deployment("embed-engine", scripted.url, task=Task.EMBEDDING))
        route(world.litigation, "legal", add_deployment("law-engine", scripted.url))
        yield scripted


@pytest.fixture
def client(world, engine, gateway) -> Iterator[httpx.Client]:
    """The nurse's client of a gateway that never skips the engine (no passive-health pause)."""
    gw = gateway(
        ENCLAVE_GATEWAY_MAX_BODY_BYTES="100000",
        ENCLAVE_GATEWAY_DOWN_SECONDS="0",
        ENCLAVE_GATEWAY_READ_TIMEOUT_SECONDS="20",
    )
    headers = {"Authorization": f"Bearer {world.nurse_key}"}
    with httpx.Client(base_url=gw.url, headers=headers, timeout=30) as http:
        yield http
