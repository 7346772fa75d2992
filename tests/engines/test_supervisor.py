"""The supervisor against real child processes (Python's http.server standing in for an engine's
HTTP surface; the real vLLM CPU engine is exercised in test_vllm_engine.py)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.engines import (
    EngineAlreadyManaged,
    EngineExecutableMissing,
    EngineGaveUp,
    EngineKind,
    EngineLaunch,
    EngineStartTimeout,
    EngineState,
    HealthProbe,
    PriorityCapability,
    RestartPolicy,
    Supervisor,
    UnknownEngine,
    probe,
)

FAST = RestartPolicy(initial_delay_s=0.05, factor=2.0, max_delay_s=0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(name: str, argv: tuple[str, ...], port: int = 9) -> EngineLaunch:
    return EngineLaunch(
        name=name,
        kind=EngineKind.VLLM_CPU,
        argv=argv,
        env={"ENCLAVE_TEST_MARK": "1"},
        base_url=f"http://127.0.0.1:{port}",
        health=HealthProbe("/health"),
        metrics_path=None,
        served_model_name="m",
        priority=PriorityCapability.NONE,
        max_context=2048,
    )


def http_server(name: str, root: Path) -> EngineLaunch:
    port = free_port()
    argv = (sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root))
    return launch(name, argv, port)


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    (root / "health").write_text("ok")
    return root


def test_start_ready_kill9_restart_and_stop(tmp_path: Path, site: Path) -> None:
    with Supervisor(tmp_path / "logs", FAST, poll_interval_s=0.05) as sup:
        ln = http_server("web", site)
        sup.start(ln)
        first = sup.wait_ready("web", timeout=30)
        assert first.state is EngineState.READY
        assert first.starts == 1
        assert first.pid is not None
        assert probe(ln).ok
        os.kill(first.pid, signal.SIGKILL)
        second = sup.wait_ready("web", timeout=30, min_starts=2)
        assert second.restarts == 1
        assert second.pid != first.pid
        assert second.last_exit_code == -signal.SIGKILL
        assert probe(ln).ok
        stopped = sup.stop("web")
        assert stopped.state is EngineState.STOPPED
        assert stopped.pid is None
        assert not probe(ln, timeout=0.5).ok
    log = (tmp_path / "logs" / "web.log").read_text()
    assert "start #1: pid" in log
    assert "start #2: pid" in log
    assert "exited with code -9; restarting in 0.1 s" in log
    assert "GET /health" in log  # the child's own output lands in the same file


def test_child_gets_the_launch_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    code = f"import os, time; open({str(out)!r}, 'w').write(os.environ['ENCLAVE_TEST_MARK']); time.sleep(60)"
    with Supervisor(tmp_path / "logs", FAST) as sup:
        sup.start(launch("envcheck", (sys.executable, "-c", code)))
        wait_for(lambda: out.exists() and out.read_text() == "1", "the child to write its environment")


def test_backoff_grows_and_gives_up_after_max_restarts(tmp_path: Path) -> None:
    policy = RestartPolicy(initial_delay_s=0.05, factor=2.0, max_delay_s=0.2, max_restarts=3)
    with Supervisor(tmp_path / "logs", policy, poll_interval_s=0.02) as sup:
        sup.start(launch("crash", (sys.executable, "-c", "import sys; sys.exit(3)")))
        with pytest.raises(EngineGaveUp) as info:
            sup.wait_ready("crash", timeout=30)
        assert info.value.code == "engine.gave_up"
        status = sup.status("crash")
        assert status.state is EngineState.FAILED
        assert status.restarts == 3
        assert status.starts == 4
        assert status.last_exit_code == 3
    log = (tmp_path / "logs" / "crash.log").read_text()
    planned = [line.rsplit("restarting in ", 1)[1] for line in log.splitlines() if "restarting in" in line]
    assert planned == ["0.1 s", "0.1 s", "0.2 s"]  # 0.05, 0.10, 0.20 (rounded to one decimal)
    assert "giving up after 3 restarts" in log


def test_restart_policy_delays() -> None:
    policy = RestartPolicy(initial_delay_s=1.0, factor=2.0, max_delay_s=60.0)
    assert [policy.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('sig' + 'term ignored', flush=True); time.sleep(600)"
    )
    log = tmp_path / "logs" / "stubborn.log"
    with Supervisor(tmp_path / "logs", FAST, grace_s=0.5) as sup:
        sup.start(launch("stubborn", (sys.executable, "-c", stubborn)))
        wait_for(lambda: log.exists() and "sigterm ignored" in log.read_text(), "the child to ignore SIGTERM")
        pid = sup.status("stubborn").pid
        assert pid is not None
        status = sup.stop("stubborn")
        assert status.state is EngineState.STOPPED
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "stopped (exit code -9)" in log.read_text()


def test_unhealthy_engine_is_killed_and_restarted(tmp_path: Path, site: Path) -> None:
    with Supervisor(tmp_path / "logs", FAST, poll_interval_s=0.05, health_interval_s=0.1, unhealthy_after=3) as sup:
        sup.start(http_server("sick", site))
        sup.wait_ready("sick", timeout=30)
        (site / "health").unlink()  # /health now answers 404
        wait_for(lambda: sup.status("sick").restarts >= 1, "the unhealthy engine to be restarted")
        (site / "health").write_text("ok")
        status = sup.wait_ready("sick", timeout=30, min_starts=2)
        assert status.state is EngineState.READY
    assert (
        "3 failed health probes (GET /health -> 404); killing the engine"
        in (tmp_path / "logs" / "sick.log").read_text()
    )


def test_start_timeout_names_the_log(tmp_path: Path) -> None:
    with Supervisor(tmp_path / "logs", FAST) as sup:
        sup.start(launch("silent", (sys.executable, "-c", "import time; time.sleep(60)"), port=free_port()))
        with pytest.raises(EngineStartTimeout) as info:
            sup.wait_ready("silent", timeout=0.5)
        assert info.value.code == "engine.start_timeout"
        assert "silent.log" in str(info.value)


def test_refusals_have_stable_codes(tmp_path: Path, site: Path) -> None:
    with Supervisor(tmp_path / "logs", FAST) as sup:
        with pytest.raises(EngineExecutableMissing) as missing:
            sup.start(launch("ghost", (str(tmp_path / "no-such-engine"),)))
        assert missing.value.code == "engine.executable_missing"
        with pytest.raises(UnknownEngine) as unknown:
            sup.status("ghost")
        assert unknown.value.code == "engine.unknown"
        ln = http_server("twice", site)
        sup.start(ln)
        with pytest.raises(EngineAlreadyManaged) as twice:
            sup.start(ln)
        assert twice.value.code == "engine.already_managed"


def test_exiting_interpreter_takes_the_engine_group_with_it(tmp_path: Path) -> None:
    """Like vLLM's engine core, a grandchild outlives its parent; the supervisor's atexit kills the group."""
    family = (
        "import subprocess, sys, time; g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print('grand' + 'child', g.pid, flush=True); time.sleep(600)"
    )
    script = f"""
import sys, time
from pathlib import Path
from appliance.engines import EngineKind, EngineLaunch, HealthProbe, PriorityCapability, Supervisor
launch = EngineLaunch(name="family", kind=EngineKind.VLLM_CPU, argv=(sys.executable, "-c", {family!r}), env={{}},
                      base_url="http://127.0.0.1:9", health=HealthProbe("/health"), metrics_path=None,
                      served_model_name="m", priority=PriorityCapability.NONE, max_context=1)
sup = Supervisor(Path({str(tmp_path / "logs")!r}))
sup.start(launch)
log = Path({str(tmp_path / "logs" / "family.log")!r})
while not log.exists() or "grandchild" not in log.read_text():
    time.sleep(0.05)
print(sup.status("family").pid, flush=True)
"""  # exits without stopping the supervisor
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    child = int(result.stdout.split()[-1])
    grandchild = int((tmp_path / "logs" / "family.log").read_text().split("grandchild ")[1].split()[0])
    for pid in (child, grandchild):
        wait_for(lambda pid=pid: not _alive(pid), f"process {pid} to be gone")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"  # a zombie is dead, just not reaped by its parent
    except FileNotFoundError:
        return False
