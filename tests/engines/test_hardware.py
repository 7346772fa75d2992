"""Hardware detection, profiles and the capacity planner.

No GPU exists here: nvidia-smi output comes from fixture files in nvidia-smi's real CSV format
(tests/engines/data/README.md), and a stand-in `nvidia-smi` script (a fake of the GPU tool, named as
such) prints them so that query_gpus runs a real process.
"""

import json
import stat
from pathlib import Path

import pytest

from appliance import hardware
from appliance.engines import Ds4Engine, EngineKind, LlamaCppEngine, VllmCpuEngine, VllmCudaEngine
from appliance.hardware import (
    GIB,
    MIB,
    CapacityError,
    Gpu,
    Host,
    NvidiaSmiFailed,
    NvidiaSmiParseError,
    Profile,
    choose_profile,
    parse_cpuinfo,
    parse_meminfo,
    parse_nvidia_smi_csv,
    plan_capacity,
    query_gpus,
)

DATA = Path(__file__).parent / "data"
H200_BYTES = 143771 * MIB


def gpus(name: str) -> tuple[Gpu, ...]:
    return parse_nvidia_smi_csv((DATA / f"{name}.csv").read_text())


def host(gpu_file: str | None, proc: str = "proc-dgx") -> Host:
    return hardware.detect_host(DATA / proc, gpus=() if gpu_file is None else gpus(gpu_file))


def fake_nvidia_smi(tmp_path: Path, body: str) -> str:
    """A stand-in for nvidia-smi (no GPU here) that records its arguments."""
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\n{body}\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def test_parse_h200_csv() -> None:
    parsed = gpus("h200x8")
    assert len(parsed) == 8
    assert parsed[7] == Gpu(index=7, name="NVIDIA H200", memory_bytes=H200_BYTES, compute_cap="9.0")


def test_parse_gb10_has_no_dedicated_memory() -> None:
    assert gpus("gb10") == (Gpu(index=0, name="NVIDIA GB10", memory_bytes=None, compute_cap="12.1"),)


def test_parse_without_nounits_and_empty_output() -> None:
    text = "index, name, memory.total [MiB], compute_cap\n0, NVIDIA H100 80GB HBM3, 81559 MiB, 9.0\n"
    assert parse_nvidia_smi_csv(text)[0].memory_bytes == 81559 * MIB
    assert parse_nvidia_smi_csv("") == ()


@pytest.mark.parametrize(
    "text",
    [
        "name, memory.total [MiB]\nNVIDIA H200, 143771\n",
        "index, name, memory.total [MiB], compute_cap\n0, NVIDIA H200, 143771\n",
        "index, name, memory.total [MiB], compute_cap\n0, NVIDIA H200, lots, 9.0\n",
        "index, name, memory.total [MiB], compute_cap\nzero, NVIDIA H200, 143771, 9.0\n",
    ],
)
def test_unparsable_csv_is_refused(text: str) -> None:
    with pytest.raises(NvidiaSmiParseError) as info:
        parse_nvidia_smi_csv(text)
    assert info.value.code == "hardware.nvidia_smi_unparsable"


def test_query_gpus_runs_nvidia_smi_with_the_csv_query(tmp_path: Path) -> None:
    exe = fake_nvidia_smi(tmp_path, f"cat {DATA / 'h200x1.csv'}")
    assert query_gpus(exe) == gpus("h200x1")
    assert (tmp_path / "args").read_text().split() == [
        "--query-gpu=index,name,memory.total,compute_cap",
        "--format=csv,nounits",
    ]


