"""Faults during a real import: the worker SIGKILLed at every phase boundary, the stick pulled or
changed mid-copy, the disk filling up. Afterwards the old release still serves, nothing is
half-activated, and a re-import completes (copying only what was not yet verified)."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.bundles.errors import BundleError
from tests.bundles.conftest import PAYLOAD, Appliance, VendorKit, healthy

REPO = Path(__file__).resolve().parents[2]
Q4_POLICY = b"content_retention: 90d\n"
Q4_PAYLOAD = {
    **PAYLOAD,
    "policies/retention.yaml": Q4_POLICY,
    "models/tiny/shard-1.safetensors": os.urandom(6 << 20),
    "models/tiny/shard-2.safetensors": os.urandom(6 << 20),
    "models/tiny/shard-3.safetensors": os.urandom(6 << 20),
}


def _cli(appliance: Appliance, *args: str, fault: str | None = None) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "ENCLAVE_STATE_DIR": str(appliance.state_dir),
        "ENCLAVE_BUNDLE_TRUST_ROOT": str(appliance.shipped_root),
        "ENCLAVE_HARDWARE_CLASS": "cpu-dev",
    }
    env.pop("ENCLAVE_BUNDLE_FAULT_STOP_AT", None)
    if fault:
        env["ENCLAVE_BUNDLE_FAULT_STOP_AT"] = fault
    return subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "bundle", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(appliance: Appliance, *args: str) -> tuple[int, str]:
    proc = _cli(appliance, *args)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


def _wait_stopped(proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"the import ended (rc {proc.returncode}) before the fault point: {proc.stderr.read()}"
            )  # type: ignore[union-attr]
        time.sleep(0.02)
    raise AssertionError("the import never reached the fault point")


def _serving(appliance: Appliance) -> bytes:
    return (appliance.state_dir / "bundles" / "current" / "policies" / "retention.yaml").read_bytes()


def _consistent(appliance: Appliance) -> str:
    """Every pointer names the same release (nothing half-activated); returns that release."""
    current = appliance.state_dir / "bundles" / "current"
    releases = {os.readlink(link).split("/")[2] for link in current.iterdir()}
    assert len(releases) == 1, releases
    return releases.pop()


@pytest.fixture
def live_q3(tmp_path: Path, kit: VendorKit, appliance: Appliance) -> Path:
    manager = appliance.manager()
    manager.import_bundle(kit.build(tmp_path, PAYLOAD, "2026Q3", 1))
    manager.activate(healthy)
    return kit.build(tmp_path, Q4_PAYLOAD, "2026Q4", 2)


BEFORE_COMMIT = [
    "verified",
    "staging-object",
    "copied",
    "staged",
    "activating",
    "flipped-models",
    "activated",
]
AFTER_COMMIT = ["trust-committed", "confirmed"]


@pytest.mark.slow
@pytest.mark.parametrize("phase", BEFORE_COMMIT + AFTER_COMMIT)
def test_sigkill_at_phase_boundary(phase: str, appliance: Appliance, live_q3: Path) -> None:
    proc = _cli(appliance, "import", "--no-audit", str(live_q3), "--activate", fault=phase)
    _wait_stopped(proc)
    if phase == "staging-object":
        rc, out = _run(appliance, "import", "--no-audit", str(live_q3))
        assert rc == 1
        assert "bundle.busy" in out
    objects = appliance.state_dir / "bundles" / "objects"
    inodes = {p.name: p.stat().st_ino for p in objects.iterdir() if not p.name.startswith(".")}
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    rc, out = _run(appliance, "status")  # recovery runs here
    assert rc == 0, out
    if phase in AFTER_COMMIT:
        assert _consistent(appliance) == "2026Q4"
        assert _serving(appliance) == Q4_POLICY
        rc, out = _run(appliance, "import", "--no-audit", str(live_q3))
        assert rc == 1
        assert "bundle.not_newer" in out
        return
    assert _consistent(appliance) == "2026Q3"
    assert _serving(appliance) == PAYLOAD["policies/retention.yaml"]
    assert not list(objects.glob(".*.partial"))

    rc, out = _run(appliance, "import", "--no-audit", str(live_q3), "--activate")
    assert rc == 0, out
    assert _consistent(appliance) == "2026Q4"
    assert _serving(appliance) == Q4_POLICY
    for name, inode in inodes.items():  # verified objects were kept, not copied again
        assert (objects / name).stat().st_ino == inode


def _pull_stick_while_reading(bundle: Path, path: str) -> Callable[[str], None]:
    """A phase hook: once the bundle is verified, the stick is 'pulled' while `path` is being read. That
    file ends halfway and every file after it is gone; the one before it, models/tiny/shard-1, is read
    to the end (objects are copied two at a time, in path order, so it is copied beside `path`)."""

    def on_phase(phase: str) -> None:
        if phase == "verified":
            target = bundle / "targets" / path
            os.truncate(target, target.stat().st_size // 2)
            for rel in Q4_PAYLOAD:
                if rel not in (path, "models/tiny/shard-1.safetensors"):
                    (bundle / "targets" / rel).unlink(missing_ok=True)

    return on_phase


def test_stick_pulled_mid_copy_then_resumed(
    tmp_path: Path, kit: VendorKit, appliance: Appliance, live_q3: Path
) -> None:
    target = "models/tiny/shard-2.safetensors"
    manager = appliance.manager(on_phase=_pull_stick_while_reading(live_q3, target))
    before = _serving(appliance)
    with pytest.raises(BundleError) as caught:
        manager.import_bundle(live_q3)
    assert caught.value.code == "bundle.target_truncated"
    assert _serving(appliance) == before
    assert manager.read_state()["phase"] == "idle"
    objects = manager.store.objects
    kept = {p.name: p.stat().st_ino for p in objects.iterdir()}
    assert not [n for n in kept if n.startswith(".")]
    assert hashlib.sha256(Q4_PAYLOAD["models/tiny/shard-1.safetensors"]).hexdigest() in kept

    fresh = kit.build(tmp_path / "again", Q4_PAYLOAD, "2026Q4", 2)  # the stick, plugged in again
    copied: list[str] = []
    manager = appliance.manager(on_phase=copied.append)
    manager.import_bundle(fresh)
    manager.activate(healthy)
    assert _serving(appliance) == Q4_POLICY
    # shard-1 was verified before the pull; shard-2, shard-3 and the new policy are the only objects
    # copied now (config, weights and provisioning.tar are Q3's objects).
    assert copied.count("staging-object") == 3
    for name, inode in kept.items():
        assert (objects / name).stat().st_ino == inode


def test_file_grows_after_verification_is_caught_while_copying(appliance: Appliance, live_q3: Path) -> None:
    """TOCTOU: the stick's file gets longer between verification and copy; the copy stops at length + 1."""
    target = live_q3 / "targets" / "models" / "tiny" / "shard-3.safetensors"

    def grow(phase: str) -> None:
        if phase == "verified":
            with target.open("ab") as handle:
                handle.write(b"\0" * (8 << 20))

    manager = appliance.manager(on_phase=grow)
    with pytest.raises(BundleError) as caught:
        manager.import_bundle(live_q3)
    assert caught.value.code == "bundle.target_too_long"
    assert not list(manager.store.objects.glob(".*"))
    assert _serving(appliance) == PAYLOAD["policies/retention.yaml"]


