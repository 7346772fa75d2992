"""The bundle's directory layout on the stick, and the checks on names and tree entries.

    ENCLAVE-<release>/metadata/{1.root.json, 2.root.json, ..., timestamp.json, snapshot.json, targets.json}
    ENCLAVE-<release>/targets/<path as listed in targets.json>

The release facts that bind a bundle to a product, channel and hardware class live in targets.json's
signed part under the key `x-enclave` (so they are covered by the targets signatures).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from appliance.bundles.errors import ExtraFile, MetadataInvalid, PathNotPortable, UnsafeEntry, UnsafePath

__all__ = [
    "CUSTOM_KEY",
    "MAX_LENGTHS",
    "MAX_ROOT_ROTATIONS",
    "PRODUCT",
    "ReleaseInfo",
    "check_portable_names",
    "check_target_path",
    "check_top_level",
    "scan_targets_tree",
    "shown",
]

PRODUCT = "enclave"
CUSTOM_KEY = "x-enclave"
MAX_ROOT_ROTATIONS = 256
# python-tuf ngclient's defaults: no genuine bundle comes near them.
MAX_LENGTHS = {"root": 512_000, "timestamp": 16_384, "snapshot": 2_000_000, "targets": 5_000_000}
MAX_TARGETS = 100_000
MAX_DEPTH = 32
# Matched with fullmatch: `$` also matches before a trailing newline ("2026Q4\n").
_RELEASE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_METADATA_RE = re.compile(r"([1-9][0-9]{0,8}\.root|timestamp|snapshot|targets)\.json")
_COMPONENT_RE = re.compile(r"[A-Za-z0-9._+@=-]{1,255}")


def shown(name: str) -> str:
    """A name from the stick as a message shows it: as it is if printable, else quoted with escapes. People
    read messages in a terminal, and the console stores them in PostgreSQL, which takes no NUL or lone
    surrogate (what a name that is not UTF-8 becomes)."""
    return name if name.isprintable() else repr(name)


@dataclass(frozen=True)
class ReleaseInfo:
    """What the vendor says about a release, from targets.json's signed `x-enclave` field."""

    product: str
    release: str
    sequence: int
    channel: str
    hardware: tuple[str, ...]
    issued: datetime

    @classmethod
    def from_custom(cls, raw: Any) -> ReleaseInfo:
        if not isinstance(raw, dict):
            raise MetadataInvalid(f"targets.json has no '{CUSTOM_KEY}' release description")
        try:
            product, release, sequence = raw["product"], raw["release"], raw["sequence"]
            channel, hardware, issued = raw["channel"], raw["hardware"], raw["issued"]
            if not (isinstance(product, str) and isinstance(channel, str) and isinstance(release, str)):
                raise TypeError("product, release and channel must be strings")
            if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
                raise TypeError("sequence must be a positive integer")
            if not isinstance(hardware, list) or not all(isinstance(h, str) and h.isprintable() for h in hardware):
                raise TypeError("hardware must be a list of printable names")
            when = datetime.fromisoformat(str(issued).replace("Z", "+00:00"))
            if when.tzinfo is None:
                raise TypeError("issued must carry a time zone")
        except (KeyError, TypeError, ValueError) as exc:
            raise MetadataInvalid(f"targets.json's '{CUSTOM_KEY}' field is malformed: {exc}") from exc
        if not _RELEASE_RE.fullmatch(release):
            raise MetadataInvalid(f"release name {release!r} is not allowed")
        return cls(product, release, sequence, channel, tuple(hardware), when)

    def to_custom(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "release": self.release,
            "sequence": self.sequence,
            "channel": self.channel,
            "hardware": list(self.hardware),
            "issued": self.issued.isoformat().replace("+00:00", "Z"),
        }


def check_target_path(path: str) -> str:
    """Accept only plain relative paths made of safe components; return the path unchanged."""
    if not path or len(path) > 1024 or path.startswith("/") or "\\" in path or "\x00" in path:
        raise UnsafePath(f"target path {path!r} is not a plain relative path")
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise UnsafePath(f"target path {path!r} is nested too deeply")
    for part in parts:
        if part in ("", ".", "..") or not _COMPONENT_RE.fullmatch(part):
            raise UnsafePath(f"target path {path!r} has a component {part!r} that is not allowed")
        if part.endswith("."):
            # exFAT (Linux's driver, by default) and FAT drop it: the file would arrive under another name.
            raise PathNotPortable(f"target path {path!r} has a component {part!r} that ends in a dot")
    return path


def check_portable_names(paths: Iterable[str]) -> None:
    """Refuse two target paths, or two of their directories, that differ only in letter case.

    Bundles travel on USB sticks, and the file systems a stick of model-sized files carries (exFAT; FAT
    for small ones) ignore case: the two would become one file or one directory there, and the bundle
    would no longer verify on the appliance. The vendor's build refuses them before writing anything."""
    seen: dict[str, str] = {}
    for path in paths:
        parts = path.split("/")
        for end in range(1, len(parts) + 1):
            name = "/".join(parts[:end])
            other = seen.setdefault(name.casefold(), name)
            if other != name:
                raise PathNotPortable(f"{other!r} and {name!r} differ only in letter case")


def check_top_level(bundle_dir: Path) -> None:
    """The bundle root holds `metadata/` and `targets/` and nothing else; metadata holds only metadata."""
    for entry in os.scandir(bundle_dir):
        if entry.name not in ("metadata", "targets"):
            raise ExtraFile(f"unexpected entry {entry.name!r} at the top of the bundle")
        if not entry.is_dir(follow_symlinks=False):
            raise UnsafeEntry(f"{entry.name} must be a plain directory")
    for entry in os.scandir(bundle_dir / "metadata"):
        if not _METADATA_RE.fullmatch(entry.name):
            raise ExtraFile(f"unexpected file {shown('metadata/' + entry.name)}")
        if not entry.is_file(follow_symlinks=False):
            raise UnsafeEntry(f"metadata/{entry.name} is not a regular file")


def scan_targets_tree(targets_dir: Path) -> dict[str, int]:
    """List every regular file under targets/ (relative path -> size) without following anything.

    Symlinks, devices, sockets and pipes are refused, whatever their names.
    """
    found: dict[str, int] = {}
    stack: list[tuple[Path, str, int]] = [(targets_dir, "", 0)]
    while stack:
        directory, prefix, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UnsafePath(f"{shown('targets/' + prefix)} is nested too deeply")
        with os.scandir(directory) as entries:
            for entry in entries:
                rel = f"{prefix}{entry.name}"
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    stack.append((Path(entry.path), f"{rel}/", depth + 1))
                elif stat.S_ISREG(mode):
                    found[rel] = entry.stat(follow_symlinks=False).st_size
                    if len(found) > MAX_TARGETS:
                        raise ExtraFile(f"more than {MAX_TARGETS} files under targets/")
                else:
                    kind = "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
                    raise UnsafeEntry(f"{shown('targets/' + rel)} is {kind}")
    return found
