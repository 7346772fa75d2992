"""The vendor side: keys, trust roots (and their rotation), `build` and threshold `sign`.

Roles (decision 0400): root 2-of-3 and targets 2-of-3 (offline keys held by different people), and one
"release" key for snapshot + timestamp (threshold 1): on a stick they only tie the files of one release
together. Private keys are PKCS#8 PEM files (0600); public keys are TUF key JSON (`NAME.pub.json`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from appliance.bundles.fsio import atomic_write
from appliance.bundles.layout import (
    CUSTOM_KEY,
    ReleaseInfo,
    check_portable_names,
    check_target_path,
    scan_targets_tree,
)

__all__ = [
    "build_bundle",
    "generate_key",
    "load_public_key",
    "load_signer",
    "make_root",
    "rotate_root",
    "sign_bundle",
    "write_metadata",
]

_CHUNK = 4 << 20
_SERIALIZER = JSONSerializer(compact=False)


def generate_key(directory: Path, name: str) -> Key:
    """Create an Ed25519 key pair: NAME.key (private, 0600) and NAME.pub.json (public)."""
    directory.mkdir(parents=True, exist_ok=True)
    signer = CryptoSigner(Ed25519PrivateKey.generate())
    atomic_write(directory / f"{name}.key", signer.private_bytes, mode=0o600)
    public = signer.public_key
    record = {"keyid": public.keyid, **public.to_dict()}
    atomic_write(directory / f"{name}.pub.json", json.dumps(record, indent=2).encode())
    return public


def load_public_key(path: Path) -> Key:
    record = json.loads(path.read_text())
    keyid = record.pop("keyid")
    return SSlibKey.from_dict(keyid, record)


def load_signer(path: Path) -> Signer:
    """A signer from a PKCS#8 PEM file. (A vendor HSM would be another Signer; none is faked here.)"""
    private = load_pem_private_key(path.read_bytes(), password=None)
    return CryptoSigner(private)  # type: ignore[arg-type]


def write_metadata(path: Path, metadata: Metadata[Any]) -> None:
    atomic_write(path, metadata.to_bytes(_SERIALIZER))


def _expiry(days: int) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)


def make_root(
    *,
    root_keys: Sequence[Key],
    targets_keys: Sequence[Key],
    release_key: Key,
    root_signers: Sequence[Signer],
    root_threshold: int = 2,
    targets_threshold: int = 2,
    expires_days: int = 3650,
    version: int = 1,
) -> Metadata[Root]:
    """A root naming the keys of every role, signed by `root_signers` (a threshold of `root_keys`)."""
    root = Root(version=version, expires=_expiry(expires_days), consistent_snapshot=False)
    root.roles[Root.type] = Role([], root_threshold)
    root.roles[Targets.type] = Role([], targets_threshold)
    for key in root_keys:
        root.add_key(key, Root.type)
    for key in targets_keys:
        root.add_key(key, Targets.type)
    root.add_key(release_key, Snapshot.type)
    root.add_key(release_key, Timestamp.type)
    metadata = Metadata(root)
    for signer in root_signers:
        metadata.sign(signer, append=True)
    return metadata


def rotate_root(
    previous: Metadata[Root],
    *,
    root_keys: Sequence[Key],
    targets_keys: Sequence[Key],
    release_key: Key,
    old_signers: Sequence[Signer],
    new_signers: Sequence[Signer],
    root_threshold: int = 2,
    targets_threshold: int = 2,
    expires_days: int = 3650,
) -> Metadata[Root]:
    """Root N+1: signed by a threshold of root N's keys and of its own (TUF spec 5.3.4/5.3.5)."""
    new = make_root(
        root_keys=root_keys,
        targets_keys=targets_keys,
        release_key=release_key,
        root_signers=new_signers,
        root_threshold=root_threshold,
        targets_threshold=targets_threshold,
        expires_days=expires_days,
        version=previous.signed.version + 1,
    )
    have = {sig.keyid for sig in new.signatures.values()}
    for signer in old_signers:
        if signer.public_key.keyid not in have:
            new.sign(signer, append=True)
    return new


