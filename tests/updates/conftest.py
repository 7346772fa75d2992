"""Fixtures for the console side of bundles: a vendor, a watched 'stick' directory, the appliance state."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bundles.conftest import VendorKit, _make_kit


@pytest.fixture
def vendor_kit(tmp_path: Path) -> VendorKit:
    return _make_kit(tmp_path / "vendor")


@pytest.fixture
def media(tmp_path: Path, vendor_kit: VendorKit, settings, monkeypatch) -> Path:
    """A 'stick' directory watched by the console, and the appliance's state, for this process and workers."""
    stick = tmp_path / "media"
    stick.mkdir()
    state = tmp_path / "state"
    root = tmp_path / "image" / "bundle-trust-root.json"
    root.parent.mkdir()
    root.write_bytes((vendor_kit.roots_dir / "1.root.json").read_bytes())
    settings.STATE_DIR = state
    settings.BUNDLE_TRUST_ROOT = root
    settings.UPDATES_WATCH_DIRS = [str(stick)]
    settings.UPDATES_SMOKE_ENDPOINTS = []
    monkeypatch.setenv("ENCLAVE_STATE_DIR", str(state))
    monkeypatch.setenv("ENCLAVE_BUNDLE_TRUST_ROOT", str(root))
    monkeypatch.setenv("ENCLAVE_UPDATES_WATCH_DIRS", str(stick))
    return stick


def put_on_stick(kit: VendorKit, stick: Path, files: dict[str, bytes], name: str, sequence: int, **kw) -> Path:
    built = kit.build(stick.parent / "vendor-out", files, name, sequence, **kw)
    return built.rename(stick / built.name)
