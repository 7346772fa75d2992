"""`make bench-bundles`: bundle import against `cp`, deep verification against `sha256sum`, and peak
memory at two payload sizes. Writes bench-results/bundles.json and prints a short table.

Same payload, same source directory (the "stick"), same destination disk, both measured in the same run.
Page cache: by default every timed run (ours and the reference) starts from a WARM cache (the source
files are read once right before it), because dropping caches disturbs other work on a shared machine.
Warm reads make CPU and memory copies, not the stick, the limit, so the import/cp ratio is an upper
bound of what a real USB stick (100-400 MB/s) would show. BUNDLES_BENCH_CACHE=cold instead drops the
page cache (root: `sync; echo 3 > /proc/sys/vm/drop_caches`) before every timed run, both sides alike.
Run as root with the default (warm), the smallest size is also timed cold, in the same run
(import_time_ratio_vs_cp_cold_cache; BUNDLES_BENCH_COLD_TOO=0 skips it).
Before every timed run (either side) the disk is settled: `sync`, then a second's pause, so that neither
side pays for the previous run's writeback or deletions. Both sides end durable the same way: ours
fsyncs each object and its directory; `cp -r` is followed by `sync` of every copied file and directory
(fsync each; not `sync -f`, which would also flush whatever else is dirty on a shared file system).
Our side is the real `enclavectl bundle import` process, Python start-up and verification included, with
the project's modules byte-compiled first, as pip compiles them when the image installs the wheel (a dev
checkout run with PYTHONDONTWRITEBYTECODE=1 would otherwise compile them again in every run: about 30 ms).
The same import is also timed as the console's Celery worker runs it, in a process that is already running
(UpdateManager.import_bundle called here: verification included, no start-up), in the same pairs:
import_time_ratio_vs_cp_in_running_process.
Runs alternate which side goes first; medians; the load average is recorded, as other work on the
machine moves the figures.
"""

from __future__ import annotations

import compileall
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.bundles import vendor
from appliance.bundles.layout import ReleaseInfo
from appliance.bundles.manager import UpdateConfig, UpdateManager
from appliance.bundles.staging import check_targets
from appliance.bundles.verify import ApplianceIdentity

GIB = 1 << 30
REPO = Path(__file__).resolve().parents[1]
SIZES = [int(s) for s in os.environ.get("BUNDLES_BENCH_GIB", "1,8").split(",")]
RUNS = int(os.environ.get("BUNDLES_BENCH_RUNS", "5"))
LARGE_RUNS = int(os.environ.get("BUNDLES_BENCH_LARGE_RUNS", "1"))
WORK = Path(os.environ.get("BUNDLES_BENCH_DIR", REPO / "build" / "bench-bundles"))
CACHE = os.environ.get("BUNDLES_BENCH_CACHE", "warm")
# With a warm main run, the smallest size is also timed from a cold cache (needs root for drop_caches).
COLD_TOO = os.environ.get("BUNDLES_BENCH_COLD_TOO", "1" if os.geteuid() == 0 else "0") == "1"
SETTLE_S = 1.0
IDENTITY = ApplianceIdentity("enclave", "stable", "cpu-dev")


def vendor_kit(base: Path) -> Path:
    keys = base / "keys"
    for name in ("root-1", "root-2", "root-3", "targets-1", "targets-2", "targets-3", "release"):
        vendor.generate_key(keys, name)
    pub = {p.name.split(".")[0]: vendor.load_public_key(p) for p in keys.glob("*.pub.json")}
    root = vendor.make_root(
        root_keys=[pub[f"root-{i}"] for i in (1, 2, 3)],
        targets_keys=[pub[f"targets-{i}"] for i in (1, 2, 3)],
        release_key=pub["release"],
        root_signers=[vendor.load_signer(keys / "root-1.key"), vendor.load_signer(keys / "root-2.key")],
    )
    vendor.write_metadata(base / "roots" / "1.root.json", root)
    return keys


