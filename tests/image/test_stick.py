"""The boot test's USB sticks (image/stick.py) on the host: the bundles on them verify against the trust
root the image ships, and the activation's provisioning step (appliance.bundles.provision) behaves on
each: skipped where no playbook is configured (and says so), refused with a stable code, before
anything is applied, when the bundle names a package its apt repository lacks, and a failure of the
apply command rolls the pointers back. The VM test applies the good bundle's .deb for real."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.bundles.errors import AptPackageMissing, ProvisioningFailed
from appliance.bundles.layout import PRODUCT
from appliance.bundles.manager import UpdateConfig, UpdateManager
from appliance.bundles.provision import command_provisioner
from appliance.bundles.verify import ApplianceIdentity
from image import stick

APPLIER = Path(__file__).resolve().parents[2] / "provisioning/roles/enclave_app/files/enclave-apply-bundle"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("sticks")
    keys = work / "keys"
    sticks = stick.boot_test_sticks(work, keys)
    assert sticks["good"].stat().st_size > 0
    return work, keys


def _manager(tmp_path: Path, keys: Path, **kwargs: object) -> UpdateManager:
    root = tmp_path / "bundle-root.json"
    root.write_bytes(stick.trust_root(keys))
    config = UpdateConfig(
        state_dir=tmp_path / "state",
        shipped_root=root,
        identity=ApplianceIdentity(PRODUCT, "stable", stick.HARDWARE_CLASS),
    )
    return UpdateManager(config, **kwargs)  # type: ignore[arg-type]


def _gate(pointers: Path) -> None:
    for link in pointers.iterdir():
        assert link.resolve().is_dir()


def test_the_stick_is_one_ext4_partition_holding_the_bundles(made: tuple[Path, Path]) -> None:
    work, _ = made
    table = subprocess.run(
        ["sfdisk", "--json", str(work / "stick-good.raw")], capture_output=True, text=True, check=True
    )
    partitions = json.loads(table.stdout)["partitiontable"]["partitions"]
    assert [p["type"] for p in partitions] == ["83"]
    assert sorted(p.name for p in (work / "media-good").iterdir()) == ["ENCLAVE-2026Q4", "ENCLAVE-2026Q4-broken"]


def test_without_a_playbook_the_step_is_skipped_and_says_so(made: tuple[Path, Path], tmp_path: Path) -> None:
    work, keys = made
    manager = _manager(tmp_path, keys)
    job = manager.import_bundle(work / "media-good" / "ENCLAVE-2026Q4")
    assert job["release"]["release"] == "2026Q4"
    state = manager.activate(_gate)
    provisioning = state["current"]["provisioning"]
    assert provisioning["outcome"] == "skipped"
    assert provisioning["packages_named"] == [stick.PROBE_PACKAGE]
    assert "not applied" in provisioning["message"]
    assert state["current"]["pointers"]["models"] == "../releases/2026Q4/files/models"


def test_a_bundle_naming_a_package_its_repository_lacks_is_rolled_back(made: tuple[Path, Path], tmp_path: Path) -> None:
    work, keys = made
    manager = _manager(tmp_path, keys)
    manager.import_bundle(work / "media-good" / "ENCLAVE-2026Q4-broken")
    before = sorted(p.name for p in manager.pointers.iterdir()) if manager.pointers.exists() else []
    with pytest.raises(AptPackageMissing) as caught:
        manager.activate(_gate)
    assert caught.value.code == "bundle.apt_package_missing"
    assert "enclave-not-in-this-bundle" in caught.value.message
    state = manager.read_state()
    assert state["phase"] == "staged"
    assert state["current"] is None
    assert state["last"]["code"] == "bundle.apt_package_missing"
    assert (sorted(p.name for p in manager.pointers.iterdir()) if manager.pointers.exists() else []) == before


def test_a_failing_apply_command_is_a_stable_code_and_rolls_back(made: tuple[Path, Path], tmp_path: Path) -> None:
    """The real root-side applier, run against a folder that is not one of its releases (its state dir
    is another one): it refuses before any playbook runs; the manager restores the pointers."""
    work, keys = made
    elsewhere = tmp_path / "applier-state"
    (elsewhere / "bundles" / "releases").mkdir(parents=True)
    command = ["env", f"ENCLAVE_STATE_DIR={elsewhere}", sys.executable, str(APPLIER), "run"]
    manager = _manager(tmp_path, keys, provisioner=command_provisioner(command, timeout=120))
    manager.import_bundle(work / "media-good" / "ENCLAVE-2026Q4")
    with pytest.raises(ProvisioningFailed) as caught:
        manager.activate(_gate)
    assert caught.value.code == "bundle.provisioning_failed"
    assert "BUNDLE_APPLY_NOT_A_RELEASE" in caught.value.message
    state = manager.read_state()
    assert (state["phase"], state["current"]) == ("staged", None)
    assert state["last"]["code"] == "bundle.provisioning_failed"
    assert manager.pointers.is_dir()
    assert list(manager.pointers.iterdir()) == []


def test_the_applier_refuses_a_release_without_a_repository(tmp_path: Path) -> None:
    files = tmp_path / "bundles" / "releases" / "r1" / "files"
    files.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, str(APPLIER), "run", str(files)],
        capture_output=True,
        text=True,
        check=False,
        env={"ENCLAVE_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "BUNDLE_APT_NO_REPOSITORY" in done.stderr
    shutil.rmtree(files)
