"""A test run killed mid-suite leaves none of its servers behind (tests/fixtures/processes.py).

A stand-in for pytest starts a server the way the fixtures do, reports its pid and is killed with
SIGKILL, so no teardown runs; the server must go with it. Without this a leftover Celery worker would
keep listening on the test broker and take the next run's tasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fixtures.processes import ROOT, wait_for


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_server_started_by_the_fixtures_dies_with_a_killed_run(tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    stand_in = textwrap.dedent(
        f"""
        import subprocess, sys, time
        from pathlib import Path
        from tests.fixtures.processes import ends_with_the_tests
        server = subprocess.Popen(ends_with_the_tests([sys.executable, "-c", "import time; time.sleep(600)"]))
        Path({str(pid_file)!r}).write_text(str(server.pid))
        time.sleep(600)
        """
    )
    run = subprocess.Popen([sys.executable, "-c", stand_in], cwd=ROOT)
    try:
        wait_for(lambda: pid_file.is_file() and pid_file.read_text() != "", timeout=60, what="the server's pid")
        server = int(pid_file.read_text())
        # setpriv execs the server in place: the pid the fixture holds is the server's own
        wait_for(lambda: b"time.sleep(600)" in Path(f"/proc/{server}/cmdline").read_bytes(), timeout=30, what="exec")
        assert _alive(server)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        wait_for(lambda: not _alive(server), timeout=30, what="the server to end with the killed run")
    finally:
        if run.poll() is None:
            run.kill()
