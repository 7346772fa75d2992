"""The vendor's side: `enclavectl bundle build` refuses a release tree that would not survive a USB stick."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.bundles.conftest import VendorKit

ROOT = Path(__file__).resolve().parents[2]


def build(kit: VendorKit, source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = ["bundle", "build", str(source), "--out", str(out), "--release", "2026Q4", "--sequence", "2"]
    command += ["--roots", str(kit.roots_dir), "--hardware", "cpu-dev"]
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *command], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(["models/m/Weights.bin", "models/m/weights.bin"], id="two files differing in case"),
        pytest.param(["Models/m/a.bin", "models/m/b.bin"], id="two directories differing in case"),
        pytest.param(["models/m/README."], id="a file name ending in a dot"),
        pytest.param(["models/m./a.bin"], id="a directory name ending in a dot"),
    ],
)
def test_build_refuses_names_an_exfat_or_fat_stick_would_change(tmp_path: Path, kit: VendorKit, names: list[str]):
    """exFAT (what a stick of model-sized files is formatted with) and FAT ignore letter case and drop a
    trailing dot: such a bundle would arrive with other names and fail verification on the appliance.
    The build says so, and writes nothing."""
    source = tmp_path / "release"
    for index, name in enumerate([*names, "policies/retention.yaml"]):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(f"file {index}\n".encode())
    out = tmp_path / "stick"
    out.mkdir()

    refused = build(kit, source, out)
    assert refused.returncode == 1, refused.stderr
    assert "[bundle.path_not_portable]" in refused.stderr
    assert list(out.iterdir()) == []

    (source / names[0]).unlink()  # without that one file, the same tree builds
    accepted = build(kit, source, out)
    assert accepted.returncode == 0, accepted.stderr
    assert (out / "ENCLAVE-2026Q4" / "metadata" / "targets.json").is_file()
