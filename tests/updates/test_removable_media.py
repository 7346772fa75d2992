"""Bundles on removable media: discovery through pyudev over real block devices, and a stick that fails
with a read error (EIO) in the middle of a file while it is being copied.

The sticks are ext4 images on loop devices, mounted read-only (tests/fixtures/usb_stick.py says what is
real and what stands in: only udev's "this is on the USB bus" database entry, as no udevd runs here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgmt.audit.models import AuditEvent
from mgmt.updates.discovery import discover, removable_mount_points
from mgmt.updates.models import ImportJob
from mgmt.updates.services import do_request_import, run_job
from tests.bundles.conftest import PAYLOAD, VendorKit, snapshot_tree
from tests.fixtures.usb_stick import LoopStick, make_stick


@pytest.fixture
def sticks(tmp_path: Path) -> Iterator[list[LoopStick]]:
    made: list[LoopStick] = []
    yield made
    for stick in made:
        stick.close()


def _bundle_tree(kit: VendorKit, base: Path, files: dict[str, bytes], name: str, sequence: int) -> Path:
    """A directory holding one signed bundle, ready to become a stick's file system."""
    bundle = kit.build(base / "vendor-out", files, name, sequence)
    tree = base / f"tree-{name}"
    tree.mkdir()
    bundle.rename(tree / bundle.name)
    return tree


@pytest.fixture
def udev_only(media: Path, settings) -> None:
    """Discovery from udev alone: no watch directory, so whatever is found came through pyudev."""
    settings.UPDATES_WATCH_DIRS = []
    settings.UPDATES_USE_UDEV = True


@pytest.mark.django_db
@pytest.mark.parametrize("partitioned", [True, False], ids=["partition", "whole-disk"])
def test_bundle_on_a_usb_stick_is_discovered_through_udev_and_imported(
    partitioned: bool, tmp_path: Path, vendor_kit: VendorKit, personas, udev_only, sticks, settings
) -> None:
    tree = _bundle_tree(vendor_kit, tmp_path, PAYLOAD, "2026Q3", 1)
    stick = make_stick(tree, tmp_path / "stick.img", tmp_path / "USB STICK", partitioned=partitioned, size_mib=32)
    sticks.append(stick)

    # Mounted, but udev does not put it on the USB bus (a loop device, an internal disk): not offered.
    assert stick.mount not in removable_mount_points()
    assert discover() == []

    stick.tag_usb()
    assert stick.mount in removable_mount_points()  # found by device node; the space in the path unescaped
    found = discover()
    assert [(b.name, b.path.parent, b.error) for b in found] == [("ENCLAVE-2026Q3", stick.mount, None)]
    assert found[0].verified is not None and found[0].verified.release.release == "2026Q3"

    job = do_request_import("ENCLAVE-2026Q3", actor=personas.admin)
    assert Path(job.bundle_path) == stick.mount / "ENCLAVE-2026Q3"
    assert run_job(job.pk) == "done"
    staged = settings.STATE_DIR / "bundles" / "releases" / "2026Q3" / "files" / "models" / "tiny" / "config.json"
    assert staged.read_bytes() == PAYLOAD["models/tiny/config.json"]
    assert AuditEvent.objects.get(action="bundle.import").outcome == "ok"


