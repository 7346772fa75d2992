"""enclavectl hardware and enclavectl engine, run as real processes (no GPU here: CSV fixtures)."""

import json
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"


def enclavectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_hardware_text_for_8_h200() -> None:
    result = enclavectl("hardware", "--nvidia-smi-csv", str(DATA / "h200x8.csv"), "--proc", str(DATA / "proc-dgx"))
    assert result.returncode == 0, result.stderr
    assert "Profile:  vllm-multi-gpu (8 x NVIDIA H200: vLLM DP4+EP, 2 instance(s))" in result.stdout
    assert "Capacity: largest context 1,048,576 tokens;" in result.stdout


def test_hardware_json_matches_the_planner() -> None:
    result = enclavectl(
        "hardware", "--json", "--nvidia-smi-csv", str(DATA / "gb10.csv"), "--proc", str(DATA / "proc-spark")
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["profile"]["profile"] == "ds4-single-gpu"
    assert doc["plan"]["concurrent_sessions"] == 1
    assert doc["host"]["gpus"][0]["memory_bytes"] is None
    assert [e["kind"] for e in doc["engines"]] == ["ds4"]


def test_hardware_on_this_machine() -> None:
    result = enclavectl("hardware")
    assert result.returncode == 0, result.stderr
    assert "Profile:" in result.stdout


def test_bad_csv_exits_2_with_the_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("index, name\n0, NVIDIA H200\n")
    result = enclavectl("hardware", "--nvidia-smi-csv", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith("error [hardware.nvidia_smi_unparsable]:")
    missing = enclavectl("hardware", "--nvidia-smi-csv", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error [engine.io]:")


def test_engine_plan_json_has_exact_argv() -> None:
    result = enclavectl("engine", "plan", "--json", "--nvidia-smi-csv", str(DATA / "h200x1.csv"))
    assert result.returncode == 0, result.stderr
    (launch,) = json.loads(result.stdout)
    assert launch["kind"] == "ds4"
    assert launch["argv"][:2] == ["/opt/enclave/engines/ds4/bin/ds4-server", "--cuda"]
    assert launch["health"] == {"path": "/v1/models", "expect_status": 200}


def test_engine_units_writes_template_and_dropins(tmp_path: Path) -> None:
    result = enclavectl("engine", "units", "--out", str(tmp_path), "--nvidia-smi-csv", str(DATA / "h200x8.csv"))
    assert result.returncode == 0, result.stderr
    unit_dir = tmp_path / "etc" / "systemd" / "system"
    written = sorted(str(p.relative_to(unit_dir)) for p in unit_dir.rglob("*") if p.is_file())
    assert written == [
        "enclave-engine@.service",
        "enclave-engine@vllm-0.service.d/10-engine.conf",
        "enclave-engine@vllm-1.service.d/10-engine.conf",
    ]
    dropin = (unit_dir / "enclave-engine@vllm-1.service.d" / "10-engine.conf").read_text()
    assert "Environment=CUDA_VISIBLE_DEVICES=4,5,6,7\n" in dropin
    assert "    --port 8101 \\\n" in dropin