def test_query_gpus_no_devices_and_failure(tmp_path: Path) -> None:
    none = fake_nvidia_smi(tmp_path, 'echo "No devices were found"; exit 6')
    assert query_gpus(none) == ()
    broken = fake_nvidia_smi(
        tmp_path,
        'echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver." >&2; exit 9',
    )
    with pytest.raises(NvidiaSmiFailed) as info:
        query_gpus(broken)
    assert info.value.code == "hardware.nvidia_smi_failed"
    assert "could not communicate" in str(info.value)
    hung = fake_nvidia_smi(tmp_path, "exec sleep 30")
    with pytest.raises(NvidiaSmiFailed) as hung_info:
        query_gpus(hung, timeout_s=0.5)
    assert "did not answer" in str(hung_info.value)
    with pytest.raises(NvidiaSmiFailed) as missing:
        query_gpus(str(tmp_path / "no-such-nvidia-smi"))
    assert missing.value.code == "hardware.nvidia_smi_failed"


def test_meminfo_and_cpuinfo() -> None:
    total, available = parse_meminfo((DATA / "proc-spark" / "meminfo").read_text())
    assert (total, available) == (125551792 * 1024, 121347148 * 1024)
    assert parse_cpuinfo((DATA / "proc-dgx" / "cpuinfo").read_text()) == "Intel(R) Xeon(R) Platinum 8480C"
    assert parse_cpuinfo("processor : 0\n") == "unknown CPU"
    with pytest.raises(hardware.MemoryInfoError) as info:
        parse_meminfo("MemFree: 1 kB\n")
    assert info.value.code == "hardware.meminfo_unparsable"


def test_detect_this_machine() -> None:
    here = hardware.detect_host()
    assert here.memory_bytes > 0
    assert here.cpu_count >= 1


@pytest.mark.parametrize(
    ("gpu_file", "proc", "profile", "engine", "used"),
    [
        ("h200x8", "proc-dgx", Profile.VLLM_MULTI_GPU, EngineKind.VLLM_CUDA, 8),
        ("b200x4", "proc-dgx", Profile.VLLM_MULTI_GPU, EngineKind.VLLM_CUDA, 4),
        ("h200x1", "proc-dgx", Profile.DS4_SINGLE_GPU, EngineKind.DS4, 1),
        ("gb10", "proc-spark", Profile.DS4_SINGLE_GPU, EngineKind.DS4, 1),
        ("h100x2", "proc-dgx", Profile.LLAMA_CPP_GPU, EngineKind.LLAMA_CPP, 1),
        ("rtxpro6000", "proc-dgx", Profile.LLAMA_CPP_GPU, EngineKind.LLAMA_CPP, 1),
        ("rtx4090", "proc-dgx", Profile.CPU_ONLY, EngineKind.VLLM_CPU, 0),
        (None, "proc-dgx", Profile.CPU_ONLY, EngineKind.VLLM_CPU, 0),
    ],
)
def test_profiles(gpu_file, proc, profile, engine, used) -> None:
    choice = choose_profile(host(gpu_file, proc))
    assert choice.profile is profile
    assert choice.engine is engine
    assert len(choice.gpus) == used


def test_mixed_or_too_few_vllm_gpus_fall_back_to_one_card() -> None:
    three = host(None)
    three = Host(three.cpu_model, 64, three.memory_bytes, three.memory_available_bytes, gpus("h200x8")[:3])
    assert choose_profile(three).profile is Profile.DS4_SINGLE_GPU
    mixed = Host(
        three.cpu_model,
        64,
        three.memory_bytes,
        three.memory_available_bytes,
        gpus("h200x8")[:3] + gpus("b200x4")[:1],
    )
    assert choose_profile(mixed).profile is Profile.DS4_SINGLE_GPU


