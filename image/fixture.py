"""Fixture weights for the CPU image: deterministic bytes in place of real weights, signed like real ones.

They exercise the model store's signed-manifest check at boot; they are not a model an engine loads
(see docs/decisions/0502-no-engine-in-the-ci-image.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from image.hashes import atomic_write

MODEL, VERSION = "enclave-fixture", "1"


def _blob(seed: str, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def write_fixture_model(store: Path, key: Ed25519PrivateKey) -> Path:
    """Write <store>/enclave-fixture/1/{weights.bin, config.json, manifest.json, manifest.sig}."""
    version_dir = store / MODEL / VERSION
    files = {
        "config.json": json.dumps({"model_type": "enclave-fixture", "note": "fixture weights"}).encode(),
        "weights.bin": _blob("enclave-fixture-weights", 1 << 20),
    }
    entries = {}
    for name, data in files.items():
        atomic_write(version_dir / name, data)
        entries[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = json.dumps({"model": MODEL, "version": VERSION, "files": entries}, indent=1, sort_keys=True).encode()
    atomic_write(version_dir / "manifest.json", manifest)
    atomic_write(version_dir / "manifest.sig", key.sign(manifest))
    return version_dir
