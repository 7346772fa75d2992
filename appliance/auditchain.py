"""The audit trail's hash chain and signed checkpoints: a pure core, no Django, no database.

h_n = SHA-256(h_{n-1} || canonical(event_n)), h_0 = 32 zero bytes (or, after a retention purge, the hash
of the signed checkpoint the purge stopped at). Every so often the sealer signs a checkpoint
(seq, event id, h_seq, time) with the appliance's Ed25519 audit key.

`ChainVerifier` walks sealed rows in seq order and names the first event that does not match. It is used
by the console, by `enclavectl audit verify` against the database, and offline against an export
directory with nothing but the exported files and the public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "EVENT_FIELDS",
    "GENESIS",
    "ChainVerifier",
    "Checkpoint",
    "Finding",
    "Report",
    "canonical_event",
    "chain_hash",
    "format_ts",
    "key_id",
    "load_or_create_private_key",
    "load_public_key",
    "sign_checkpoint",
]

GENESIS = bytes(32)
# The order is part of the format: changing it breaks every existing chain.
EVENT_FIELDS = (
    "id",
    "ts",
    "actor_id",
    "actor",
    "department",
    "action",
    "outcome",
    "target_type",
    "target_id",
    "ip",
    "data",
)

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode


def format_ts(value: datetime) -> str:
    """Timestamps in the chain: UTC, microseconds, 'Z'."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_event(event: Sequence[Any] | Mapping[str, Any]) -> bytes:
    """The bytes hashed for one event: a JSON array of EVENT_FIELDS in order, data with sorted keys.

    `event` is either a mapping by field name or a sequence of values in EVENT_FIELDS order.
    """
    values = [event[name] for name in EVENT_FIELDS] if isinstance(event, Mapping) else list(event)
    ts = values[1]
    if isinstance(ts, datetime):
        values[1] = format_ts(ts)
    return _dumps(values).encode("utf-8")


def chain_hash(previous: bytes, event: Sequence[Any] | Mapping[str, Any]) -> bytes:
    return hashlib.sha256(previous + canonical_event(event)).digest()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    event_id: int
    hash: str  # hex of h_seq
    signed_at: str  # format_ts
    key_id: str
    signature: str = ""  # base64 Ed25519 over payload()

    def payload(self) -> bytes:
        body = [
            "enclave-audit-checkpoint-v1",
            self.seq,
            self.event_id,
            self.hash,
            self.signed_at,
            self.key_id,
        ]
        return _dumps(body).encode("utf-8")

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        try:
            public_key.verify(base64.b64decode(self.signature), self.payload())
        except (InvalidSignature, ValueError):
            return False
        return True

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "hash": self.hash,
            "signed_at": self.signed_at,
            "key_id": self.key_id,
            "signature": self.signature,
        }


def sign_checkpoint(
    private_key: Ed25519PrivateKey, *, seq: int, event_id: int, hash_hex: str, signed_at: datetime
) -> Checkpoint:
    unsigned = Checkpoint(seq, event_id, hash_hex, format_ts(signed_at), key_id(private_key.public_key()))
    signature = base64.b64encode(private_key.sign(unsigned.payload())).decode("ascii")
    return Checkpoint(**{**unsigned.as_dict(), "signature": signature})


@dataclass(frozen=True)
class Finding:
    """One thing wrong with the trail. `code` is stable; `message` is for people."""

    code: str
    seq: int | None
    event_id: int | None
    message: str