def test_plan_vllm_8xh200_follows_the_formula() -> None:
    h = host("h200x8")
    choice = choose_profile(h)
    plan = plan_capacity(h, choice)
    pool = 8 * int(H200_BYTES * 0.90)
    kv = pool - 2 * 160 * 10**9 - 8 * 4 * GIB  # two DP4 instances, one copy of the weights each
    assert plan.memory_pool_bytes == pool
    assert plan.kv_budget_bytes == kv
    assert plan.ranks == 8
    assert plan.largest_context == 1_048_576  # the model's limit, not memory, bounds it
    assert plan.concurrent_sessions == 8 * ((kv // 8) // (33_974 * 32_768))
    engines = hardware.engines_for(choice, plan)
    assert [type(e) for e in engines] == [VllmCudaEngine, VllmCudaEngine]
    assert [e.cuda_devices for e in engines] == [(0, 1, 2, 3), (4, 5, 6, 7)]  # type: ignore[attr-defined]
    assert [e.port for e in engines] == [8100, 8101]
    assert all(e.launch().supports_think_max for e in engines)


def test_plan_b200_renders_blackwell_flags() -> None:
    h = host("b200x4")
    choice = choose_profile(h)
    (engine,) = hardware.engines_for(choice, plan_capacity(h, choice))
    assert "--moe-backend" in engine.argv()


def test_plan_ds4_on_spark_uses_unified_memory_and_one_live_session() -> None:
    h = host("gb10", "proc-spark")
    choice = choose_profile(h)
    plan = plan_capacity(h, choice)
    kv = int(h.memory_bytes * 0.92) - 81 * 10**9 - 16 * GIB
    assert plan.kv_budget_bytes == kv
    assert plan.largest_context == kv // 33_974
    assert plan.largest_context < 1_048_576
    assert plan.concurrent_sessions == 1
    (engine,) = hardware.engines_for(choice, plan)
    assert isinstance(engine, Ds4Engine)
    assert engine.ctx == plan.largest_context


def test_plan_llama_cpp_spills_weights_on_an_80gb_card() -> None:
    h = host("h100x2")
    choice = choose_profile(h)
    plan = plan_capacity(h, choice)
    pool = int(81559 * MIB * 0.95)
    on_device = pool - 4 * GIB - 33_974 * 32_768
    assert plan.weights_in_host_bytes == 81 * 10**9 - on_device
    assert plan.largest_context == 32_768
    assert plan.concurrent_sessions == 1
    assert any("host memory" in n for n in plan.notes)
    (engine,) = hardware.engines_for(choice, plan)
    assert isinstance(engine, LlamaCppEngine)
    assert (engine.ctx_size, engine.parallel) == (32_768, 1)


def test_plan_llama_cpp_on_96gb_card_fits_and_caps_slots() -> None:
    h = host("rtxpro6000")
    plan = plan_capacity(h, choose_profile(h))
    assert plan.weights_in_host_bytes == 0
    assert plan.concurrent_sessions == 8  # memory would allow 10; llama-server gets 8 slots


def test_plan_cpu_fixture() -> None:
    h = host(None)
    choice = choose_profile(h)
    plan = plan_capacity(h, choice)
    assert plan.largest_context == 2048
    assert plan.concurrent_sessions == GIB // (512 * 2048)
    (engine,) = hardware.engines_for(choice, plan)
    assert isinstance(engine, VllmCpuEngine)


def test_plan_for_a_longer_session_has_fewer_sessions() -> None:
    h = host("h200x8")
    choice = choose_profile(h)
    short = plan_capacity(h, choice, 8_192)
    long = plan_capacity(h, choice, 393_216)
    assert short.concurrent_sessions > long.concurrent_sessions > 0


@pytest.mark.parametrize("context", [0, -1, 1_048_577])
def test_bad_session_context_is_refused(context: int) -> None:
    h = host("h200x8")
    with pytest.raises(CapacityError) as info:
        plan_capacity(h, choose_profile(h), context)
    assert info.value.code == "hardware.bad_session_context"


def test_hardware_report_for_the_console() -> None:
    report = hardware.hardware_report(DATA / "proc-dgx", gpus=gpus("h200x8"))
    doc = json.loads(json.dumps(report.as_dict(), default=str))
    assert doc["profile"]["profile"] == "vllm-multi-gpu"
    assert doc["plan"]["largest_context"] == 1_048_576
    assert [(e["name"], e["base_url"]) for e in doc["engines"]] == [
        ("vllm-0", "http://127.0.0.1:8100"),
        ("vllm-1", "http://127.0.0.1:8101"),
    ]
    assert hardware.cached_report() is hardware.cached_report()  # this machine, detected once