def make_payload(source: Path, gib: int) -> None:
    """Model shards of at most 1 GiB, filled from a random block (no two shards alike)."""
    shard = min(GIB, gib * GIB // 4)
    count = gib * GIB // shard
    block = bytearray(os.urandom(64 << 20))
    for index in range(count):
        path = source / "models" / "bench" / f"model-{index + 1:05d}-of-{count:05d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            written = 0
            while written < shard:
                block[:8] = (index * 1_000_003 + written).to_bytes(8, "little")
                handle.write(block[: min(len(block), shard - written)])
                written += len(block)
    (source / "policies").mkdir()
    (source / "policies" / "retention.yaml").write_text("content_retention: off\n")


def build(base: Path, keys: Path, gib: int) -> Path:
    source = base / f"src-{gib}g"
    make_payload(source, gib)
    release = ReleaseInfo("enclave", f"bench{gib}g", 1, "stable", ("cpu-dev",), datetime.now(UTC))
    bundle = vendor.build_bundle(source, base / f"stick-{gib}g", release=release, roots_dir=base / "roots", link=True)
    vendor.sign_bundle(
        bundle,
        targets_signers=[
            vendor.load_signer(keys / "targets-1.key"),
            vendor.load_signer(keys / "targets-2.key"),
        ],
        release_signer=vendor.load_signer(keys / "release.key"),
    )
    return bundle


def warm(paths: list[Path], cache: str = CACHE) -> None:
    """Prepare a timed run: read the files (warm) or drop every cached page (cold), then settle the disk."""
    if cache == "cold":
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    else:
        for path in paths:
            with path.open("rb") as handle:
                while handle.read(16 << 20):
                    pass
    os.sync()
    time.sleep(SETTLE_S)


def pair(
    bundle: Path,
    files: list[Path],
    copied: list[str],
    root: Path,
    index: int,
    cache: str,
    imports: list[float],
    copies: list[float],
    rss: list[int],
    in_process: list[float] | None = None,
) -> None:
    """One timed import and one timed `cp` of the same payload (and, given `in_process`, one import in this
    running process); which goes first rotates with `index`."""
    sides = ["ours", "cp"] if in_process is None else ["ours", "running", "cp"]
    shift = index % len(sides)
    for side in sides[shift:] + sides[:shift]:
        warm(files, cache)
        if side == "ours":
            wall, peak = run_import(bundle, WORK / "state", root)
            imports.append(wall)
            rss.append(peak)
            shutil.rmtree(WORK / "state")
        elif side == "running" and in_process is not None:
            in_process.append(run_import_in_process(bundle, WORK / "state", root))
            shutil.rmtree(WORK / "state")
        else:
            copies.append(run_cp(bundle, WORK / "cp-dest", copied))
            shutil.rmtree(WORK / "cp-dest")


def run_import(bundle: Path, state: Path, root: Path) -> tuple[float, int]:
    """The real `enclavectl bundle import` in a child; returns (wall seconds, peak RSS in KiB)."""
    shutil.rmtree(state, ignore_errors=True)
    env = {**os.environ, "ENCLAVE_STATE_DIR": str(state), "ENCLAVE_BUNDLE_TRUST_ROOT": str(root)}
    rss_file = state.parent / "import-rss.txt"
    # GNU time measures the child from its own small fork: ru_maxrss of a child forked from this (large)
    # process would include the parent's pages it carried until exec.
    command = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), sys.executable, "-m", "appliance.cli"]
    started = time.perf_counter()
    subprocess.run(
        [*command, "bundle", "import", "--no-audit", "--json", str(bundle)],
        env=env,
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    return elapsed, int(rss_file.read_text().split()[-1])


def run_import_in_process(bundle: Path, state: Path, root: Path) -> float:
    """The import as the console's Celery worker runs it: UpdateManager.import_bundle in a process that has
    its modules loaded already (verification, staging, the state file; no Python start-up)."""
    shutil.rmtree(state, ignore_errors=True)
    started = time.perf_counter()
    UpdateManager(UpdateConfig(state, root, IDENTITY)).import_bundle(bundle)
    return time.perf_counter() - started


def run_cp(bundle: Path, dest: Path, copied: list[str]) -> float:
    """`cp -r` then fsync of each copied file and directory (`copied`: their paths relative to targets/)."""
    shutil.rmtree(dest, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(["cp", "-r", str(bundle / "targets"), str(dest)], check=True)
    subprocess.run(["sync", str(dest), *(str(dest / rel) for rel in copied)], check=True)
    return time.perf_counter() - started


def run_sha256sum(files: list[Path]) -> float:
    started = time.perf_counter()
    subprocess.run(["sha256sum", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def run_deep_verify(bundle: Path, root: Path, state: Path) -> float:
    manager = UpdateManager(UpdateConfig(state, root, IDENTITY))
    verified = manager.verify(bundle)
    started = time.perf_counter()
    check_targets(verified.bundle_dir, verified.targets)
    return time.perf_counter() - started


def main() -> int:
    if CACHE not in ("warm", "cold"):
        raise SystemExit("BUNDLES_BENCH_CACHE must be warm or cold")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    if not compileall.compile_dir(REPO / "appliance", quiet=1):
        raise SystemExit("byte-compiling appliance/ failed")
    keys = vendor_kit(WORK)
    root = WORK / "roots" / "1.root.json"
    results: dict[str, dict[str, float]] = {}
    cold: dict[str, Any] | None = None
    try:
        for gib in SIZES:
            bundle = build(WORK, keys, gib)
            shutil.rmtree(WORK / f"src-{gib}g")  # the stick's hard links keep the data
            files = sorted(p for p in (bundle / "targets").rglob("*") if p.is_file())
            copied = sorted(str(p.relative_to(bundle / "targets")) for p in (bundle / "targets").rglob("*"))
            size = sum(p.stat().st_size for p in files)
            runs = RUNS if gib == min(SIZES) else LARGE_RUNS
            imports: list[float] = []
            copies: list[float] = []
            rss: list[int] = []
            running: list[float] = []
            ours_v: list[float] = []
            ref_v: list[float] = []
            load = [os.getloadavg()[0]]
            for index in range(runs):
                pair(bundle, files, copied, root, index, CACHE, imports, copies, rss, running)
                warm(files)
                ours_v.append(run_deep_verify(bundle, root, WORK / "state-v"))
                warm(files)
                ref_v.append(run_sha256sum(files))
            if gib == min(SIZES) and CACHE == "warm" and COLD_TOO:
                # The same pairs from a cold page cache: how an import from a stick just plugged in reads.
                cold_imports: list[float] = []
                cold_copies: list[float] = []
                for index in range(runs):
                    pair(bundle, files, copied, root, index, "cold", cold_imports, cold_copies, [])
                cold = {
                    "import_s": statistics.median(cold_imports),
                    "cp_s": statistics.median(cold_copies),
                    "import_runs_s": [round(x, 3) for x in cold_imports],
                    "cp_runs_s": [round(x, 3) for x in cold_copies],
                }
            results[f"{gib}g"] = {
                "bytes": size,
                "runs": runs,
                "import_s": statistics.median(imports),
                "cp_s": statistics.median(copies),
                "import_in_running_process_s": statistics.median(running),
                "verify_s": statistics.median(ours_v),
                "sha256sum_s": statistics.median(ref_v),
                "import_peak_rss_kib": max(rss),
                "import_runs_s": [round(x, 3) for x in imports],
                "cp_runs_s": [round(x, 3) for x in copies],
                "import_in_running_process_runs_s": [round(x, 3) for x in running],
                "load_average_1min": [round(x, 2) for x in (*load, os.getloadavg()[0])],
            }
            shutil.rmtree(bundle.parent)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)

    small, large = f"{min(SIZES)}g", f"{max(SIZES)}g"
    s = results[small]
    summary = {
        "import_time_ratio_vs_cp": round(s["import_s"] / s["cp_s"], 3),
        "verify_throughput_ratio_vs_sha256sum": round(s["sha256sum_s"] / s["verify_s"], 3),
        "peak_rss_ratio_8g_vs_1g": round(results[large]["import_peak_rss_kib"] / s["import_peak_rss_kib"], 3),
        "import_time_ratio_vs_cp_in_running_process": round(s["import_in_running_process_s"] / s["cp_s"], 3),
        "import_time_ratio_vs_cp_by_size": {name: round(r["import_s"] / r["cp_s"], 3) for name, r in results.items()},
        "import_time_ratio_vs_cp_cold_cache": round(cold["import_s"] / cold["cp_s"], 3) if cold else None,
        "cold_cache": {small: cold} if cold else None,
        "reference": {
            "import": "cp -r targets/ DEST && sync DEST/<every copied path>, same source, same disk, same run",
            "import_in_running_process": "UpdateManager.import_bundle in the benchmark's own process, "
            "as the console's Celery worker runs it (no Python start-up), against the same cp runs",
            "verify": "sha256sum over the same files, same run",
            "page_cache": f"{CACHE} for both sides before every timed run",
        },
        "sizes": results,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "when": datetime.now(UTC).isoformat(),
        },
    }
    out = REPO / "bench-results" / "bundles.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")

    head = ("payload", "runs", "import s", "cp s", "ratio", "verify MB/s", "sha256sum MB/s", "peak RSS MiB", "load")
    print("\n{:>8} {:>5} {:>9} {:>7} {:>6} {:>12} {:>15} {:>13} {:>11}".format(*head))
    for name, r in results.items():
        load_range = f"{min(r['load_average_1min']):.1f}-{max(r['load_average_1min']):.1f}"
        print(
            f"{name:>8} {r['runs']:>5} {r['import_s']:9.2f} {r['cp_s']:7.2f} {r['import_s'] / r['cp_s']:6.2f} "
            f"{r['bytes'] / r['verify_s'] / 1e6:12.0f} {r['bytes'] / r['sha256sum_s'] / 1e6:15.0f} "
            f"{r['import_peak_rss_kib'] / 1024:13.1f} {load_range:>11}"
        )
    if cold:
        print(
            f"{small + ' cold':>8} {RUNS:>5} {cold['import_s']:9.2f} {cold['cp_s']:7.2f} "
            f"{cold['import_s'] / cold['cp_s']:6.2f}   (page cache dropped before every timed run, both sides)"
        )
    print(
        f"{small} import in a running process (as the console's worker runs it): "
        f"{s['import_in_running_process_s']:.2f} s, {summary['import_time_ratio_vs_cp_in_running_process']}x cp"
    )
    print(
        f"import/cp {summary['import_time_ratio_vs_cp']}x (goal <= 1.10), verify/sha256sum throughput "
        f"{summary['verify_throughput_ratio_vs_sha256sum']}x, peak RSS {large}/{small} "
        f"{summary['peak_rss_ratio_8g_vs_1g']}x (goal within 10%) -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
