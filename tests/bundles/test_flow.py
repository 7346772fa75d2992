"""The normal life of bundles on one appliance: import, activate, the next quarter, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.bundles.errors import BundleError
from appliance.bundles.manager import FACTORY_RELEASE
from appliance.bundles.rootside import private_copy
from tests.bundles.conftest import IDENTITY, PAYLOAD, Appliance, VendorKit, healthy


def test_import_activate_and_next_release(tmp_path: Path, kit: VendorKit, appliance: Appliance) -> None:
    manager = appliance.manager()
    first = kit.build(tmp_path, PAYLOAD, "2026Q3", 1)
    job = manager.import_bundle(first)
    assert job["release"]["release"] == "2026Q3"
    assert set(job["signers"]["targets"]) == {kit.public["targets-1"].keyid, kit.public["targets-2"].keyid}
    assert manager.read_state()["phase"] == "staged"
    manager.activate(healthy)
    pointers = manager.pointers
    assert (pointers / "models" / "tiny" / "model.safetensors").read_bytes() == PAYLOAD["models/tiny/model.safetensors"]
    assert (pointers / "policies" / "retention.yaml").read_bytes() == PAYLOAD["policies/retention.yaml"]
    state = manager.read_state()
    assert state["current"]["release"] == "2026Q3"
    assert (state["previous"]["release"], state["previous"]["pointers"]) == (FACTORY_RELEASE, {})
    trust = json.loads(manager.trust_file.read_text())
    assert trust["accepted"]["sequence"] == 1

    second_payload = {**PAYLOAD, "policies/retention.yaml": b"content_retention: 30d\n"}
    second = kit.build(tmp_path, second_payload, "2026Q4", 2)
    manager.import_bundle(second)
    manager.activate(healthy)
    assert (pointers / "policies" / "retention.yaml").read_bytes() == b"content_retention: 30d\n"
    state = manager.read_state()
    assert (state["current"]["release"], state["previous"]["release"]) == ("2026Q4", "2026Q3")

    manager.rollback()
    assert (pointers / "policies" / "retention.yaml").read_bytes() == b"content_retention: off\n"
    assert manager.read_state()["current"]["release"] == "2026Q3"


def test_the_first_update_rolls_back_to_the_factory_image_and_forward_again(
    tmp_path: Path, kit: VendorKit, appliance: Appliance
) -> None:
    """Before the first activation the appliance runs what its image shipped (here: no pointers, so the
    engines serve the model store's own folder). The first update can be rolled back to that like any
    release; trust stays where the update took it; a second rollback returns to the update; the next
    quarter imports and activates from the factory image, which then stays the previous release."""
    manager = appliance.manager()
    manager.import_bundle(kit.build(tmp_path, PAYLOAD, "2026Q3", 1))
    manager.activate(healthy)
    trust_after_update = manager.trust_file.read_bytes()

    state = manager.rollback()
    assert (state["current"]["release"], state["previous"]["release"]) == (FACTORY_RELEASE, "2026Q3")
    assert state["last"]["message"] == f"returned from 2026Q3 to {FACTORY_RELEASE}"
    assert not any(manager.pointers.iterdir())  # as shipped: no pointer at all
    assert manager.trust_file.read_bytes() == trust_after_update
    with pytest.raises(BundleError) as caught:  # the 2026Q3 bundle itself is not accepted again
        manager.import_bundle(kit.build(tmp_path / "again", PAYLOAD, "2026Q3", 1))
    assert caught.value.code == "bundle.not_newer"

    state = manager.rollback()
    assert (state["current"]["release"], state["previous"]["release"]) == ("2026Q3", FACTORY_RELEASE)
    assert (manager.pointers / "policies" / "retention.yaml").read_bytes() == PAYLOAD["policies/retention.yaml"]

    manager.rollback()  # back to the factory image, then the next quarter on top of it
    manager.import_bundle(kit.build(tmp_path, {**PAYLOAD, "policies/retention.yaml": b"7d\n"}, "2026Q4", 2))
    state = manager.activate(healthy)
    assert (state["current"]["release"], state["previous"]["release"]) == ("2026Q4", FACTORY_RELEASE)
    assert (manager.pointers / "policies" / "retention.yaml").read_bytes() == b"7d\n"
    assert not (manager.releases / "2026Q3").exists()  # only the current and the previous release are kept
    state = manager.rollback()
    assert state["current"]["release"] == FACTORY_RELEASE
    assert not any(manager.pointers.iterdir())


def test_after_a_rollback_the_next_release_still_keeps_the_whole_root_chain(
    tmp_path: Path, kit: VendorKit, appliance: Appliance
) -> None:
    """2026Q4 brought root v2 and was rolled back; trust stays at v2, so 2027Q1's import walks no new root.
    2027Q1's kept metadata must still hold 2.root.json (found with the previous release, not the current
    one), or root's applier, which verifies a release from the shipped root alone, could not verify it."""
    manager = appliance.manager()
    manager.import_bundle(kit.build(tmp_path, PAYLOAD, "2026Q3", 1))
    manager.activate(healthy)
    kit.rotate_targets_keys()
    manager.import_bundle(kit.build(tmp_path, PAYLOAD, "2026Q4", 2, signers=("targets-4", "targets-6")))
    manager.activate(healthy)
    manager.rollback()
    assert manager.read_state()["current"]["release"] == "2026Q3"
    changed = {**PAYLOAD, "policies/retention.yaml": b"7d\n"}
    manager.import_bundle(kit.build(tmp_path, changed, "2027Q1", 3, signers=("targets-5", "targets-6")))
    kept = manager.releases / "2027Q1" / "metadata"
    assert sorted(p.name for p in kept.glob("*.root.json")) == ["2.root.json"]
    work = tmp_path / "apply"
    release, copied, _entries = private_copy(manager.releases / "2027Q1", work, appliance.shipped_root, IDENTITY)
    assert (release.release, release.sequence) == ("2027Q1", 3)
    assert copied.is_dir()


