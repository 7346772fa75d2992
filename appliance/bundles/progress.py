"""A terminal progress bar for `enclavectl bundle import`: percent, MB/s, ETA, current file."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from appliance.bundles.staging import Progress

__all__ = ["ProgressBar", "format_eta"]


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """Redraws one line at most `rate` times a second; the speed counts bytes copied, not skipped."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30, rate: float = 10.0) -> None:
        self.stream = stream
        self.width = width
        self.interval = 1.0 / rate
        self.started = time.monotonic()
        self.last_draw = 0.0

    def __call__(self, progress: Progress, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last_draw < self.interval:
            return
        self.last_draw = now
        total = max(progress.total_bytes, 1)
        fraction = min(progress.done_bytes / total, 1.0)
        filled = int(fraction * self.width)
        elapsed = max(now - self.started, 1e-6)
        copied = progress.done_bytes - progress.skipped_bytes
        speed = copied / elapsed
        remaining = progress.total_bytes - progress.done_bytes
        eta = format_eta(remaining / speed) if copied > 0 and elapsed > 0.5 else "--:--:--"
        name = progress.current if len(progress.current) <= 40 else "..." + progress.current[-37:]
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"\r[{bar}] {fraction * 100:5.1f}% {speed / 1e6:8.1f} MB/s ETA {eta} {name:<40}"
        self.stream.write(line)
        if final:
            self.stream.write("\n")
        self.stream.flush()
