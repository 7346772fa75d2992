"""`make bench-image`: image build time and size (from the build just run) and boot-to-ready time in the VM.

Ready means: HTTPS answers, the console (Django behind nginx) answers, the first boot finished and the
engine (llama-server with the GGUF fixture, enclave-engine@llama) is healthy. The engine's own start-up
(its unit's start to its first /health 200) is printed on the console by enclave-engine-ready and
reported as engine_startup_seconds (docs/decisions/0502-llama-server-in-the-ci-image.md).
Reference, measured in the same boot: the time the bootloader took to hand over to the kernel (the
first kernel line on the serial console), so the ratio says how much of the wait is our own start-up.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from image import vm
from image.hashes import atomic_write


def measure_boot(image: Path, timeout: float) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        accel = "kvm" if vm.kvm_boots(image, work) else "tcg"
        guest = vm.VM(image=image, work=work, accel=accel)
        guest.start()
        try:
            kernel = guest.wait_for_console("Linux version", timeout=timeout)
            https = guest.wait_https("/healthz", timeout=timeout)
            console = guest.wait_https("/", timeout=timeout, ok=(200, 302, 404))
            firstboot = guest.wait_for_console("enclave-firstboot: first boot complete", timeout=timeout)
            engine = guest.wait_for_console("enclave-engine: llama healthy", timeout=timeout)
            found = re.search(r"enclave-engine: llama healthy ([0-9.]+) s", guest.console_text())
            engine_startup = float(found.group(1)) if found else float("nan")
            ready = max(https, console, firstboot, engine)
            started = time.monotonic()
            guest.power_down()
            shutdown = time.monotonic() - started
        finally:
            guest.kill()
    return {
        "accelerator": accel,
        "boot_to_kernel_seconds": round(kernel, 1),
        "boot_to_https_seconds": round(https, 1),
        "boot_to_console_seconds": round(console, 1),
        "boot_to_engine_seconds": round(engine, 1),
        "engine_startup_seconds": round(engine_startup, 1),
        "boot_to_ready_seconds": round(ready, 1),
        "shutdown_seconds": round(shutdown, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    build = json.loads((args.image.parent / "build-times.json").read_text(encoding="utf-8"))
    boot = measure_boot(args.image, args.timeout)
    result = {
        "build_seconds": build["build_seconds"],
        "build_stages_seconds": build["stages"],
        "build_stages_from_cache": build.get("stages_from_cache", []),
        "image_bytes": args.image.stat().st_size,
        "image_bytes_allocated": args.image.stat().st_blocks * 512,
        **boot,
        "reference": "boot_to_kernel_seconds (firmware + SYSLINUX + kernel load), same boot",
        "ready_over_reference": round(float(boot["boot_to_ready_seconds"]) / float(boot["boot_to_kernel_seconds"]), 2),
        "ready_means": (
            "HTTPS /healthz 200, console answers via nginx, first boot complete, llama-server engine healthy"
        ),
        "note": "2-core shared CI machine, TCG emulation unless KVM booted: expect noise",
    }
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    rows = [
        (
            "build (this run)",
            f"{result['build_seconds']} s  (from cache: {', '.join(result['build_stages_from_cache']) or 'none'})",
        ),
        (
            "image size (sparse / allocated)",
            f"{result['image_bytes'] / 2**20:.0f} MiB / {result['image_bytes_allocated'] / 2**20:.0f} MiB",
        ),
        (f"boot to kernel ({boot['accelerator']}, reference)", f"{boot['boot_to_kernel_seconds']} s"),
        ("boot to HTTPS", f"{boot['boot_to_https_seconds']} s"),
        ("boot to console", f"{boot['boot_to_console_seconds']} s"),
        ("boot to engine healthy", f"{boot['boot_to_engine_seconds']} s"),
        ("engine start-up (unit start to /health)", f"{boot['engine_startup_seconds']} s"),
        (
            "boot to ready",
            f"{boot['boot_to_ready_seconds']} s  (x{result['ready_over_reference']} reference)",
        ),
        ("clean power-down", f"{boot['shutdown_seconds']} s"),
    ]
    width = max(len(r[0]) for r in rows)
    print("\nbench-image")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
