"""File-system primitives the bundle code relies on: atomic writes, bounded reads, safe opens."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from appliance.bundles.errors import MetadataTooLarge, Unreadable, UnsafeEntry

__all__ = ["atomic_write", "fsync_dir", "open_regular", "read_bounded", "replace_symlink"]


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` so that readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def replace_symlink(link: Path, target: str) -> None:
    """Point `link` at `target` atomically (a new symlink renamed over the old one)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def open_regular(path: Path) -> int:
    """Open `path` read-only without following a symlink; refuse anything but a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the last component is a symlink
            raise UnsafeEntry(f"{path.name} is a symbolic link") from exc
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnsafeEntry(f"{path.name} is not a regular file")
    return fd


def read_bounded(path: Path, limit: int) -> bytes:
    """Read a whole small file, refusing it if it holds more than `limit` bytes (reads limit+1 at most)."""
    try:
        fd = open_regular(path)
    except UnsafeEntry:
        raise
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise Unreadable(f"{path.name} cannot be read: {exc.strerror}") from exc
    chunks: list[bytes] = []
    total = 0
    try:
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise Unreadable(f"{path.name} cannot be read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if total > limit:
        raise MetadataTooLarge(f"{path.name} is larger than {limit} bytes")
    return b"".join(chunks)