@pytest.mark.django_db
def test_read_error_from_the_stick_mid_copy_changes_nothing_and_a_reimport_resumes(
    tmp_path: Path, vendor_kit: VendorKit, personas, udev_only, sticks, settings
) -> None:
    shard = bytes(range(256)) * (48 << 12)  # 48 MiB, read in several chunks
    files = {"models/big/a-config.json": b'{"model_type": "llama"}\n', "models/big/model.safetensors": shard}
    files["policies/retention.yaml"] = b"content_retention: off\n"
    tree = _bundle_tree(vendor_kit, tmp_path, files, "2026Q3", 1)
    stick = make_stick(tree, tmp_path / "stick.img", tmp_path / "usb", partitioned=False, size_mib=96)
    sticks.append(stick)
    stick.tag_usb()

    # The stick fails half-way through the shard: the blocks from there on return EIO from the block layer.
    # Verification reads only metadata (before the cut), so the copy starts and hits the error mid-file.
    shard_path = "ENCLAVE-2026Q3/targets/models/big/model.safetensors"
    cut = stick.physical_offset(shard_path, 0.5)
    others = [p for p in stick.mount.rglob("*") if p.relative_to(stick.mount) != Path(shard_path)]
    assert all(stick.end_offset(str(p.relative_to(stick.mount))) <= cut for p in others)  # only the shard is hit
    stick.cut_at(cut)
    job = do_request_import("ENCLAVE-2026Q3", actor=personas.admin)
    bundles = settings.STATE_DIR / "bundles"
    assert run_job(job.pk) == "bundle.source_unavailable"
    job.refresh_from_db()
    assert (job.status, job.error_code) == ("failed", "bundle.source_unavailable")
    assert "Input/output error" in job.error_message
    event = AuditEvent.objects.get(action="bundle.import")
    assert (event.outcome, event.data["code"]) == ("error", "bundle.source_unavailable")
    state = (bundles / "state.json").read_text()
    assert '"phase": "idle"' in state and '"current": null' in state
    tree_after = snapshot_tree(bundles)
    assert not any(name.endswith(".partial") for name in tree_after)  # the half-copied shard is gone
    assert not (bundles / "releases" / "2026Q3").exists()
    assert not (bundles / "current").exists()
    # Objects are copied two at a time: a-config.json (verified before the error) is kept for the resume,
    # and so is the policy if its copy had started before the error; the shard is not. Only whole,
    # verified files are kept.
    digests = {hashlib.sha256(data).hexdigest(): rel for rel, data in files.items()}
    kept = {p.name for p in (bundles / "objects").iterdir()}
    assert digests.keys() >= kept >= {hashlib.sha256(files["models/big/a-config.json"]).hexdigest()}
    assert hashlib.sha256(shard).hexdigest() not in kept

    # A good stick again (the vendor's copy): the import resumes and copies only what is missing.
    stick.close()
    sticks.remove(stick)
    good = make_stick(tree, tmp_path / "good.img", tmp_path / "usb2", partitioned=False, size_mib=96)
    sticks.append(good)
    good.tag_usb()
    again = do_request_import("ENCLAVE-2026Q3", actor=personas.admin)
    assert run_job(again.pk) == "done"
    again.refresh_from_db()
    assert again.skipped_bytes == sum(len(files[digests[name]]) for name in kept)
    staged = bundles / "releases" / "2026Q3" / "files" / "models" / "big" / "model.safetensors"
    assert staged.read_bytes() == shard
    assert ImportJob.objects.filter(status="done").count() == 1


@pytest.mark.django_db
def test_read_error_while_listing_the_stick_is_refused_and_changes_nothing(
    tmp_path: Path, vendor_kit: VendorKit, personas, udev_only, sticks, settings
) -> None:
    files = {**PAYLOAD, "models/big/model.safetensors": b"\1" * (8 << 20)}
    tree = _bundle_tree(vendor_kit, tmp_path, files, "2026Q3", 1)
    stick = make_stick(tree, tmp_path / "stick.img", tmp_path / "usb", partitioned=False, size_mib=64)
    sticks.append(stick)
    stick.tag_usb()
    job = do_request_import("ENCLAVE-2026Q3", actor=personas.admin)  # found while the stick still reads
    # Now the stick fails from the directory that lists the policies on: listing targets/ gets EIO.
    stick.cut_at(stick.end_offset("ENCLAVE-2026Q3/targets/policies") - 4096)
    bundles = settings.STATE_DIR / "bundles"
    before = snapshot_tree(bundles)
    assert run_job(job.pk) == "bundle.unreadable"
    job.refresh_from_db()
    assert (job.status, job.error_code) == ("failed", "bundle.unreadable")
    event = AuditEvent.objects.get(action="bundle.import")
    assert (event.outcome, event.data["code"]) == ("error", "bundle.unreadable")
    after = snapshot_tree(bundles)
    for bookkeeping in ("state.json", "lock"):  # the recorded failure (shown on the Updates page), the lock file
        before.pop(bookkeeping, None)
        after.pop(bookkeeping, None)
    assert after == before
    assert not (bundles / "objects").exists() or not any((bundles / "objects").iterdir())
    found = discover()  # the Updates page shows the refusal instead of failing
    assert [(b.name, b.error.code if b.error else None) for b in found] == [("ENCLAVE-2026Q3", "bundle.unreadable")]
