"""Fixture models for the CPU image, signed like real ones with the vendor's model key.

- enclave-fixture/1: deterministic bytes in place of real weights (no engine loads them); they exercise
  the model store's signed-manifest check at boot.
- enclave-fixture-gguf/1: the tiny GGUF fixture (appliance/engines/fixture_gguf.py, `make fixture-gguf`)
  as model.gguf, which the image's llama-server engine serves (docs/decisions/0502).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from image.hashes import atomic_write

MODEL, VERSION = "enclave-fixture", "1"
GGUF_MODEL = "enclave-fixture-gguf"
# The GGUF file itself (mk/llama.mk: make fixture-gguf).
_DEFAULT_GGUF = Path(__file__).resolve().parent.parent / "build" / "fixture-gguf" / "enclave-fixture.gguf"
GGUF_FILE = Path(os.environ.get("ENCLAVE_IMAGE_FIXTURE_GGUF", _DEFAULT_GGUF))


def _blob(seed: str, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def write_fixture_model(store: Path, key: Ed25519PrivateKey) -> Path:
    """Write <store>/enclave-fixture/1/{weights.bin, config.json, manifest.json, manifest.sig}."""
    files = {
        "config.json": json.dumps({"model_type": "enclave-fixture", "note": "fixture weights"}).encode(),
        "weights.bin": _blob("enclave-fixture-weights", 1 << 20),
    }
    return write_signed_model(store / MODEL / VERSION, MODEL, files, key)


def write_gguf_model(store: Path, key: Ed25519PrivateKey, gguf: Path, version: str = VERSION) -> Path:
    """Write <store>/enclave-fixture-gguf/<version>/{model.gguf, manifest.json, manifest.sig}."""
    files = {"model.gguf": gguf.read_bytes()}
    return write_signed_model(store / GGUF_MODEL / version, GGUF_MODEL, files, key, version)


def write_signed_model(
    version_dir: Path, model: str, files: dict[str, bytes], key: Ed25519PrivateKey, version: str = VERSION
) -> Path:
    """Write `files` into `version_dir` with the model store's manifest.json (size and SHA-256 of each),
    signed with `key` in manifest.sig."""
    entries = {}
    for name, data in files.items():
        atomic_write(version_dir / name, data)
        (version_dir / name).chmod(0o644)  # the engines (user enclave) read the weights
        entries[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = json.dumps({"model": model, "version": version, "files": entries}, indent=1, sort_keys=True).encode()
    atomic_write(version_dir / "manifest.json", manifest)
    atomic_write(version_dir / "manifest.sig", key.sign(manifest))
    return version_dir
