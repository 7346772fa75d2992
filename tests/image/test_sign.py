"""The disk image's SHA-256 file and Ed25519 signature."""

from __future__ import annotations

from pathlib import Path

import pytest

from image import sign
from image.errors import SignatureInvalid


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, bytes]:
    image = tmp_path / "enclave.raw"
    image.write_bytes(b"\0" * 4096 + b"enclave")
    key = sign.load_or_create_key(tmp_path / "keys" / "image.pem")
    sign.sign_image(image, key)
    return image, sign.public_pem(key)


def test_a_signed_image_verifies(signed: tuple[Path, bytes]) -> None:
    image, public = signed
    sign.verify_image(image, public)
    assert (image.parent / "enclave.raw.sha256").read_text().endswith("  enclave.raw\n")
    assert oct((image.parent / "keys" / "image.pem").stat().st_mode & 0o777) == "0o600"


def test_an_altered_image_is_refused(signed: tuple[Path, bytes]) -> None:
    image, public = signed
    with image.open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\1")
    with pytest.raises(SignatureInvalid) as err:
        sign.verify_image(image, public)
    assert err.value.code == "IMAGE_SIGNATURE_INVALID"
    assert "altered" in str(err.value)


def test_a_checksum_file_rewritten_to_match_is_refused_by_the_signature(signed: tuple[Path, bytes]) -> None:
    image, public = signed
    image.write_bytes(b"another image")
    from image.hashes import sha256_file

    (image.parent / "enclave.raw.sha256").write_text(f"{sha256_file(image)}  enclave.raw\n")
    with pytest.raises(SignatureInvalid, match="not a valid signature"):
        sign.verify_image(image, public)


def test_another_key_is_refused(signed: tuple[Path, bytes], tmp_path: Path) -> None:
    image, _ = signed
    other = sign.public_pem(sign.load_or_create_key(tmp_path / "other.pem"))
    with pytest.raises(SignatureInvalid):
        sign.verify_image(image, other)
