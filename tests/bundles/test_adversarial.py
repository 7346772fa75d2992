"""Hostile and broken bundles: each is refused with a stable code, and nothing on the appliance changes.

Every case starts from a live appliance (release 2026Q3, sequence 1, activated) and tries to import a
bad bundle through the real UpdateManager. "Nothing changed" = the trust file, the pointers, the
releases, the staged objects and the state (other than the recorded last failure) are identical.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata, TargetFile, Targets

from appliance.bundles import vendor
from appliance.bundles.errors import BundleError
from appliance.bundles.layout import MAX_ROOT_ROTATIONS
from appliance.bundles.manager import UpdateManager
from tests.bundles.conftest import PAYLOAD, Appliance, VendorKit, healthy, snapshot_tree

Case = Callable[[Path, VendorKit], Path]


def _resign_targets(bundle: Path, kit: VendorKit, edit: Callable[[Targets], None], signers: tuple[str, ...]) -> None:
    """An attacker (or a careless release) that controls what two real targets keys sign."""
    path = bundle / "metadata" / "targets.json"
    md = Metadata[Targets].from_file(str(path))
    edit(md.signed)
    md.signatures.clear()
    for name in signers:
        md.sign(kit.signer(name), append=True)
    vendor.write_metadata(path, md)
    vendor.sign_bundle(bundle, targets_signers=[], release_signer=kit.signer("release"))


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=1))


def good(tmp: Path, kit: VendorKit, **kw: Any) -> Path:
    return kit.build(tmp, PAYLOAD, kw.pop("name", "2026Q4"), kw.pop("sequence", 2), **kw)


def case_tampered_targets_resigned_snapshot(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)

    def edit(data: dict[str, Any]) -> None:
        data["signed"]["x-enclave"]["hardware"] = ["cpu-dev", "anything"]

    _edit_json(bundle / "metadata" / "targets.json", edit)
    vendor.sign_bundle(bundle, targets_signers=[], release_signer=kit.signer("release"))
    return bundle


def case_targets_version_not_the_sequence(tmp: Path, kit: VendorKit) -> Path:
    """Signed by the vendor's real keys, but targets.json's version (TUF's rollback counter) says 7 while the
    release says #2: accepted, it would have made every later release below #7 look like a rollback."""
    bundle = good(tmp, kit, signers=())

    def edit(data: dict[str, Any]) -> None:
        data["signed"]["version"] = 7
        data["signatures"] = []

    _edit_json(bundle / "metadata" / "targets.json", edit)
    vendor.sign_bundle(
        bundle, targets_signers=[kit.signer("targets-1"), kit.signer("targets-2")], release_signer=kit.signer("release")
    )
    return bundle


def case_issued_in_future(tmp: Path, kit: VendorKit) -> Path:
    """Signed by the vendor, but issued in 2036 (a signing machine's clock gone wrong): accepted, that time
    would become the appliance's reference and every later bundle would look expired."""
    return good(tmp, kit, issued=datetime.now(UTC).replace(microsecond=0) + timedelta(days=3650))


def case_tampered_targets(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    _edit_json(bundle / "metadata" / "targets.json", lambda d: d["signed"]["x-enclave"].update(channel="stable "))
    return bundle


def case_tampered_snapshot(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    _edit_json(bundle / "metadata" / "snapshot.json", lambda d: d["signed"].update(version=9))
    return bundle


def case_tampered_timestamp(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    _edit_json(bundle / "metadata" / "timestamp.json", lambda d: d["signed"].update(version=9))
    return bundle


def case_unknown_key(tmp: Path, kit: VendorKit) -> Path:
    return good(tmp, kit, signers=("targets-1", "rogue"))


def case_threshold_not_met(tmp: Path, kit: VendorKit) -> Path:
    return good(tmp, kit, signers=("targets-3",))


def case_unsigned(tmp: Path, kit: VendorKit) -> Path:
    return good(tmp, kit, signers=())


def case_replay(tmp: Path, kit: VendorKit) -> Path:
    return kit.build(tmp, PAYLOAD, "2026Q3-again", 1)


def case_expired(tmp: Path, kit: VendorKit) -> Path:
    return good(tmp, kit, expires_days=-1)


def case_wrong_hardware(tmp: Path, kit: VendorKit) -> Path:
    return good(tmp, kit, hardware=("h200x8", "b200x8"))


def case_wrong_channel(tmp: Path, kit: VendorKit) -> Path:
    return good(tmp, kit, channel="beta")


def case_wrong_product(tmp: Path, kit: VendorKit) -> Path:
    return good(tmp, kit, product="other-appliance")


def case_mix_and_match(tmp: Path, kit: VendorKit) -> Path:
    a = good(tmp, kit)
    b = kit.build(tmp, {**PAYLOAD, "policies/retention.yaml": b"x: 1\n"}, "2026Q4", 3)
    shutil.copyfile(a / "metadata" / "targets.json", b / "metadata" / "targets.json")
    return b


def case_endless_target(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    with (bundle / "targets" / "provisioning.tar").open("ab") as handle:
        handle.write(b"\0" * 65536)
    return bundle


def case_truncated_target(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    os.truncate(bundle / "targets" / "models" / "tiny" / "model.safetensors", 1000)
    return bundle


def case_flipped_byte(tmp: Path, kit: VendorKit) -> Path:
    # New weights: an object the appliance already holds (same SHA-256) is never read from the stick again.
    bundle = kit.build(tmp, {**PAYLOAD, "models/tiny/model.safetensors": bytes(range(255, -1, -1)) * 512})
    with (bundle / "targets" / "models" / "tiny" / "model.safetensors").open("r+b") as handle:
        handle.seek(4097)
        byte = handle.read(1)
        handle.seek(4097)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return bundle


def case_extra_file(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    (bundle / "targets" / "models" / "tiny" / "backdoor.py").write_text("import os\n")
    return bundle


def case_extra_metadata(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    (bundle / "metadata" / "mirrors.json").write_text("{}")
    return bundle


def case_missing_file(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    (bundle / "targets" / "policies" / "retention.yaml").unlink()
    return bundle


def _signed_path(tmp: Path, kit: VendorKit, path: str) -> Path:
    bundle = good(tmp, kit)

    def edit(targets: Targets) -> None:
        targets.targets[path] = TargetFile(length=1, hashes={"sha256": "0" * 64}, path=path)

    _resign_targets(bundle, kit, edit, ("targets-1", "targets-2"))
    return bundle


def case_dotdot_path(tmp: Path, kit: VendorKit) -> Path:
    return _signed_path(tmp, kit, "models/../../../etc/cron.d/x")


def case_absolute_path(tmp: Path, kit: VendorKit) -> Path:
    return _signed_path(tmp, kit, "/etc/passwd")


def case_trailing_dot_path(tmp: Path, kit: VendorKit) -> Path:
    return _signed_path(tmp, kit, "models/tiny/weights.")


def case_symlink_in_tree(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    os.symlink("/etc/shadow", bundle / "targets" / "models" / "tiny" / "shadow")
    return bundle


def case_symlink_replaces_target(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    target = bundle / "targets" / "policies" / "retention.yaml"
    target.unlink()
    os.symlink("/etc/hostname", target)
    return bundle


def case_fifo_in_tree(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    os.mkfifo(bundle / "targets" / "models" / "pipe")
    return bundle


def case_device_in_tree(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    os.mknod(bundle / "targets" / "zero", 0o600 | 0o020000, os.makedev(1, 5))  # character device
    return bundle


def case_oversized_metadata(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    with (bundle / "metadata" / "timestamp.json").open("ab") as handle:
        handle.write(b" " * 20_000)
    return bundle


def case_root_not_signed_by_old(tmp: Path, kit: VendorKit) -> Path:
    for name in ("new-root-1", "new-root-2", "new-root-3"):
        kit.public[name] = vendor.generate_key(kit.keys_dir, name)
    previous = Metadata.from_file(str(kit.roots_dir / "1.root.json"))
    rotated = vendor.rotate_root(
        previous,  # type: ignore[arg-type]
        root_keys=[kit.public[f"new-root-{i}"] for i in (1, 2, 3)],
        targets_keys=[kit.public[f"targets-{i}"] for i in (1, 2, 3)],
        release_key=kit.public["release"],
        old_signers=[kit.signer("root-1")],  # one of the old keys: below the old threshold of 2
        new_signers=[kit.signer("new-root-1"), kit.signer("new-root-2")],
    )
    vendor.write_metadata(kit.roots_dir / "2.root.json", rotated)
    return good(tmp, kit)


def case_garbage_metadata(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    (bundle / "metadata" / "timestamp.json").write_bytes(b"\x00not json")
    return bundle


def case_not_a_bundle(tmp: Path, kit: VendorKit) -> Path:
    stick = tmp / "holiday-photos"
    stick.mkdir(parents=True)
    (stick / "IMG_0001.JPG").write_bytes(b"\xff\xd8")
    return stick


def case_half_written(tmp: Path, kit: VendorKit) -> Path:
    bundle = good(tmp, kit)
    (bundle / "metadata" / "timestamp.json").unlink()
    return bundle


CASES: list[tuple[str, Case, str]] = [
    ("tampered targets, snapshot re-signed", case_tampered_targets_resigned_snapshot, "bundle.bad_signature"),
    ("tampered targets", case_tampered_targets, "bundle.metadata_mismatch"),
    ("targets version is not the release sequence", case_targets_version_not_the_sequence, "bundle.sequence_mismatch"),
    ("issued years from now", case_issued_in_future, "bundle.issued_in_future"),
    ("tampered snapshot", case_tampered_snapshot, "bundle.metadata_mismatch"),
    ("tampered timestamp", case_tampered_timestamp, "bundle.bad_signature"),
    ("signature by an unknown key", case_unknown_key, "bundle.unknown_key"),
    ("threshold not met", case_threshold_not_met, "bundle.threshold_not_met"),
    ("signatures stripped", case_unsigned, "bundle.threshold_not_met"),
    ("replay of the current version", case_replay, "bundle.not_newer"),
    ("expired metadata", case_expired, "bundle.expired"),
    ("wrong hardware", case_wrong_hardware, "bundle.wrong_hardware"),
    ("wrong channel", case_wrong_channel, "bundle.wrong_channel"),
    ("another product", case_wrong_product, "bundle.wrong_product"),
    ("mix-and-match of two releases", case_mix_and_match, "bundle.metadata_mismatch"),
    ("target longer than signed", case_endless_target, "bundle.target_too_long"),
    ("target shorter than signed", case_truncated_target, "bundle.target_truncated"),
    ("one flipped byte", case_flipped_byte, "bundle.hash_mismatch"),
    ("extra file", case_extra_file, "bundle.extra_file"),
    ("extra metadata file", case_extra_metadata, "bundle.extra_file"),
    ("missing file", case_missing_file, "bundle.missing_file"),
    ("'..' in a signed path", case_dotdot_path, "bundle.unsafe_path"),
    ("absolute signed path", case_absolute_path, "bundle.unsafe_path"),
    ("signed path a stick would rename", case_trailing_dot_path, "bundle.path_not_portable"),
    ("symlink in the tree", case_symlink_in_tree, "bundle.unsafe_entry"),
    ("symlink instead of a target", case_symlink_replaces_target, "bundle.unsafe_entry"),
    ("named pipe in the tree", case_fifo_in_tree, "bundle.unsafe_entry"),
    ("device file in the tree", case_device_in_tree, "bundle.unsafe_entry"),
    ("oversized metadata", case_oversized_metadata, "bundle.metadata_too_large"),
    ("new root not signed by the old threshold", case_root_not_signed_by_old, "bundle.bad_root_rotation"),
    ("garbage metadata", case_garbage_metadata, "bundle.metadata_invalid"),
    ("a stick that is not a bundle", case_not_a_bundle, "bundle.not_a_bundle"),
    ("half-written bundle", case_half_written, "bundle.metadata_missing"),
]


def observable(manager: UpdateManager) -> dict[str, Any]:
    """Everything an import may change; the recorded last outcome is left out on purpose."""
    state = manager.read_state()
    state.pop("last", None)
    return {
        "trust": manager.trust_file.read_bytes() if manager.trust_file.exists() else b"",
        "state": state,
        "tree": {k: v for k, v in snapshot_tree(manager.root).items() if k not in ("state.json", "lock")},
    }


@pytest.fixture
def live(tmp_path: Path, kit: VendorKit, appliance: Appliance) -> UpdateManager:
    manager = appliance.manager()
    manager.import_bundle(kit.build(tmp_path, PAYLOAD, "2026Q3", 1))
    manager.activate(healthy)
    return manager


@pytest.mark.parametrize(("label", "make", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_bundle_is_refused_and_changes_nothing(
    label: str, make: Case, code: str, tmp_path: Path, kit: VendorKit, live: UpdateManager
) -> None:
    bundle = make(tmp_path / "attack", kit)
    before = observable(live)
    with pytest.raises(BundleError) as caught:
        live.import_bundle(bundle)
    assert caught.value.code == code, str(caught.value)
    assert observable(live) == before
    assert live.read_state()["last"]["code"] == code
    assert (live.pointers / "models" / "tiny" / "config.json").read_bytes() == PAYLOAD["models/tiny/config.json"]


def test_rollback_to_an_older_release_is_refused(tmp_path: Path, kit: VendorKit, live: UpdateManager) -> None:
    old = kit.build(tmp_path / "old", PAYLOAD, "2026Q2", 1)  # built before Q3, kept on a drawer stick
    live.import_bundle(kit.build(tmp_path, PAYLOAD, "2026Q4", 3))
    live.activate(healthy)
    newer_than_q3_older_than_q4 = kit.build(tmp_path, PAYLOAD, "2026Q3b", 2)
    before = observable(live)
    for bundle in (old, newer_than_q3_older_than_q4):
        with pytest.raises(BundleError) as caught:
            live.import_bundle(bundle)
        assert caught.value.code == "bundle.rollback", str(caught.value)
    assert observable(live) == before


def test_clock_set_back_does_not_revive_an_expired_bundle(tmp_path: Path, kit: VendorKit, appliance: Appliance) -> None:
    manager = appliance.manager()
    # The vendor's bundle of record was issued 40 days from the appliance's clock (its clock was set back).
    issued = datetime.now(UTC).replace(microsecond=0) + timedelta(days=40)
    manager.import_bundle(kit.build(tmp_path, PAYLOAD, "2026Q3", 1, issued=issued))
    manager.activate(healthy)
    # A bundle that expires in 30 days by the (wrong) clock is already expired by the accepted bundle's time.
    stale = kit.build(tmp_path, PAYLOAD, "2026Q4", 2, expires_days=30)
    before = observable(manager)
    with pytest.raises(BundleError) as caught:
        manager.import_bundle(stale)
    assert caught.value.code == "bundle.expired"
    assert observable(manager) == before


def test_a_bundle_issued_months_ahead_of_a_clock_set_back_is_still_taken(
    tmp_path: Path, kit: VendorKit, appliance: Appliance
) -> None:
    """The limit on a future issue time leaves room for an appliance whose clock is months behind."""
    manager = appliance.manager()
    issued = datetime.now(UTC).replace(microsecond=0) + timedelta(days=300)
    manager.import_bundle(kit.build(tmp_path, PAYLOAD, "2026Q3", 1, issued=issued, expires_days=700))
    manager.activate(healthy)
    assert manager.read_state()["current"]["release"] == "2026Q3"


def test_root_rotation_is_followed_and_old_targets_keys_are_dropped(
    tmp_path: Path, kit: VendorKit, live: UpdateManager
) -> None:
    kit.rotate_targets_keys()
    with pytest.raises(BundleError) as caught:
        live.import_bundle(kit.build(tmp_path, PAYLOAD, "2026Q4", 2))  # signed with the retired keys
    assert caught.value.code == "bundle.unknown_key"
    live.import_bundle(kit.build(tmp_path / "new", PAYLOAD, "2026Q4", 2, signers=("targets-4", "targets-6")))
    live.activate(healthy)
    trust = json.loads(live.trust_file.read_text())
    assert json.loads(trust["root"])["signed"]["version"] == 2


@pytest.mark.slow
def test_root_rotation_chain_longer_than_the_limit_is_refused(
    tmp_path: Path, kit: VendorKit, live: UpdateManager
) -> None:
    """A real chain: every root N+1 signed by two keys of root N. MAX_ROOT_ROTATIONS steps are walked;
    one more is refused before any of the chain is trusted (a stick cannot make the appliance walk forever)."""
    signers = [kit.signer("root-1"), kit.signer("root-2")]
    previous = Metadata.from_file(str(kit.roots_dir / "1.root.json"))
    for _ in range(MAX_ROOT_ROTATIONS):
        previous = vendor.rotate_root(
            previous,  # type: ignore[arg-type]
            root_keys=[kit.public[f"root-{i}"] for i in (1, 2, 3)],
            targets_keys=[kit.public[f"targets-{i}"] for i in (1, 2, 3)],
            release_key=kit.public["release"],
            old_signers=signers,
            new_signers=signers,
        )
        vendor.write_metadata(kit.roots_dir / f"{previous.signed.version}.root.json", previous)
    at_the_limit = kit.build(tmp_path / "limit", PAYLOAD, "2026Q4", 2)
    assert json.loads(live.verify(at_the_limit).metadata["root"])["signed"]["version"] == 1 + MAX_ROOT_ROTATIONS

    one_more = vendor.rotate_root(
        previous,  # type: ignore[arg-type]
        root_keys=[kit.public[f"root-{i}"] for i in (1, 2, 3)],
        targets_keys=[kit.public[f"targets-{i}"] for i in (1, 2, 3)],
        release_key=kit.public["release"],
        old_signers=signers,
        new_signers=signers,
    )
    vendor.write_metadata(kit.roots_dir / f"{one_more.signed.version}.root.json", one_more)
    too_long = kit.build(tmp_path / "over", PAYLOAD, "2026Q4", 2)
    before = observable(live)
    with pytest.raises(BundleError) as caught:
        live.import_bundle(too_long)
    assert caught.value.code == "bundle.too_many_rotations", str(caught.value)
    assert observable(live) == before
    assert live.read_state()["last"]["code"] == "bundle.too_many_rotations"
