"""A local engine supervisor for the demo and the tests (on the appliance, systemd does this job).

Each engine runs as a child process in its own process group (vLLM forks an engine-core process;
the whole group is stopped together). One monitor thread per engine:

    spawn -> STARTING --(health probe answers)--> READY --(probe fails `unhealthy_after` times)--+
      ^                                                                                         |
      +-- BACKOFF (exponential delay) <-- process exited or was killed <------------------------+

A stop sends SIGTERM to the group, waits `grace_s`, then SIGKILL. Output goes to LOG_DIR/NAME.log
(appended, with a supervisor line per start and exit; rotated once to NAME.log.1 past `max_log_bytes`).
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx

from appliance.engines.base import EngineAdapter, EngineLaunch
from appliance.engines.errors import (
    EngineAlreadyManaged,
    EngineExecutableMissing,
    EngineGaveUp,
    EngineStartTimeout,
    InvalidEngineOption,
    UnknownEngine,
)
from appliance.engines.health import probe

__all__ = ["EngineState", "EngineStatus", "RestartPolicy", "Supervisor"]


class EngineState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff: initial * factor**(n-1), capped; reset after a long enough healthy run."""

    initial_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 60.0
    reset_after_s: float = 300.0
    max_restarts: int | None = None  # None: keep restarting (with the capped delay) until stopped

    def __post_init__(self) -> None:
        if self.initial_delay_s < 0 or self.factor < 1 or self.max_delay_s < self.initial_delay_s:
            raise InvalidEngineOption("restart policy: need 0 <= initial <= max delay and factor >= 1")

    def delay(self, consecutive_failures: int) -> float:
        return float(min(self.max_delay_s, self.initial_delay_s * self.factor ** max(0, consecutive_failures - 1)))


@dataclass(frozen=True)
class EngineStatus:
    name: str
    state: EngineState
    pid: int | None
    starts: int  # processes spawned so far (1 for the first start)
    restarts: int
    last_exit_code: int | None
    base_url: str
    log_path: Path


class _Managed:
    def __init__(self, launch: EngineLaunch, log_path: Path) -> None:
        self.launch = launch
        self.log_path = log_path
        self.cond = threading.Condition()
        self.stop_event = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = EngineState.STOPPED
        self.starts = 0
        self.ready_start = 0  # the start number that last became ready
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.thread: threading.Thread | None = None

    def set_state(self, state: EngineState) -> None:
        with self.cond:
            self.state = state
            if state is EngineState.READY:
                self.ready_start = self.starts
            self.cond.notify_all()

    def status(self) -> EngineStatus:
        with self.cond:
            alive = self.proc is not None and self.proc.poll() is None
            return EngineStatus(
                name=self.launch.name,
                state=self.state,
                pid=self.proc.pid if alive and self.proc is not None else None,
                starts=self.starts,
                restarts=self.restarts,
                last_exit_code=self.last_exit_code,
                base_url=self.launch.base_url,
                log_path=self.log_path,
            )


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session=True: the group id is the leader's pid


