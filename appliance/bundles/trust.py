"""What the appliance trusts: the newest root, the metadata of the last accepted bundle, and its facts.

One JSON file written atomically, so that trust moves from one bundle to the next in one step. Before
the first bundle it is seeded from the root shipped in the image (ENCLAVE_BUNDLE_TRUST_ROOT).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from appliance.bundles.errors import MetadataInvalid, TrustRootMissing
from appliance.bundles.fsio import atomic_write

__all__ = ["AcceptedRelease", "TrustState", "load_trust", "save_trust"]


@dataclass(frozen=True)
class AcceptedRelease:
    release: str
    sequence: int
    issued: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"release": self.release, "sequence": self.sequence, "issued": self.issued.isoformat()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AcceptedRelease:
        return cls(str(raw["release"]), int(raw["sequence"]), datetime.fromisoformat(raw["issued"]))


@dataclass(frozen=True)
class TrustState:
    root: bytes
    timestamp: bytes | None = None
    snapshot: bytes | None = None
    targets: bytes | None = None
    accepted: AcceptedRelease | None = None

    def to_json(self) -> bytes:
        def text(data: bytes | None) -> str | None:
            return None if data is None else data.decode()

        record = {
            "root": text(self.root),
            "timestamp": text(self.timestamp),
            "snapshot": text(self.snapshot),
            "targets": text(self.targets),
            "accepted": None if self.accepted is None else self.accepted.to_dict(),
        }
        return json.dumps(record, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TrustState:
        raw = json.loads(data)

        def blob(name: str) -> bytes | None:
            value = raw.get(name)
            return None if value is None else str(value).encode()

        root = blob("root")
        if root is None:
            raise MetadataInvalid("the appliance's trust file has no root")
        accepted = raw.get("accepted")
        return cls(
            root=root,
            timestamp=blob("timestamp"),
            snapshot=blob("snapshot"),
            targets=blob("targets"),
            accepted=None if accepted is None else AcceptedRelease.from_dict(accepted),
        )


def load_trust(trust_file: Path, shipped_root: Path) -> TrustState:
    if trust_file.exists():
        return TrustState.from_json(trust_file.read_bytes())
    try:
        return TrustState(root=shipped_root.read_bytes())
    except OSError as exc:
        raise TrustRootMissing(f"cannot read the shipped trust root {shipped_root}: {exc.strerror}") from exc


def save_trust(trust_file: Path, state: TrustState) -> None:
    atomic_write(trust_file, state.to_json(), mode=0o600)
