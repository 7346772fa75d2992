"""SHA-256 file and Ed25519 signature of the disk image (the vendor's image key), and their check."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from image.errors import SignatureInvalid
from image.hashes import atomic_write, sha256_file


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The vendor's image-signing key. A development key is created (mode 0600) when none exists;
    a release build points ENCLAVE_IMAGE_SIGNING_KEY at the real one."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, pem)
        os.chmod(path, 0o600)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise SignatureInvalid(f"{path} is not an Ed25519 private key")
    return loaded


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign_image(image: Path, key: Ed25519PrivateKey) -> None:
    """Write IMAGE.sha256 (sha256sum format) and IMAGE.sig (Ed25519 over the .sha256 file's bytes)."""
    line = f"{sha256_file(image)}  {image.name}\n".encode()
    atomic_write(image.with_name(image.name + ".sha256"), line)
    atomic_write(image.with_name(image.name + ".sig"), key.sign(line))
    atomic_write(image.with_name(image.name + ".pub.pem"), public_pem(key))


def verify_image(image: Path, public_key_pem: bytes) -> None:
    """Check the signature over the .sha256 file, then the image against it."""
    sums = image.with_name(image.name + ".sha256")
    sig = image.with_name(image.name + ".sig")
    for required in (sums, sig):
        if not required.is_file():
            raise SignatureInvalid(f"{required.name} is missing next to {image}")
    public = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(public, Ed25519PublicKey):
        raise SignatureInvalid("the public key is not an Ed25519 key")
    try:
        public.verify(sig.read_bytes(), sums.read_bytes())
    except InvalidSignature as exc:
        raise SignatureInvalid(f"{sig.name} is not a valid signature of {sums.name}") from exc
    expected, _, name = sums.read_text(encoding="utf-8").strip().partition("  ")
    if name != image.name or sha256_file(image) != expected:
        raise SignatureInvalid(f"{image.name} does not match {sums.name}: the image was altered")