class Supervisor:
    def __init__(
        self,
        log_dir: Path,
        policy: RestartPolicy | None = None,
        *,
        poll_interval_s: float = 0.25,
        health_interval_s: float = 5.0,
        unhealthy_after: int = 3,
        probe_timeout_s: float = 5.0,
        grace_s: float = 20.0,
        max_log_bytes: int = 50 * 1024 * 1024,
    ) -> None:
        self.log_dir = log_dir
        self.policy = policy or RestartPolicy()
        self.poll_interval_s = poll_interval_s
        self.health_interval_s = health_interval_s
        self.unhealthy_after = unhealthy_after
        self.probe_timeout_s = probe_timeout_s
        self.grace_s = grace_s
        self.max_log_bytes = max_log_bytes
        self._engines: dict[str, _Managed] = {}
        self._lock = threading.Lock()
        self._atexit_registered = False

    # -- public API ---------------------------------------------------------------------------
    def start(self, engine: EngineAdapter | EngineLaunch) -> EngineStatus:
        launch = engine.launch() if isinstance(engine, EngineAdapter) else engine
        executable = Path(launch.argv[0])
        if not (executable.is_file() and os.access(executable, os.X_OK)):
            raise EngineExecutableMissing(
                f"engine {launch.name}: {executable} is not an executable file "
                "(for the vLLM CPU engine: run `make engine`)"
            )
        with self._lock:
            current = self._engines.get(launch.name)
            if current is not None and current.thread is not None and current.thread.is_alive():
                raise EngineAlreadyManaged(f"engine {launch.name} is already running under this supervisor")
            self.log_dir.mkdir(parents=True, exist_ok=True)
            managed = _Managed(launch, self.log_dir / f"{launch.name}.log")
            self._engines[launch.name] = managed
            if not self._atexit_registered:
                # vLLM's engine-core and worker processes outlive a killed API server: an exiting
                # interpreter takes its engines' process groups with it (a SIGKILLed one cannot: 0303).
                atexit.register(self._kill_all_now)
                self._atexit_registered = True
        managed.set_state(EngineState.STARTING)
        managed.thread = threading.Thread(target=self._run, args=(managed,), name=f"engine-{launch.name}", daemon=True)
        managed.thread.start()
        return managed.status()

    def wait_ready(self, name: str, timeout: float, *, min_starts: int = 1) -> EngineStatus:
        """Block until start number >= `min_starts` has passed its health probe.

        Raises EngineStartTimeout after `timeout` seconds, EngineGaveUp once the restart policy gave up.
        """
        managed = self._get(name)
        deadline = time.monotonic() + timeout
        with managed.cond:
            while not (managed.state is EngineState.READY and managed.ready_start >= min_starts):
                if managed.state in (EngineState.FAILED, EngineState.STOPPED):
                    raise EngineGaveUp(
                        f"engine {name} is {managed.state} (last exit code {managed.last_exit_code}); "
                        f"see {managed.log_path}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EngineStartTimeout(
                        f"engine {name} did not answer {managed.launch.health.path} within {timeout:.0f} s "
                        f"(state {managed.state}); see {managed.log_path}"
                    )
                managed.cond.wait(min(left, 1.0))
        return managed.status()

    def status(self, name: str) -> EngineStatus:
        return self._get(name).status()

    def statuses(self) -> list[EngineStatus]:
        with self._lock:
            managed = list(self._engines.values())
        return [m.status() for m in managed]

    def stop(self, name: str, grace_s: float | None = None) -> EngineStatus:
        managed = self._get(name)
        managed.stop_event.set()
        with managed.cond:
            managed.cond.notify_all()
            proc = managed.proc
        if proc is not None:
            self._terminate(proc, self.grace_s if grace_s is None else grace_s)
        if managed.thread is not None:
            managed.thread.join()
        managed.set_state(EngineState.STOPPED)
        return managed.status()

    def stop_all(self) -> None:
        with self._lock:
            names = list(self._engines)
        for name in names:
            self.stop(name)
        with self._lock:
            if self._atexit_registered:
                atexit.unregister(self._kill_all_now)
                self._atexit_registered = False

    def _kill_all_now(self) -> None:
        with self._lock:
            managed = list(self._engines.values())
        for m in managed:
            m.stop_event.set()
            if m.proc is not None and m.proc.poll() is None:  # a reaped leader's group id may be reused
                _kill_group(m.proc, signal.SIGKILL)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # -- internals ----------------------------------------------------------------------------
    def _get(self, name: str) -> _Managed:
        with self._lock:
            managed = self._engines.get(name)
        if managed is None:
            raise UnknownEngine(f"no engine named {name!r} under this supervisor")
        return managed

    def _terminate(self, proc: subprocess.Popen[bytes], grace_s: float) -> None:
        if proc.poll() is None:
            _kill_group(proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
        _kill_group(proc, signal.SIGKILL)  # the leader may be gone while its children linger
        proc.wait()

    def _note(self, log: IO[bytes], text: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"---- enclave supervisor {stamp}: {text}\n".encode())
        log.flush()

    def _open_log(self, managed: _Managed) -> IO[bytes]:
        path = managed.log_path
        if path.exists() and path.stat().st_size > self.max_log_bytes:
            os.replace(path, path.with_name(path.name + ".1"))
        return path.open("ab")

    def _spawn(self, managed: _Managed, log: IO[bytes]) -> subprocess.Popen[bytes] | None:
        env = dict(os.environ)
        env.update(managed.launch.env)
        with managed.cond:
            if managed.stop_event.is_set():
                return None
            managed.starts += 1
            try:
                managed.proc = subprocess.Popen(
                    managed.launch.argv,
                    env=env,
                    cwd=managed.launch.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                self._note(log, f"start #{managed.starts} failed: {exc}")
                managed.proc = None
                return None
            self._note(log, f"start #{managed.starts}: pid {managed.proc.pid}: {' '.join(managed.launch.argv)}")
            return managed.proc

    def _watch(self, managed: _Managed, proc: subprocess.Popen[bytes], client: httpx.Client) -> int:
        """Wait for the process to exit (or be judged unhealthy and killed); return its exit code."""
        failures = 0
        next_probe = time.monotonic()
        while True:
            try:
                return proc.wait(timeout=self.poll_interval_s)
            except subprocess.TimeoutExpired:
                pass
            if managed.stop_event.is_set() or time.monotonic() < next_probe:
                continue
            result = probe(managed.launch, timeout=self.probe_timeout_s, client=client)
            if managed.state is not EngineState.READY:
                next_probe = time.monotonic() + self.poll_interval_s
                if result.ok:
                    managed.set_state(EngineState.READY)
                    next_probe = time.monotonic() + self.health_interval_s
                continue
            next_probe = time.monotonic() + self.health_interval_s
            failures = 0 if result.ok else failures + 1
            if failures >= self.unhealthy_after:
                with managed.log_path.open("ab") as log:
                    self._note(log, f"{failures} failed health probes ({result.detail}); killing the engine")
                self._terminate(proc, self.grace_s)
                return proc.wait()

    def _run(self, managed: _Managed) -> None:
        consecutive = 0
        with httpx.Client(trust_env=False) as client:
            while not managed.stop_event.is_set():
                with self._open_log(managed) as log:
                    proc = self._spawn(managed, log)
                    started = time.monotonic()
                    code = None if proc is None else self._watch(managed, proc, client)
                    if proc is not None:
                        _kill_group(proc, signal.SIGKILL)  # leftovers of a crashed leader
                    if managed.stop_event.is_set():
                        self._note(log, f"stopped (exit code {code})")
                        break
                    with managed.cond:
                        managed.last_exit_code = code
                    consecutive = 1 if time.monotonic() - started >= self.policy.reset_after_s else consecutive + 1
                    if self.policy.max_restarts is not None and managed.restarts >= self.policy.max_restarts:
                        self._note(log, f"exited with code {code}; giving up after {managed.restarts} restarts")
                        managed.set_state(EngineState.FAILED)
                        return
                    delay = self.policy.delay(consecutive)
                    self._note(log, f"exited with code {code}; restarting in {delay:.1f} s")
                managed.set_state(EngineState.BACKOFF)
                if managed.stop_event.wait(delay):
                    break
                with managed.cond:
                    managed.restarts += 1
                managed.set_state(EngineState.STARTING)