def test_unchanged_objects_are_not_copied_again(tmp_path: Path, kit: VendorKit, appliance: Appliance) -> None:
    manager = appliance.manager()
    manager.import_bundle(kit.build(tmp_path, PAYLOAD, "2026Q3", 1))
    manager.activate(healthy)
    copied: list[str] = []
    manager = appliance.manager(on_phase=lambda phase: copied.append(phase))
    changed = {**PAYLOAD, "policies/retention.yaml": b"content_retention: 7d\n"}
    manager.import_bundle(kit.build(tmp_path, changed, "2026Q4", 2))
    assert copied.count("staging-object") == 1


def test_demo_bundle_verifies_and_imports_on_the_demo_appliance(tmp_path: Path) -> None:
    from appliance.bundles.demo_bundle import main as demo_bundle
    from appliance.bundles.manager import UpdateConfig, UpdateManager
    from tests.bundles.conftest import IDENTITY

    model = tmp_path / "tiny-fixture"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert demo_bundle(["--state-dir", str(tmp_path / "var"), "--model", str(model)]) == 0
    assert demo_bundle(["--state-dir", str(tmp_path / "var")]) == 0  # again: same demo keys, same trust root
    manager = UpdateManager(UpdateConfig(tmp_path / "var", tmp_path / "var" / "bundle-trust-root.json", IDENTITY))
    manager.import_bundle(tmp_path / "var" / "media" / "ENCLAVE-2026Q4")
    manager.activate(lambda pointers: None)
    assert "demo bundle 2026Q4" in (manager.pointers / "policies" / "retention.yaml").read_text()


def test_staged_copies_are_byte_identical_across_chunk_and_block_edges(
    tmp_path: Path, kit: VendorKit, appliance: Appliance
) -> None:
    """Direct (O_DIRECT) writes for aligned chunks, ordinary writes for the unaligned tail."""
    import os

    sizes = {"a": (4 << 20) + 4095, "b": 8 << 20, "c": 4097, "d": 1}
    payload = {f"models/edge/{name}.bin": os.urandom(size) for name, size in sizes.items()}
    manager = appliance.manager()
    manager.import_bundle(kit.build(tmp_path, {**PAYLOAD, **payload}, "2026Q3", 1))
    manager.activate(healthy)
    for rel, data in payload.items():
        assert (manager.pointers / "models" / rel.split("/", 1)[1]).read_bytes() == data