def _copy_and_hash(source: Path, destination: Path, link: bool) -> tuple[int, str]:
    """Copy (or hard-link) one file into the bundle, hashing it in the same read pass."""
    digest = hashlib.sha256()
    length = 0
    destination.parent.mkdir(parents=True, exist_ok=True)
    if link:
        os.link(source, destination)
    with source.open("rb") as src, open(os.devnull, "wb") if link else destination.open("wb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            length += len(chunk)
    return length, digest.hexdigest()


def build_bundle(
    source: Path,
    out_dir: Path,
    *,
    release: ReleaseInfo,
    roots_dir: Path,
    expires_days: int = 365,
    link: bool = False,
) -> Path:
    """Copy a release tree into ENCLAVE-<release>/targets, hash every file, write unsigned targets.json.

    With `link`, files are hard-linked instead (no second copy of the weights; same file system).

    `roots_dir` holds the vendor's root chain (1.root.json ... N.root.json); all of it goes on the stick
    so that an appliance of any age can walk to the newest root.
    """
    bundle = out_dir / f"ENCLAVE-{release.release}"
    if bundle.exists():
        raise FileExistsError(f"{bundle} exists; remove it or pick another output directory")
    files = sorted(scan_targets_tree(source))
    for rel in files:  # every name is checked before anything is written
        check_target_path(rel)
    check_portable_names(files)
    targets = Targets(version=release.sequence, expires=_expiry(expires_days))
    for rel in files:
        length, sha256 = _copy_and_hash(source / rel, bundle / "targets" / rel, link)
        targets.targets[rel] = TargetFile(length=length, hashes={"sha256": sha256}, path=rel)
    (bundle / "targets").mkdir(parents=True, exist_ok=True)
    targets.unrecognized_fields[CUSTOM_KEY] = release.to_custom()
    metadata_dir = bundle / "metadata"
    metadata_dir.mkdir(parents=True)
    roots = sorted(roots_dir.glob("*.root.json"), key=lambda p: int(p.name.split(".")[0]))
    if not roots:
        raise FileNotFoundError(f"no N.root.json files in {roots_dir}")
    for root_file in roots:
        shutil.copyfile(root_file, metadata_dir / root_file.name)
    write_metadata(metadata_dir / "targets.json", Metadata(targets))
    return bundle


def sign_bundle(
    bundle: Path, *, targets_signers: Sequence[Signer], release_signer: Signer, expires_days: int = 365
) -> None:
    """Add targets signatures (kept across runs, so two people can sign one after the other), then
    regenerate snapshot.json and timestamp.json over the current targets.json with the release key."""
    metadata_dir = bundle / "metadata"
    targets_md = Metadata[Targets].from_file(str(metadata_dir / "targets.json"))
    for signer in targets_signers:
        targets_md.sign(signer, append=True)
    targets_bytes = targets_md.to_bytes(_SERIALIZER)
    atomic_write(metadata_dir / "targets.json", targets_bytes)

    version = targets_md.signed.version
    expires = _expiry(expires_days)
    snapshot = Snapshot(version=version, expires=expires)
    snapshot.meta["targets.json"] = MetaFile(
        version=version,
        length=len(targets_bytes),
        hashes={"sha256": hashlib.sha256(targets_bytes).hexdigest()},
    )
    snapshot_md = Metadata(snapshot)
    snapshot_md.sign(release_signer)
    snapshot_bytes = snapshot_md.to_bytes(_SERIALIZER)
    atomic_write(metadata_dir / "snapshot.json", snapshot_bytes)

    timestamp = Timestamp(
        version=version,
        expires=expires,
        snapshot_meta=MetaFile(
            version=version,
            length=len(snapshot_bytes),
            hashes={"sha256": hashlib.sha256(snapshot_bytes).hexdigest()},
        ),
    )
    timestamp_md = Metadata(timestamp)
    timestamp_md.sign(release_signer)
    atomic_write(metadata_dir / "timestamp.json", timestamp_md.to_bytes(_SERIALIZER))
