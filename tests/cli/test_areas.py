"""enclavectl loads only the area a command names; anything else still sees every area."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from appliance.cli import main
code = main(sys.argv[1:])
print("engines-loaded" if "appliance.engines.cli" in sys.modules else "engines-not-loaded")
print("audit-loaded" if "appliance.audit_cli" in sys.modules else "audit-not-loaded")
"""


def test_a_bundle_command_imports_only_the_bundle_area(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "bundle", "status", "--json"],
        cwd=ROOT,
        env={"ENCLAVE_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines()[-2:] == ["engines-not-loaded", "audit-not-loaded"]


def test_help_and_unknown_areas_list_every_area() -> None:
    for argv in (["--help"], ["no-such-area"]):
        done = subprocess.run(
            [sys.executable, "-m", "appliance.cli", *argv], cwd=ROOT, capture_output=True, text=True, check=False
        )
        listing = done.stdout + done.stderr
        assert all(area in listing for area in ("audit", "bundle", "hardware", "engine")), listing
    assert done.returncode == 2