@pytest.fixture
def small_disk(tmp_path: Path) -> object:
    """A real 64 MiB tmpfs mounted for the test (needs root, as CI and the appliance have)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_disk_too_small_is_refused_before_copying(tmp_path: Path, kit: VendorKit, small_disk: Path) -> None:
    shipped = tmp_path / "1.root.json"
    shipped.write_bytes((kit.roots_dir / "1.root.json").read_bytes())
    appliance = Appliance(small_disk / "state", shipped)
    (small_disk / "filler").write_bytes(b"\0" * (40 << 20))
    manager = appliance.manager()
    with pytest.raises(BundleError) as caught:
        manager.import_bundle(kit.build(tmp_path, Q4_PAYLOAD, "2026Q4", 2))
    assert caught.value.code == "bundle.no_space"
    assert list(manager.store.objects.iterdir()) == []
    assert not (manager.root / "current").exists()


def test_disk_fills_up_mid_copy_then_resumes(tmp_path: Path, kit: VendorKit, small_disk: Path) -> None:
    shipped = tmp_path / "1.root.json"
    shipped.write_bytes((kit.roots_dir / "1.root.json").read_bytes())
    appliance = Appliance(small_disk / "state", shipped)
    manager = appliance.manager()
    manager.import_bundle(kit.build(tmp_path, PAYLOAD, "2026Q3", 1))
    manager.activate(healthy)
    filler = small_disk / "filler"

    def fill(phase: str) -> None:  # another process eats the disk once the first object is staged
        if phase == "staging-object" and not filler.exists():
            free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
            with filler.open("wb") as handle:
                try:
                    handle.write(b"\0" * (free - (1 << 20)))
                    handle.flush()
                except OSError as exc:  # the copy running beside it took some of that space first
                    if exc.errno != errno.ENOSPC:
                        raise
                    os.truncate(filler, max(0, filler.stat().st_size - (1 << 20)))

    q4 = kit.build(tmp_path, Q4_PAYLOAD, "2026Q4", 2)
    with pytest.raises(BundleError) as caught:
        appliance.manager(on_phase=fill).import_bundle(q4)
    assert caught.value.code == "bundle.no_space"
    assert not list(manager.store.objects.glob(".*"))
    assert _serving(appliance) == PAYLOAD["policies/retention.yaml"]
    assert _consistent(appliance) == "2026Q3"

    filler.unlink()
    manager.import_bundle(q4)
    manager.activate(healthy)
    assert _serving(appliance) == Q4_POLICY
