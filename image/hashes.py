"""Hash manifests: a JSON map of relative file name -> SHA-256, written atomically, checked file by file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from image.errors import ImageError

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old content or the new, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_manifest(path: Path, entries: Mapping[str, str]) -> None:
    atomic_write(path, (json.dumps(dict(sorted(entries.items())), indent=1) + "\n").encode())


def read_manifest(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path} is not a map of file name to SHA-256")
    return {str(k): str(v) for k, v in data.items()}


def verify_files(
    root: Path,
    expected: Mapping[str, str],
    *,
    missing: type[ImageError],
    mismatch: type[ImageError],
    what: str,
) -> None:
    """Check that every file named in `expected` exists under `root` with that SHA-256.

    The first problem raises `missing` or `mismatch`, naming the file; nothing is modified.
    """
    for name in sorted(expected):
        path = root / name
        if not path.is_file():
            raise missing(f"{what} {name!r} is named in the lock but is not in {root}")
        actual = sha256_file(path)
        if actual != expected[name]:
            raise mismatch(
                f"{what} {name!r} has SHA-256 {actual}, the lock says {expected[name]}: "
                "the file was altered or replaced; rebuild the closure"
            )
