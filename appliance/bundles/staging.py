"""Content-addressed staging: each target is read once from the stick and checked while it is copied.

objects/<sha256> holds verified copies only: a copy is written to a temporary name, its length and
SHA-256 are checked on the way (reading stops at the signed length + 1, so endless data is caught
after one extra byte), then it is fsynced and renamed. An object that exists is therefore verified,
and a re-import skips it (per-file resume). Memory use is a few fixed page-aligned buffers whatever the size.

Each copy is a pipeline: its thread reads chunk i+1 while a helper thread hashes chunk i (hashlib
releases the GIL) and up to WRITES_IN_FLIGHT O_DIRECT writes of earlier chunks run in a small pool
(os.pwrite releases it too), so the disk always has a queue, as the page cache's writeback gives `cp`.
PARALLEL_COPIES objects are copied at once: SHA-256 runs on one core per stream (about 1.2-2 GB/s here),
so a single stream leaves the second core idle whenever the source reads faster than one core hashes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import mmap
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from appliance.bundles.errors import (
    HashMismatch,
    NoSpace,
    SourceUnavailable,
    TargetTooLong,
    TargetTruncated,
    UnsafeEntry,
)
from appliance.bundles.fsio import fsync_dir, open_regular
from appliance.bundles.verify import TargetEntry

__all__ = [
    "HEADROOM_BYTES",
    "ObjectStore",
    "Progress",
    "StageResult",
    "check_targets",
    "copy_verified",
    "stream_checked",
]

CHUNK = 4 << 20
DIRECT_ALIGN = 4096
WRITES_IN_FLIGHT = 3  # queued O_DIRECT writes per copy: one at a time leaves the disk idle between them
BUFFERS = WRITES_IN_FLIGHT + 2  # + the chunk being read + the chunk being hashed
PARALLEL_COPIES = max(1, min(2, os.cpu_count() or 1))  # memory: PARALLEL_COPIES * BUFFERS * CHUNK
HEADROOM_BYTES = 64 << 20
PROGRESS_TICK_S = 0.1  # how often stage() hands the running totals to its progress callback


@dataclass
class Progress:
    """Running totals handed to the progress callback after each chunk."""

    done_bytes: int
    total_bytes: int
    current: str
    skipped_bytes: int = 0


ProgressCallback = Callable[[Progress], None]
# Takes a chunk and its offset in the file; returns the pending write that still reads the chunk's buffer.
ChunkSink = Callable[[memoryview, int], "Future[None] | None"]


@dataclass(frozen=True)
class StageResult:
    copied: int
    skipped: int
    copied_bytes: int


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)

    def object_path(self, sha256: str) -> Path:
        return self.objects / sha256

    def has(self, entry: TargetEntry) -> bool:
        path = self.object_path(entry.sha256)
        try:
            return path.stat().st_size == entry.length
        except FileNotFoundError:
            return False

    def missing(self, entries: Iterable[TargetEntry]) -> list[TargetEntry]:
        seen: set[str] = set()
        result = []
        for entry in entries:
            if entry.sha256 not in seen and not self.has(entry):
                result.append(entry)
            seen.add(entry.sha256)
        return result

    def check_space(self, entries: Iterable[TargetEntry]) -> None:
        """Refuse to start unless every missing object fits, plus headroom."""
        needed = sum(e.length for e in self.missing(entries)) + HEADROOM_BYTES
        free = shutil.disk_usage(self.objects).free
        if needed > free:
            raise NoSpace(f"staging needs {needed >> 20} MiB, {free >> 20} MiB are free on {self.objects}")

    def discard_partials(self) -> None:
        for tmp in self.objects.glob(".*.partial"):
            tmp.unlink(missing_ok=True)

    def stage(
        self,
        bundle_dir: Path,
        entries: Iterable[TargetEntry],
        progress: ProgressCallback | None = None,
        on_object: Callable[[TargetEntry], None] | None = None,
    ) -> StageResult:
        """Copy every missing object, PARALLEL_COPIES at a time; `on_object` runs (in this thread) once an
        object is durable. After the first failure no new copy starts; the ones running finish (an object
        they verify is kept, so a re-import does not copy it again) and the first error is raised."""
        entries = list(entries)
        self.check_space(entries)
        self.discard_partials()
        counter = _Counter(Progress(0, sum(e.length for e in entries), ""), progress, inline=False)
        todo = self.missing(entries)
        copying = set(todo)
        skipped = 0
        for entry in entries:
            if entry not in copying:
                skipped += 1
                counter.advance(entry.length, entry.path, skipped=True)
        copied = copied_bytes = 0
        error: BaseException | None = None
        running: dict[Future[None], TargetEntry] = {}
        with (
            ThreadPoolExecutor(max_workers=PARALLEL_COPIES, thread_name_prefix="copy") as copiers,
            ThreadPoolExecutor(max_workers=WRITES_IN_FLIGHT * PARALLEL_COPIES, thread_name_prefix="write") as writers,
        ):
            queue = iter(todo)
            while True:
                while error is None and len(running) < PARALLEL_COPIES and (start := next(queue, None)) is not None:
                    source = bundle_dir / "targets" / start.path
                    running[copiers.submit(self._copy_one, source, start, counter, writers)] = start
                counter.report()
                if not running:
                    break
                finished, _ = wait(running, timeout=PROGRESS_TICK_S, return_when=FIRST_COMPLETED)
                for future in finished:
                    entry = running.pop(future)
                    failure = future.exception()
                    if failure is None:
                        copied += 1
                        copied_bytes += entry.length
                        if on_object:
                            on_object(entry)
                    elif error is None:
                        error = failure
        if error is not None:
            raise error
        return StageResult(copied, skipped, copied_bytes)

    def _copy_one(
        self,
        source: Path,
        entry: TargetEntry,
        counter: _Counter,
        writers: ThreadPoolExecutor,
    ) -> None:
        """Stream one target into a partial file, checked, then make it durable under its digest."""
        src = _open_source(source, f"targets/{entry.path}")
        os.posix_fadvise(src, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # a larger read-ahead window on the stick
        tmp = self.objects / f".{entry.sha256}.{os.getpid()}.partial"
        length = 0
        try:
            wfd, direct = _open_for_write(tmp)
        except OSError:
            os.close(src)
            raise
        try:
            with os.fdopen(src, "rb", buffering=0) as reader:

                def sink(chunk: memoryview, position: int) -> Future[None]:
                    nonlocal length, direct
                    if direct and (len(chunk) % DIRECT_ALIGN or position % DIRECT_ALIGN):
                        # O_DIRECT needs block-aligned sizes and offsets (the buffers are page-aligned): the
                        # first unaligned piece, a file's tail, is written through the page cache. Writes
                        # still in flight cover other blocks, so mixing the two is safe.
                        fcntl.fcntl(wfd, fcntl.F_SETFL, fcntl.fcntl(wfd, fcntl.F_GETFL) & ~os.O_DIRECT)
                        direct = False
                    length += len(chunk)
                    return writers.submit(_pwrite_all, wfd, chunk, position)

                stream_checked(reader, entry, sink, counter)
        except BaseException as exc:
            os.close(wfd)
            counter.advance(-length, entry.path)
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"the disk filled up while staging targets/{entry.path}: {exc.strerror}") from exc
            raise
        try:
            os.fsync(wfd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"the disk filled up while staging targets/{entry.path}") from exc
            raise
        finally:
            os.close(wfd)
        os.chmod(tmp, 0o444)
        os.replace(tmp, self.object_path(entry.sha256))
        fsync_dir(self.objects)


class _Counter:
    """Progress totals shared by the copies running at once, updated under a lock.

    inline: the callback runs on every update (one stream, in the caller's thread). Otherwise the caller's
    thread calls `report()` itself, so that a callback that writes to the database (the Celery job's
    progress row) never runs in a copy thread."""

    def __init__(self, state: Progress, callback: ProgressCallback | None, *, inline: bool) -> None:
        self.state = state
        self.callback = callback
        self.inline = inline
        self.lock = threading.Lock()

    def advance(self, count: int, current: str, *, skipped: bool = False) -> None:
        with self.lock:
            self.state.done_bytes += count
            if skipped:
                self.state.skipped_bytes += count
            self.state.current = current
        if self.inline:
            self.report()

    def report(self) -> None:
        if self.callback:
            with self.lock:
                snapshot = replace(self.state)
            self.callback(snapshot)


def _open_source(path: Path, label: str) -> int:
    """open_regular for a file to read, its failures as bundle errors (UnsafeEntry passes through)."""
    try:
        return open_regular(path)
    except UnsafeEntry:
        raise
    except OSError as exc:
        raise SourceUnavailable(f"{label} cannot be opened: {exc.strerror}") from exc


def _open_for_write(path: Path) -> tuple[int, bool]:
    """Open a partial object for writing, with O_DIRECT where the file system allows it: the copy then
    bypasses the page cache (no second memory copy, and a 160 GB import does not evict what the
    engines keep cached). tmpfs and some others refuse O_DIRECT; they get ordinary writes."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_DIRECT, 0o600), True
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    return os.open(path, flags, 0o600), False


def _pwrite_all(fd: int, chunk: memoryview, position: int) -> None:
    offset = 0
    while offset < len(chunk):
        offset += os.pwrite(fd, chunk[offset:], position + offset)


def stream_checked(
    reader: io.FileIO,
    entry: TargetEntry,
    sink: ChunkSink | None,
    counter: _Counter,
) -> None:
    """Read one target once, at most its signed length + 1 bytes, hashing and handing each chunk on.

    BUFFERS fixed buffers in a ring: while a helper thread hashes chunk i, the sink's writes of earlier
    chunks run and this thread reads chunk i+1. A buffer is reused only once its write has finished
    (hashing is in order and is waited for every chunk). Whatever happens, no write is left running
    when this returns: the caller may close the descriptor.
    """
    digest = hashlib.sha256()
    views = [memoryview(mmap.mmap(-1, CHUNK)) for _ in range(BUFFERS)]  # page-aligned
    writing: list[Future[None] | None] = [None] * BUFFERS  # the write still reading each buffer
    hashing: Future[None] | None = None
    length = 0
    limit = entry.length + 1  # one byte more than signed reveals endless data
    turn = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as hasher:
        try:
            while length < limit:
                pending = writing[turn]
                if pending is not None:
                    writing[turn] = None
                    pending.result()
                view = views[turn]
                want = min(len(view), limit - length)
                try:
                    got = reader.readinto(view[:want])
                except OSError as exc:
                    raise SourceUnavailable(f"reading targets/{entry.path} failed: {exc.strerror}") from exc
                if not got:
                    break
                if length + got > entry.length:
                    raise TargetTooLong(f"targets/{entry.path} holds more than the {entry.length} signed bytes")
                chunk = view[:got]
                if hashing is not None:
                    hashing.result()
                hashing = hasher.submit(digest.update, chunk)
                if sink is not None:
                    writing[turn] = sink(chunk, length)
                length += got
                counter.advance(got, entry.path)
                turn = (turn + 1) % BUFFERS
            if hashing is not None:
                hashing.result()
            for pending in writing:
                if pending is not None:
                    pending.result()
        finally:
            wait([f for f in (*writing, hashing) if f is not None])
    if length < entry.length:
        raise TargetTruncated(f"targets/{entry.path} ended after {length} of {entry.length} bytes")
    if digest.hexdigest() != entry.sha256:
        raise HashMismatch(f"targets/{entry.path} does not match its signed SHA-256")


def check_targets(bundle_dir: Path, entries: Iterable[TargetEntry], progress: ProgressCallback | None = None) -> int:
    """Read every target on the stick once and check its length and SHA-256 (copying nothing).

    For `enclavectl bundle verify --deep`: a vendor or an admin can check a stick before an import.
    """
    entries = list(entries)
    counter = _Counter(Progress(0, sum(e.length for e in entries), ""), progress, inline=True)
    for entry in entries:
        fd = _open_source(bundle_dir / "targets" / entry.path, f"targets/{entry.path}")
        with os.fdopen(fd, "rb", buffering=0) as reader:
            stream_checked(reader, entry, None, counter)
    return counter.state.done_bytes


def copy_verified(source: Path, entry: TargetEntry, dest: Path) -> None:
    """Copy one file to `dest` (a new file), checked against its signed length and SHA-256 on the way; on
    any failure `dest` is removed. For a privileged reader that must not trust the file afterwards: the
    bytes it uses are the ones it checked (the root-side applier's private copy of a bundle's debs/)."""
    src = _open_source(source, entry.path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(src, "rb", buffering=0) as reader:

            def sink(chunk: memoryview, position: int) -> None:
                _pwrite_all(out, chunk, position)

            stream_checked(reader, entry, sink, _Counter(Progress(0, entry.length, ""), None, inline=True))
        os.fsync(out)
    except BaseException:
        os.close(out)
        dest.unlink(missing_ok=True)
        raise
    os.close(out)