@dataclass
class Report:
    events: int = 0
    findings: list[Finding] = field(default_factory=list)
    last_checkpoint: Checkpoint | None = None
    checkpoints_checked: int = 0

    @property
    def intact(self) -> bool:
        return not self.findings

    @property
    def first_bad(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    def summary(self) -> str:
        if self.intact:
            if self.last_checkpoint is None:
                return f"{self.events} events, chain intact, nothing sealed yet (the sealer runs every few seconds)"
            return f"{self.events} events, chain intact, last checkpoint signed at {self.last_checkpoint.signed_at}"
        first = self.findings[0]
        return f"{self.events} events, CHAIN BROKEN: {first.message} ({len(self.findings)} finding(s))"


# A sealed row as the verifier sees it: seq, the event's values in EVENT_FIELDS order (None when the
# event row is gone), and the stored hash in hex.
SealedRow = tuple[int, Sequence[Any] | None, str]


class ChainVerifier:
    """Checks sealed rows (in seq order) against the chain and the signed checkpoints.

    Continues after a finding (re-anchoring on the stored hash) so one report lists every bad event,
    but `Report.first_bad` is the one an investigator starts from.
    """

    def __init__(
        self,
        public_key: Ed25519PublicKey,
        checkpoints: Iterable[Checkpoint],
        *,
        max_findings: int = 100,
    ) -> None:
        self._public_key = public_key
        self._checkpoints = {cp.seq: cp for cp in checkpoints}
        self._max_findings = max_findings

    def _start(self, first_seq: int, report: Report) -> bytes:
        if first_seq == 1:
            return GENESIS
        anchor = self._checkpoints.get(first_seq - 1)
        if anchor is None or not anchor.verify(self._public_key):
            report.findings.append(
                Finding(
                    "audit.head_missing",
                    first_seq,
                    None,
                    f"the trail starts at seq {first_seq} but no signed checkpoint covers seq {first_seq - 1}:"
                    " events at the start were removed outside a retention purge",
                )
            )
            return GENESIS
        return bytes.fromhex(anchor.hash)

    def verify(
        self, rows: Iterable[SealedRow], *, after: tuple[int, str] | None = None, complete: bool = False
    ) -> Report:
        """Check `rows`. `after=(seq, stored hash hex)` continues from the row before the first one, so a
        long trail can be verified in ranges in parallel (each row needs only its predecessor's seal).

        `complete=True` says `rows` are the whole trail (an export): then its end must be covered by a signed
        checkpoint, no signed checkpoint may lie beyond it, and every checkpoint must carry a good signature.
        Without that, an unkeyed hash chain proves nothing about rows dropped from, or rewritten at, the end."""
        report = Report()
        findings = report.findings
        checkpoints = self._checkpoints
        previous: bytes | None = None if after is None else bytes.fromhex(after[1])
        expected_seq = 0 if after is None else after[0] + 1
        checked: set[int] = set()  # checkpoints looked at during the walk
        last_seq: int | None = None
        sha256 = hashlib.sha256
        for seq, event, stored in rows:
            if previous is None:
                previous = self._start(seq, report)
                expected_seq = seq
                checked.add(seq - 1)
            last_seq = seq
            if seq < expected_seq:
                findings.append(
                    Finding(
                        "audit.seal_gap",
                        seq,
                        None,
                        f"seal record {seq} comes after seal record {expected_seq - 1}: repeated or out of order",
                    )
                )
                expected_seq = seq
            elif seq != expected_seq:
                findings.append(
                    Finding(
                        "audit.seal_gap",
                        expected_seq,
                        None,
                        f"seal records {expected_seq}..{seq - 1} are missing (removed behind the application's back)",
                    )
                )
                expected_seq = seq
            expected_seq += 1
            if event is None:
                findings.append(
                    Finding("audit.event_deleted", seq, None, f"the event sealed at seq {seq} has been deleted")
                )
                previous = bytes.fromhex(stored)
                continue
            report.events += 1
            computed = sha256(previous + canonical_event(event)).digest()
            if computed.hex() != stored:
                findings.append(
                    Finding(
                        "audit.event_altered",
                        seq,
                        event[0],
                        f"event {event[0]} (seq {seq}) does not match its seal: edited, reordered or replaced",
                    )
                )
                computed = bytes.fromhex(stored)
            previous = computed
            checkpoint = checkpoints.get(seq)
            if checkpoint is not None:
                checked.add(seq)
                self._check_checkpoint(checkpoint, seq, computed, report)
            if len(findings) >= self._max_findings:
                break
        else:
            if complete:
                self._check_ends(checked, last_seq, report)
        return report

    def _check_ends(self, checked: set[int], last_seq: int | None, report: Report) -> None:
        """For a whole trail: checkpoints the walk did not reach are signed, none lies beyond the last row,
        and the last row is covered by one (the sealer signs one at the end of every run)."""
        newest_signed: int | None = None
        for seq in sorted(self._checkpoints):
            if seq in checked:
                continue
            checkpoint = self._checkpoints[seq]
            if not self._signed(checkpoint, seq, report):
                continue
            if last_seq is None or seq > last_seq:
                newest_signed = seq
        if newest_signed is not None:
            start = 1 if last_seq is None else last_seq + 1
            report.findings.append(
                Finding(
                    "audit.seal_gap",
                    start,
                    None,
                    f"seal records {start}..{newest_signed} are missing from the end of the trail, although a"
                    f" signed checkpoint covers seq {newest_signed}: events at the end were removed",
                )
            )
        elif last_seq is not None and last_seq not in self._checkpoints:
            covered = report.last_checkpoint.seq + 1 if report.last_checkpoint is not None else None
            span = f"{covered}..{last_seq}" if covered is not None else f"up to {last_seq}"
            report.findings.append(
                Finding(
                    "audit.tail_unsigned",
                    last_seq,
                    None,
                    f"seal records {span} at the end of the trail are covered by no signed checkpoint: they"
                    " could have been rewritten or appended without the audit key",
                )
            )

    def _signed(self, checkpoint: Checkpoint, seq: int, report: Report) -> bool:
        """Whether the checkpoint's signature is good; a finding if not."""
        if checkpoint.verify(self._public_key):
            return True
        report.findings.append(
            Finding(
                "audit.checkpoint_signature",
                seq,
                checkpoint.event_id,
                f"the checkpoint at seq {seq} has a bad signature",
            )
        )
        return False

    def _check_checkpoint(self, checkpoint: Checkpoint, seq: int, computed: bytes, report: Report) -> None:
        report.checkpoints_checked += 1
        if not self._signed(checkpoint, seq, report):
            return
        if checkpoint.hash != computed.hex():
            report.findings.append(
                Finding(
                    "audit.checkpoint_mismatch",
                    seq,
                    checkpoint.event_id,
                    f"the chain at seq {seq} differs from the signed checkpoint: seals were rewritten",
                )
            )
        else:
            report.last_checkpoint = checkpoint


# --- keys ----------------------------------------------------------------------------------------


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """Load the appliance audit key, creating it (mode 0600, atomically) on first start."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # fails if another process created the key meanwhile: keep theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _write_atomic(path.with_name(path.stem + ".pub.pem"), public_pem, 0o644)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return loaded


def load_public_key(path: Path) -> Ed25519PublicKey:
    loaded = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return loaded


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
