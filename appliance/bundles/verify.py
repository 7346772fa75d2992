"""Verification of a bundle on the stick, in a fixed order, before a single payload byte is read.

1. layout: a bundle directory with metadata/ (only metadata names) and targets/
2. the root chain N -> N+1 -> ... carried in the bundle, each root signed by a threshold of the old
   and of its own keys (python-tuf's TrustedMetadataSet), at most MAX_ROOT_ROTATIONS steps
3. timestamp -> snapshot -> targets: signatures and thresholds, versions not older than the trusted
   ones, hashes/versions pinned by the role above (mix-and-match), expiry against
   max(system clock, signed issue time of the last accepted bundle)
4. the release: strictly newer sequence, product, channel, hardware class
5. the file list: safe paths, every signed file present, nothing else, only regular files

Every metadata read is capped (python-tuf's default sizes). No Django here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization import DeserializationError, SerializationError
from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
from tuf.ngclient.config import EnvelopeType

from appliance.bundles.errors import (
    BadRootRotation,
    BadSignature,
    BundleError,
    ExpiredBundle,
    ExtraFile,
    IssuedInFuture,
    MetadataInvalid,
    MetadataMismatch,
    MetadataMissing,
    MissingFile,
    NotABundle,
    NotNewer,
    Rollback,
    SequenceMismatch,
    TargetTooLong,
    TargetTruncated,
    ThresholdNotMet,
    TooManyRotations,
    UnknownKey,
    Unreadable,
    WrongChannel,
    WrongHardware,
    WrongProduct,
)
from appliance.bundles.fsio import read_bounded
from appliance.bundles.layout import (
    CUSTOM_KEY,
    MAX_LENGTHS,
    MAX_ROOT_ROTATIONS,
    PRODUCT,
    ReleaseInfo,
    check_target_path,
    check_top_level,
    scan_targets_tree,
    shown,
)
from appliance.bundles.trust import TrustState

__all__ = ["ApplianceIdentity", "BundleVerifier", "TargetEntry", "VerifiedBundle"]

# How far past the reference time a bundle may say it was issued: an appliance clock set back by months still
# takes a current bundle; a vendor's clock years ahead is refused before it becomes the reference (0401).
ISSUED_AHEAD_LIMIT = timedelta(days=366)

# python-tuf checks signatures over canonical JSON, which has no fractions and only valid Unicode; it raises
# SerializationError, with no message, for signed metadata that holds anything else.
_UNSIGNABLE = "holds a value no signature can cover (a number with a fraction, or text that is not valid Unicode)"


@dataclass(frozen=True)
class ApplianceIdentity:
    """What a bundle must be built for: product, release channel and hardware class."""

    product: str
    channel: str
    hardware_class: str

    @classmethod
    def from_env(cls) -> ApplianceIdentity:
        """This appliance: ENCLAVE_CHANNEL (default stable), ENCLAVE_HARDWARE_CLASS (default cpu-dev)."""
        return cls(
            PRODUCT, os.environ.get("ENCLAVE_CHANNEL", "stable"), os.environ.get("ENCLAVE_HARDWARE_CLASS", "cpu-dev")
        )


@dataclass(frozen=True)
class TargetEntry:
    path: str
    length: int
    sha256: str


@dataclass(frozen=True)
class VerifiedBundle:
    bundle_dir: Path
    release: ReleaseInfo
    targets: tuple[TargetEntry, ...]
    metadata: dict[str, bytes]
    root_chain: tuple[bytes, ...]
    digests: dict[str, str] = field(default_factory=dict)
    signers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(t.length for t in self.targets)

    def metadata_files(self) -> dict[str, bytes]:
        """The signed metadata as a bundle's metadata/ folder holds it (the root chain as N.root.json), for
        a staged release to keep: the root-side applier verifies that copy again (see verify_signed)."""
        files = {f"{Metadata[Any].from_bytes(data).signed.version}.root.json": data for data in self.root_chain}
        for role in ("timestamp", "snapshot", "targets"):
            files[f"{role}.json"] = self.metadata[role]
        return files


def _said(exc: Exception) -> str:
    """python-tuf's account of a failure as a message shows it: it may quote names from the metadata."""
    return shown(str(exc))


