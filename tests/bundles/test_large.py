"""One flipped byte in a 1 GiB shard is caught while copying; the partial copy is removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.bundles import vendor
from appliance.bundles.errors import BundleError
from tests.bundles.conftest import PAYLOAD, Appliance, VendorKit, healthy

GIB = 1 << 30


@pytest.mark.slow
def test_flipped_byte_in_a_1gib_shard(tmp_path: Path, kit: VendorKit, appliance: Appliance) -> None:
    source = tmp_path / "release"
    shard = source / "models" / "big" / "model-00001-of-00001.safetensors"
    shard.parent.mkdir(parents=True)
    with shard.open("wb") as handle:  # sparse: mostly holes, a few real bytes
        handle.write(b"header")
        handle.seek(GIB - 6)
        handle.write(b"footer")
    for rel, data in PAYLOAD.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    bundle = vendor.build_bundle(source, tmp_path / "stick", release=kit.release("2026Q4", 1), roots_dir=kit.roots_dir)
    vendor.sign_bundle(
        bundle,
        targets_signers=[kit.signer("targets-1"), kit.signer("targets-2")],
        release_signer=kit.signer("release"),
    )
    on_stick = bundle / "targets" / "models" / "big" / shard.name
    offset = 700 * (1 << 20) + 12345
    with on_stick.open("r+b") as handle:
        handle.seek(offset)
        handle.write(b"\x01")
    manager = appliance.manager()
    with pytest.raises(BundleError) as caught:
        manager.import_bundle(bundle)
    assert caught.value.code == "bundle.hash_mismatch"
    assert [p.name for p in manager.store.objects.iterdir() if p.name.startswith(".")] == []
    assert not (manager.pointers).exists()

    with on_stick.open("r+b") as handle:  # the vendor's good copy again
        handle.seek(offset)
        handle.write(b"\x00")
    manager.import_bundle(bundle)
    manager.activate(healthy)
    assert os.path.getsize(manager.pointers / "models" / "big" / shard.name) == GIB
