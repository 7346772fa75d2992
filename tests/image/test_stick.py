"""The boot test's USB sticks (image/stick.py) on the host: the bundles on them verify against the trust
root the image ships, and the activation's provisioning step (appliance.bundles.provision) behaves on
each: skipped where no playbook is configured (and says so), refused with a stable code, before
anything is applied, when the bundle names a package its apt repository lacks, and a failure of the
apply command rolls the pointers back. The VM test applies the good bundle's .deb for real."""

from __future__ import annotations

import hashlib
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


def test_the_junk_stick_is_formatted_whole_with_fat32(made: tuple[Path, Path]) -> None:
    """No partition table, as some sticks come from the shop: the appliance's udev rule must mount the
    whole disk (the VM test sees /dev/sdb mounted, not a partition)."""
    work, _ = made
    probe = subprocess.run(
        ["blkid", "-p", "-o", "export", str(work / "stick-junk.raw")], capture_output=True, text=True, check=True
    )
    found = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
    assert (found["TYPE"], found["VERSION"], found["USAGE"]) == ("vfat", "FAT32", "filesystem")
    assert "PTTYPE" not in found
    listing = subprocess.run(
        ["mdir", "-b", "-i", str(work / "stick-junk.raw"), "::/ENCLAVE-holiday-photos"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listing.stdout.split() == ["::/ENCLAVE-holiday-photos/IMG_0001.jpg"]


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


# -- the root-side applier trusts nothing the unprivileged manager staged ------------------------------
# A stand-in for ansible-playbook (apt cannot run on this host; tests/image/vm/test_boot.py runs the real
# playbook in the booted image): it records the `-e` variables it was given and the files under the
# bundle_dir they name, with their SHA-256, then exits 0. (The applier runs the playbook with a clean
# environment, so the evidence path is written into the script.)
STAND_IN = """#!/bin/sh
EVIDENCE=@EVIDENCE@
for last; do :; done
printf '%s\\n' "$last" > "$EVIDENCE.extra"
dir=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["bundle_dir"])' "$last")
(cd "$dir" && find . -type f -exec sha256sum {} +) > "$EVIDENCE.files"
"""


def _applier_manager(tmp_path: Path, keys: Path) -> tuple[UpdateManager, Path, Path]:
    """A manager whose provisioning step is the real applier (`run`), playbook replaced by the stand-in."""
    stand_in = tmp_path / "ansible-playbook-stand-in"
    evidence = tmp_path / "evidence"
    stand_in.write_text(STAND_IN.replace("@EVIDENCE@", str(evidence)))
    stand_in.chmod(0o755)
    work = tmp_path / "apply-work"
    command = [
        "env",
        f"ENCLAVE_STATE_DIR={tmp_path / 'state'}",
        f"ENCLAVE_BUNDLE_TRUST_ROOT={tmp_path / 'bundle-root.json'}",
        f"ENCLAVE_HARDWARE_CLASS={stick.HARDWARE_CLASS}",
        f"ENCLAVE_APPLY_WORK_DIR={work}",
        f"ENCLAVE_ANSIBLE_PLAYBOOK={stand_in}",
        sys.executable,
        str(APPLIER),
        "run",
    ]
    return _manager(tmp_path, keys, provisioner=command_provisioner(command, timeout=120)), work, evidence


def _release_debs(manager: UpdateManager) -> dict[str, str]:
    files = manager.releases / "2026Q4" / "files"
    return {
        str(p.relative_to(files)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (files / "debs").rglob("*")
        if p.is_file()
    }


def test_the_applier_verifies_the_release_and_gives_apt_only_its_own_checked_copy(
    made: tuple[Path, Path], tmp_path: Path
) -> None:
    work_dir, keys = made
    manager, work, evidence = _applier_manager(tmp_path, keys)
    manager.import_bundle(work_dir / "media-good" / "ENCLAVE-2026Q4")
    assert sorted(p.name for p in (manager.releases / "2026Q4" / "metadata").iterdir()) == [
        "snapshot.json",
        "targets.json",
        "timestamp.json",
    ]
    with pytest.raises(ProvisioningFailed) as caught:
        manager.activate(_gate)
    # The playbook ran (the stand-in), so verification passed; the probe package is then not installed on
    # this host, which the applier checks with dpkg-query: that is the failure here, and it rolls back.
    assert "BUNDLE_APT_NOT_INSTALLED" in caught.value.message
    extra = json.loads(Path(f"{evidence}.extra").read_text())
    assert extra["bundle_dir"] == str(work / "2026Q4")  # root's copy, not the manager's releases/
    assert extra["bundle_apt_packages"] == [stick.PROBE_PACKAGE]
    given = {line.split("  ./", 1)[1]: line.split()[0] for line in Path(f"{evidence}.files").read_text().splitlines()}
    assert given == _release_debs(manager)  # every signed debs/ file, byte for byte
    assert sorted(p.name for p in work.iterdir()) == []  # the copy is gone; nothing was recorded as applied
    assert manager.read_state()["current"] is None


def _activate_refused(manager: UpdateManager, evidence: Path, work: Path) -> str:
    with pytest.raises(ProvisioningFailed) as caught:
        manager.activate(_gate)
    assert caught.value.code == "bundle.provisioning_failed"
    assert "BUNDLE_APPLY_UNVERIFIED" in caught.value.message
    assert not Path(f"{evidence}.extra").exists()  # refused before any playbook ran
    assert not (work / "2026Q4").exists()
    state = manager.read_state()
    assert (state["phase"], state["current"]) == ("staged", None)
    assert list(manager.pointers.iterdir()) == []
    return caught.value.message


def test_the_applier_refuses_a_deb_swapped_after_the_import(made: tuple[Path, Path], tmp_path: Path) -> None:
    """What a compromised `enclave` user could do: replace a staged .deb (same length) before activation."""
    work_dir, keys = made
    manager, work, evidence = _applier_manager(tmp_path, keys)
    manager.import_bundle(work_dir / "media-good" / "ENCLAVE-2026Q4")
    deb = next((manager.releases / "2026Q4" / "files" / "debs").rglob("*.deb"))
    size = deb.stat().st_size
    deb.unlink()  # a hard link to the 0444 object: the link is replaced, the verified object stays
    deb.write_bytes(b"\x7fELF" + b"\0" * (size - 4))
    message = _activate_refused(manager, evidence, work)
    assert "bundle.hash_mismatch" in message


def test_the_applier_refuses_metadata_the_vendor_did_not_sign(made: tuple[Path, Path], tmp_path: Path) -> None:
    work_dir, keys = made
    manager, work, evidence = _applier_manager(tmp_path, keys)
    manager.import_bundle(work_dir / "media-good" / "ENCLAVE-2026Q4")
    targets = manager.releases / "2026Q4" / "metadata" / "targets.json"
    signed = json.loads(targets.read_text())
    for info in signed["signed"]["targets"].values():
        info["hashes"]["sha256"] = "0" * 64  # point the signed hashes at other files
    targets.chmod(0o644)
    targets.write_text(json.dumps(signed))
    message = _activate_refused(manager, evidence, work)
    assert "bundle.metadata_mismatch" in message  # snapshot.json pins the signed targets.json


def test_the_applier_refuses_a_release_older_than_what_it_applied(made: tuple[Path, Path], tmp_path: Path) -> None:
    work_dir, keys = made
    manager, work, evidence = _applier_manager(tmp_path, keys)
    manager.import_bundle(work_dir / "media-good" / "ENCLAVE-2026Q4")
    work.mkdir(mode=0o700)
    (work / "applied.json").write_text(json.dumps({"release": "2027Q1", "sequence": 99}))
    message = _activate_refused(manager, evidence, work)
    assert "bundle.rollback" in message and "2027Q1" in message