def _classify_unsigned(delegator: Root, role: str, data: bytes, exc: Exception) -> BundleError:
    """Say *why* a threshold was not met: a bad signature, an unknown signer, or too few signers."""
    try:
        md = Metadata[Any].from_bytes(data)
        role_keys = set(delegator.get_delegated_role(role).keyids)
        payload = md.signed_bytes
        for keyid, sig in md.signatures.items():
            if keyid in role_keys:
                try:
                    delegator.get_key(keyid).verify_signature(sig, payload)
                except Exception:
                    return BadSignature(f"{role}.json carries a signature by key {keyid[:16]} that does not verify")
        unknown = [k for k in md.signatures if k not in role_keys]
        if unknown:
            listed = ", ".join(shown(k[:16]) for k in unknown)
            return UnknownKey(f"{role}.json is signed by key(s) {listed} not trusted")
    except Exception:  # noqa: S110 - fall through to the generic message below
        pass
    return ThresholdNotMet(f"{role}.json: {_said(exc)}")


class BundleVerifier:
    """Verifies one bundle directory against the appliance's trust state; never writes anything."""

    def __init__(
        self,
        trust: TrustState,
        identity: ApplianceIdentity,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._trust = trust
        self._identity = identity
        self._clock = clock

    def reference_time(self) -> datetime:
        now = self._clock()
        if self._trust.accepted is not None and self._trust.accepted.issued > now:
            return self._trust.accepted.issued
        return now

    # --- reading the stick -------------------------------------------------------------------
    @staticmethod
    def _read(metadata_dir: Path, name: str, role: str) -> bytes:
        try:
            return read_bounded(metadata_dir / name, MAX_LENGTHS[role])
        except FileNotFoundError as exc:
            raise MetadataMissing(f"metadata/{name} is missing") from exc
        except PermissionError as exc:
            raise Unreadable(f"metadata/{name} cannot be read: {exc.strerror}") from exc

    def verify(self, bundle_dir: Path) -> VerifiedBundle:
        bundle_dir = Path(bundle_dir)
        metadata_dir = bundle_dir / "metadata"
        if not bundle_dir.is_dir() or not metadata_dir.is_dir():
            raise NotABundle(f"{bundle_dir} is not an Enclave bundle (no metadata/ directory)")
        try:
            check_top_level(bundle_dir)
        except OSError as exc:
            raise Unreadable(f"{bundle_dir} cannot be listed: {exc.strerror}") from exc

        trusted, metadata, root_chain, release = self._verify_metadata(metadata_dir)
        entries = self._signed_entries(trusted.targets)
        self._check_files(bundle_dir, entries)
        return VerifiedBundle(
            bundle_dir=bundle_dir,
            release=release,
            targets=entries,
            metadata=metadata,
            root_chain=tuple(root_chain),
            digests={role: hashlib.sha256(data).hexdigest() for role, data in metadata.items()},
            signers=self._signers(trusted, metadata),
        )

    def verify_signed(self, metadata_dir: Path) -> tuple[ReleaseInfo, tuple[TargetEntry, ...]]:
        """Verify a metadata/ folder alone (a staged release's copy): its release and its signed targets.

        For the root-side applier, which checks the files it uses itself and must not trust a tree."""
        if not Path(metadata_dir).is_dir():
            raise MetadataMissing(f"{metadata_dir} is missing: the release carries no signed metadata")
        trusted, _metadata, _chain, release = self._verify_metadata(Path(metadata_dir))
        return release, self._signed_entries(trusted.targets)

    def _verify_metadata(
        self, metadata_dir: Path
    ) -> tuple[TrustedMetadataSet, dict[str, bytes], list[bytes], ReleaseInfo]:
        try:
            trusted = TrustedMetadataSet(self._trust.root, EnvelopeType.METADATA)
        except tuf_exc.RepositoryError as exc:
            raise MetadataInvalid(f"the appliance's trusted root cannot be loaded: {exc}") from exc
        trusted.reference_time = self.reference_time()
        root_chain = self._walk_roots(trusted, metadata_dir)
        self._load_local(trusted)

        metadata: dict[str, bytes] = {}
        metadata["timestamp"] = self._read(metadata_dir, "timestamp.json", "timestamp")
        self._step(trusted, Timestamp.type, metadata["timestamp"], lambda d: trusted.update_timestamp(d))
        metadata["snapshot"] = self._read(metadata_dir, "snapshot.json", "snapshot")
        self._step(trusted, Snapshot.type, metadata["snapshot"], lambda d: trusted.update_snapshot(d))
        metadata["targets"] = self._read(metadata_dir, "targets.json", "targets")
        self._step(trusted, Targets.type, metadata["targets"], lambda d: trusted.update_targets(d))

        release = ReleaseInfo.from_custom(trusted.targets.unrecognized_fields.get(CUSTOM_KEY))
        if trusted.targets.version != release.sequence:
            # `bundle build` writes both from one number; TUF's rollback check reads the one, ours the other
            raise SequenceMismatch(
                f"targets.json is version {trusted.targets.version} but names release "
                f"#{release.sequence}; the two must be the same"
            )
        self._check_release(release)
        metadata["root"] = root_chain[-1] if root_chain else self._trust.root
        return trusted, metadata, root_chain, release

    # --- steps ---------------------------------------------------------------------------------
    def _walk_roots(self, trusted: TrustedMetadataSet, metadata_dir: Path) -> list[bytes]:
        chain: list[bytes] = []
        for _ in range(MAX_ROOT_ROTATIONS):
            name = f"{trusted.root.version + 1}.root.json"
            if not (metadata_dir / name).exists():
                return chain
            data = self._read(metadata_dir, name, "root")
            try:
                trusted.update_root(data)
            except DeserializationError as exc:
                raise MetadataInvalid(f"metadata/{name} cannot be parsed: {exc}") from exc
            except SerializationError as exc:
                raise MetadataInvalid(f"metadata/{name} {_UNSIGNABLE}") from exc
            except tuf_exc.RepositoryError as exc:
                raise BadRootRotation(
                    f"metadata/{name} is not a valid successor of root v{trusted.root.version}: {_said(exc)}"
                ) from exc
            chain.append(data)
        if (metadata_dir / f"{trusted.root.version + 1}.root.json").exists():
            raise TooManyRotations(f"more than {MAX_ROOT_ROTATIONS} root versions to walk")
        return chain

    def _load_local(self, trusted: TrustedMetadataSet) -> None:
        """Load the last accepted timestamp/snapshot for rollback protection (as python-tuf's Updater does).

        If their keys were rotated by the new root they no longer verify and are dropped (fast-forward
        recovery); the accepted release sequence still guards against rollback.
        """
        if self._trust.timestamp is None:
            return
        try:
            trusted.update_timestamp(self._trust.timestamp)
        except tuf_exc.ExpiredMetadataError as exc:
            if "root" in str(exc):
                raise ExpiredBundle(f"the newest trust root has expired: {exc}") from exc
        except tuf_exc.RepositoryError:
            return

    def _step(self, trusted: TrustedMetadataSet, role: str, data: bytes, update: Callable[[bytes], Any]) -> None:
        if role == Snapshot.type and self._trust.snapshot is not None and Snapshot.type not in trusted:
            # the last accepted snapshot: kept for the rollback check of the new one, if it loads
            with contextlib.suppress(tuf_exc.RepositoryError):
                trusted.update_snapshot(self._trust.snapshot, trusted=True)
        try:
            update(data)
        except tuf_exc.UnsignedMetadataError as exc:
            raise _classify_unsigned(trusted.root, role, data, exc) from exc
        except tuf_exc.EqualVersionNumberError as exc:
            raise NotNewer(f"{role}.json has the same version as the bundle already accepted") from exc
        except tuf_exc.BadVersionNumberError as exc:
            pinned = "Expected snapshot version" in str(exc) or role == Targets.type
            if not pinned:
                raise Rollback(f"{role}.json is older than what the appliance already accepted: {_said(exc)}") from exc
            raise MetadataMismatch(f"{role}.json does not belong with the rest of the metadata: {_said(exc)}") from exc
        except tuf_exc.ExpiredMetadataError as exc:
            raise ExpiredBundle(f"{exc} (checked against {trusted.reference_time:%Y-%m-%d %H:%M} UTC)") from exc
        except tuf_exc.LengthOrHashMismatchError as exc:
            raise MetadataMismatch(f"{role}.json does not match the hash pinned by the role above it") from exc
        except DeserializationError as exc:
            raise MetadataInvalid(f"{role}.json cannot be parsed: {exc}") from exc
        except SerializationError as exc:
            raise MetadataInvalid(f"{role}.json {_UNSIGNABLE}") from exc
        except tuf_exc.RepositoryError as exc:
            text = _said(exc)
            if "missing info" in text:
                raise MetadataMismatch(f"{role}.json: {text}") from exc
            raise MetadataInvalid(f"{role}.json: {text}") from exc

    def _check_release(self, release: ReleaseInfo) -> None:
        # Accepted, a signed issue time years ahead (a vendor clock gone wrong) would become the appliance's
        # reference time and make every later bundle look expired, with no way back short of a new trust root.
        reference = self.reference_time()
        if release.issued - reference > ISSUED_AHEAD_LIMIT:  # a difference: no overflow near year 9999
            raise IssuedInFuture(
                f"release {release.release} says it was issued {release.issued:%Y-%m-%d %H:%M %Z}, more than "
                f"{ISSUED_AHEAD_LIMIT.days} days after {reference:%Y-%m-%d %H:%M} UTC (the appliance's clock, or "
                "the issue time of the last accepted bundle if later)"
            )
        accepted = self._trust.accepted
        if accepted is not None:
            if release.sequence == accepted.sequence:
                raise NotNewer(f"release {release.release} (#{release.sequence}) was already imported")
            if release.sequence < accepted.sequence:
                raise Rollback(
                    f"release {release.release} (#{release.sequence}) is older than the accepted "
                    f"{accepted.release} (#{accepted.sequence})"
                )
        if release.product != self._identity.product:
            raise WrongProduct(f"the bundle is for product {release.product!r}, not {self._identity.product!r}")
        if release.channel != self._identity.channel:
            raise WrongChannel(
                f"the bundle is for channel {release.channel!r}, this appliance follows {self._identity.channel!r}"
            )
        if self._identity.hardware_class not in release.hardware:
            raise WrongHardware(
                f"the bundle supports {', '.join(release.hardware) or 'no hardware'}, this appliance is "
                f"{self._identity.hardware_class!r}"
            )

    @staticmethod
    def _signed_entries(targets: Targets) -> tuple[TargetEntry, ...]:
        entries: list[TargetEntry] = []
        for path, info in sorted(targets.targets.items()):
            check_target_path(path)
            if isinstance(info.length, bool):  # python-tuf takes true/false as a length of 1/0
                raise MetadataInvalid(f"target {path} has a length that is not a number")
            sha256 = info.hashes.get("sha256", "")
            if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
                raise MetadataInvalid(f"target {path} has no SHA-256 hash")
            entries.append(TargetEntry(path, info.length, sha256))
        return tuple(entries)

    @staticmethod
    def _check_files(bundle_dir: Path, entries: tuple[TargetEntry, ...]) -> None:
        targets_dir = bundle_dir / "targets"
        try:
            on_stick = scan_targets_tree(targets_dir) if targets_dir.is_dir() else {}
        except OSError as exc:  # no permission, or the stick itself fails (EIO) or goes away
            raise Unreadable(f"targets/ cannot be listed: {exc.strerror}") from exc
        signed = {e.path for e in entries}
        extra = sorted(set(on_stick) - signed)
        if extra:
            raise ExtraFile(f"{shown('targets/' + extra[0])} is not listed in the signed metadata ({len(extra)} extra)")
        missing = sorted(signed - set(on_stick))
        if missing:
            raise MissingFile(f"targets/{missing[0]} is missing ({len(missing)} missing)")
        for entry in entries:
            size = on_stick[entry.path]
            if size > entry.length:
                raise TargetTooLong(f"targets/{entry.path} holds {size} bytes, {entry.length} were signed")
            if size < entry.length:
                raise TargetTruncated(f"targets/{entry.path} holds {size} bytes, {entry.length} were signed")

    @staticmethod
    def _signers(trusted: TrustedMetadataSet, metadata: dict[str, bytes]) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for role in (Timestamp.type, Snapshot.type, Targets.type):
            md = Metadata[Any].from_bytes(metadata[role])
            verification = trusted.root.get_verification_result(role, md.signed_bytes, md.signatures)
            result[role] = sorted(verification.signed)
        return result
