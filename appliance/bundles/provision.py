"""The activation's provisioning step: a bundle's operating-system packages applied offline.

A bundle may carry `debs/`, its own apt repository (dists/bookworm/main/binary-amd64/Packages and
pool/), and `debs/packages.txt`, the packages it adds (one name a line; installed ones are upgraded
from the same repository). Between the pointer flip and the health gate the manager calls a
Provisioner with the release's files/ folder; a failure raises a BundleError and the manager rolls back.

- `check_debs` reads the repository (pure): every package the bundle names must be in its index
  (`bundle.apt_package_missing` otherwise, before anything is touched).
- `command_provisioner(argv)` runs `argv + [files_dir]`: on the appliance
  `/usr/local/sbin/enclave-apply-bundle request`, which hands the folder to a root service that runs
  provisioning/apply-bundle.yml (the worker itself has no privileges). Exit 0 and a JSON object on the
  last line of stdout; anything else is `bundle.provisioning_failed` (or the code the command names).
- `skip_provisioning(reason)`: where no playbook exists (development hosts, host-side tests) the step
  is skipped, and says so in the result, which the manager keeps with the release and the audit event.

See docs/decisions/0504-bundle-provisioning-on-activation.md.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from appliance.bundles.errors import AptPackageMissing, BundleError, ProvisioningFailed

__all__ = [
    "PACKAGES_FILE",
    "Provisioner",
    "bundle_packages",
    "check_debs",
    "command_provisioner",
    "skip_provisioning",
]

Provisioner = Callable[[Path], dict[str, Any]]
PACKAGES_FILE = "debs/packages.txt"
INDEX = "debs/dists/bookworm/main/binary-amd64/Packages"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")
_CODES: dict[str, type[BundleError]] = {"BUNDLE_APT_PACKAGE_MISSING": AptPackageMissing}


def bundle_packages(files_dir: Path) -> list[str]:
    """The packages the bundle names in debs/packages.txt (empty when there is no such file)."""
    path = files_dir / PACKAGES_FILE
    if not path.is_file():
        return []
    names = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not _NAME_RE.match(line):
            raise ProvisioningFailed(f"{PACKAGES_FILE} line {number}: {line!r} is not a Debian package name")
        names.append(line)
    return names


def _indexed(files_dir: Path) -> set[str]:
    index = files_dir / INDEX
    if not index.is_file():
        raise ProvisioningFailed(f"the bundle carries debs/ but no {INDEX.removeprefix('debs/')} index")
    return {
        line.split(":", 1)[1].strip()
        for line in index.read_text(encoding="utf-8").splitlines()
        if line.startswith("Package:")
    }


def check_debs(files_dir: Path) -> list[str] | None:
    """None when the bundle carries no debs/; else the packages it names, each present in its index."""
    if not (files_dir / "debs").is_dir():
        return None
    names = bundle_packages(files_dir)
    indexed = _indexed(files_dir)
    for name in names:
        if name not in indexed:
            raise AptPackageMissing(f"{PACKAGES_FILE} names {name!r}, which the bundle's apt repository lacks")
    return names


def skip_provisioning(reason: str) -> Provisioner:
    """Check the bundle's repository, apply nothing, and say why in the result."""

    def provision(files_dir: Path) -> dict[str, Any]:
        names = check_debs(files_dir)
        if names is None:
            return {"outcome": "nothing", "message": "the bundle carries no operating-system packages (debs/)"}
        return {"outcome": "skipped", "packages_named": names, "message": reason}

    return provision


def command_provisioner(argv: Sequence[str], timeout: float = 1800.0) -> Provisioner:
    """Apply the bundle's debs/ with an external command (the root-side playbook runner)."""
    command = list(argv)
    if not command:
        raise ValueError("the apply command is empty")

    def provision(files_dir: Path) -> dict[str, Any]:
        names = check_debs(files_dir)
        if names is None:
            return {"outcome": "nothing", "message": "the bundle carries no operating-system packages (debs/)"}
        try:
            done = subprocess.run(
                [*command, str(files_dir)], capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ProvisioningFailed(f"{command[0]} did not finish within {timeout:.0f} s") from exc
        except OSError as exc:
            raise ProvisioningFailed(f"{command[0]} could not be started: {exc.strerror}") from exc
        output = f"{done.stdout}\n{done.stderr}"
        if done.returncode != 0:
            tail = " | ".join(line for line in output.strip().splitlines()[-6:] if line.strip())
            for marker, error in _CODES.items():
                if marker in output:
                    raise error(f"{command[0]} refused the bundle: {tail[-600:]}")
            raise ProvisioningFailed(f"{command[0]} exited {done.returncode}: {tail[-600:]}")
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        try:
            result = json.loads(lines[-1]) if lines else None
        except ValueError:
            result = None
        if not isinstance(result, dict):
            raise ProvisioningFailed(f"{command[0]} succeeded but printed no JSON result")
        return {"outcome": "applied", "packages_named": names, **result}

    return provision
