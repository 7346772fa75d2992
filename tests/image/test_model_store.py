"""The model store's boot-time verifier (provisioning/roles/model_store/files/enclave-model-verify), run as
the real program against a store holding the image's signed fixture weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from image import fixture, sign

VERIFY = Path(__file__).resolve().parents[2] / "provisioning/roles/model_store/files/enclave-model-verify"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    key = sign.load_or_create_key(tmp_path / "models.pem")
    (tmp_path / "models.pub").write_bytes(sign.public_pem(key))
    root = tmp_path / "models"
    fixture.write_fixture_model(root, key)
    (root / fixture.MODEL / "current").symlink_to(fixture.VERSION)
    return root


def _verify(store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(VERIFY), "--root", str(store), "--key", str(store.parent / "models.pub")],
        capture_output=True,
        text=True,
        check=False,
    )


def _snapshot(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}


def test_signed_fixture_weights_pass(store: Path) -> None:
    proc = _verify(store)
    assert proc.returncode == 0, proc.stderr
    assert "enclave-fixture/1 OK (2 files)" in proc.stdout


def test_a_tampered_weights_file_is_named_and_left_alone(store: Path) -> None:
    weights = store / "enclave-fixture" / "1" / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[12345] ^= 0x01
    weights.write_bytes(bytes(data))
    before = _snapshot(store)
    proc = _verify(store)
    assert proc.returncode == 1
    assert "MODEL_STORE_HASH_MISMATCH" in proc.stderr
    assert "enclave-fixture/1/weights.bin" in proc.stderr
    assert _snapshot(store) == before


def test_a_truncated_weights_file_is_named(store: Path) -> None:
    weights = store / "enclave-fixture" / "1" / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:-1])
    proc = _verify(store)
    assert proc.returncode == 1
    assert "MODEL_STORE_SIZE_MISMATCH" in proc.stderr


def test_an_extra_file_is_named(store: Path) -> None:
    (store / "enclave-fixture" / "1" / "backdoor.py").write_text("print('hi')\n")
    proc = _verify(store)
    assert proc.returncode == 1
    assert "MODEL_STORE_EXTRA_FILE" in proc.stderr
    assert "backdoor.py" in proc.stderr


def test_a_manifest_edited_to_match_is_refused_by_its_signature(store: Path) -> None:
    manifest = store / "enclave-fixture" / "1" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"enclave-fixture"', '"enclave-fixturf"'))
    proc = _verify(store)
    assert proc.returncode == 1
    assert "MODEL_STORE_BAD_SIGNATURE" in proc.stderr


def test_a_pointer_leaving_the_model_folder_is_refused(store: Path, tmp_path: Path) -> None:
    pointer = store / "enclave-fixture" / "current"
    pointer.unlink()
    pointer.symlink_to(tmp_path)
    proc = _verify(store)
    assert proc.returncode == 1
    assert "MODEL_STORE_BAD_POINTER" in proc.stderr
