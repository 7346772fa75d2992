"""Helpers shared by the benchmarks: percentiles, results files, the terminal table."""

from __future__ import annotations

import json
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "bench-results"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def write_results(name: str, figures: dict[str, Any], details: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        **figures,
        "details": details,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu_count": __import__("os").cpu_count(), "python": platform.python_version()},
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def print_table(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    headers = ("measure", "value", "reference / goal", "verdict")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}\n{line}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(line)


def mean(values: list[float]) -> float:
    return statistics.fmean(values)
