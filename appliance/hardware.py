"""Hardware detection -> hardware profile -> engine, weights and capacity plan.

Detection reads `nvidia-smi --query-gpu=... --format=csv,nounits` (no GPU: no nvidia-smi, or it fails
with "No devices were found"), /proc/cpuinfo and /proc/meminfo. Parsing is pure and tested with
real-format text; profile choice and the capacity planner are pure functions of a `Host`.
Thresholds and the capacity formula: docs/decisions/0301-hardware-profiles.md and 0302-capacity-planner.md.
"""

from __future__ import annotations

import csv
import enum
import functools
import io
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance.engines.base import EngineAdapter, EngineKind
from appliance.engines.ds4 import Ds4Engine
from appliance.engines.llama_cpp import LlamaCppEngine
from appliance.engines.vllm import GpuFamily, VllmCpuEngine, VllmCudaEngine

__all__ = [
    "NVIDIA_SMI_FIELDS",
    "CapacityError",
    "CapacityPlan",
    "Gpu",
    "HardwareError",
    "HardwareReport",
    "Host",
    "MemoryInfoError",
    "NvidiaSmiFailed",
    "NvidiaSmiParseError",
    "Profile",
    "ProfileChoice",
    "Weights",
    "cached_report",
    "choose_profile",
    "detect_host",
    "engines_for",
    "hardware_report",
    "parse_cpuinfo",
    "parse_meminfo",
    "parse_nvidia_smi_csv",
    "plan_capacity",
    "query_gpus",
]

GIB = 1024**3
MIB = 1024**2
NVIDIA_SMI_FIELDS = ("index", "name", "memory.total", "compute_cap")
_NO_DEVICES = "No devices were found"


class HardwareError(Exception):
    code = "hardware.error"


class NvidiaSmiFailed(HardwareError):
    code = "hardware.nvidia_smi_failed"


class NvidiaSmiParseError(HardwareError):
    code = "hardware.nvidia_smi_unparsable"


class MemoryInfoError(HardwareError):
    code = "hardware.meminfo_unparsable"


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_bytes: int | None  # None where the GPU shares system memory (GB10: "[N/A]")
    compute_cap: str | None


@dataclass(frozen=True)
class Host:
    cpu_model: str
    cpu_count: int
    memory_bytes: int
    memory_available_bytes: int
    gpus: tuple[Gpu, ...]


class Profile(enum.StrEnum):
    VLLM_MULTI_GPU = "vllm-multi-gpu"  # 4-8 x H200/B200
    DS4_SINGLE_GPU = "ds4-single-gpu"  # 1 x H200, DGX Spark (96-128 GB unified)
    LLAMA_CPP_GPU = "llama-cpp-gpu"  # 80-96 GB cards
    CPU_ONLY = "cpu-only"  # dev, CI, demo


@dataclass(frozen=True)
class Weights:
    name: str
    size_bytes: int
    kv_bytes_per_token: int
    max_context: int


# ds4 reports a 1061.71 MiB context buffer at ctx=32768 (antirez/ds4 issue #78): ~33,974 B/token,
# which also covers upstream's "about 26 GB for 1M tokens". Used for every V4 Flash build until a
# bundle's weights metadata says better (0302).
V4_FLASH_KV_BYTES_PER_TOKEN = 33_974
V4_FLASH_MAX_CONTEXT = 1_048_576
WEIGHTS: dict[Profile, Weights] = {
    Profile.VLLM_MULTI_GPU: Weights(
        "DeepSeek-V4-Flash official FP4+FP8 checkpoint",
        160 * 10**9,
        V4_FLASH_KV_BYTES_PER_TOKEN,
        V4_FLASH_MAX_CONTEXT,
    ),
    Profile.DS4_SINGLE_GPU: Weights(
        "DeepSeek-V4-Flash ds4 q2-imatrix GGUF", 81 * 10**9, V4_FLASH_KV_BYTES_PER_TOKEN, V4_FLASH_MAX_CONTEXT
    ),
    Profile.LLAMA_CPP_GPU: Weights(
        "DeepSeek-V4-Flash 2-bit GGUF (UD-IQ2_XXS)",
        81 * 10**9,
        V4_FLASH_KV_BYTES_PER_TOKEN,
        V4_FLASH_MAX_CONTEXT,
    ),
    # The tiny fixture model: 2 (K and V) x 2 layers x 1 KV head x 64 x 2 bytes (bf16) = 512 B/token.
    Profile.CPU_ONLY: Weights("Enclave tiny fixture model (random weights)", 878_797, 512, 2048),
}
ENGINE_FOR: dict[Profile, EngineKind] = {
    Profile.VLLM_MULTI_GPU: EngineKind.VLLM_CUDA,
    Profile.DS4_SINGLE_GPU: EngineKind.DS4,
    Profile.LLAMA_CPP_GPU: EngineKind.LLAMA_CPP,
    Profile.CPU_ONLY: EngineKind.VLLM_CPU,
}
VLLM_GPUS = {"hopper": ("H200",), "blackwell": ("B200", "B300", "GB200", "GB300")}
VLLM_MIN_TOTAL_BYTES = 170 * 10**9
VLLM_DP_SIZE = 4
DS4_MIN_CARD_BYTES = 100 * GIB
DS4_MIN_UNIFIED_BYTES = 90 * GIB
LLAMA_MIN_CARD_BYTES = 75 * GIB


# -- detection ----------------------------------------------------------------------------------
def _field(value: str) -> str | None:
    value = value.strip()
    return None if value.startswith("[") or value in ("", "N/A") else value  # "[N/A]", "[Not Supported]"


def parse_nvidia_smi_csv(text: str) -> tuple[Gpu, ...]:
    """Parse `nvidia-smi --query-gpu=index,name,memory.total,compute_cap --format=csv,nounits` output."""
    rows = [r for r in csv.reader(io.StringIO(text.strip()), skipinitialspace=True) if r]
    if not rows:
        return ()
    header = [h.split(" [")[0].strip() for h in rows[0]]
    if header != list(NVIDIA_SMI_FIELDS):
        raise NvidiaSmiParseError(f"unexpected nvidia-smi CSV header {rows[0]}; expected {list(NVIDIA_SMI_FIELDS)}")
    gpus = []
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != len(NVIDIA_SMI_FIELDS):
            raise NvidiaSmiParseError(f"nvidia-smi CSV line {line_no} has {len(row)} fields: {row}")
        index, name, memory, cap = (_field(v) for v in row)
        try:
            mem_mib = None if memory is None else int(float(memory.removesuffix("MiB").strip()))
            gpus.append(Gpu(int(index or ""), name or "unknown GPU", None if mem_mib is None else mem_mib * MIB, cap))
        except ValueError as exc:
            raise NvidiaSmiParseError(f"nvidia-smi CSV line {line_no} is not understood: {row}") from exc
    return tuple(gpus)


def query_gpus(nvidia_smi: str | None = None, timeout_s: float = 30.0) -> tuple[Gpu, ...]:
    """The host's NVIDIA GPUs; () where there is no nvidia-smi or it finds no device."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if exe is None:
        return ()
    argv = [exe, f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,nounits"]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NvidiaSmiFailed(f"nvidia-smi did not answer within {timeout_s:.0f} s (a hung driver?)") from exc
    except OSError as exc:
        raise NvidiaSmiFailed(f"nvidia-smi could not be run: {exc}") from exc
    if result.returncode != 0:
        if _NO_DEVICES in result.stdout + result.stderr:
            return ()
        raise NvidiaSmiFailed(f"nvidia-smi exited with {result.returncode}: {(result.stderr or result.stdout).strip()}")
    return parse_nvidia_smi_csv(result.stdout)


def parse_meminfo(text: str) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo text."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    if "MemTotal" not in values:
        raise MemoryInfoError("/proc/meminfo has no MemTotal line")
    return values["MemTotal"], values.get("MemAvailable", values["MemTotal"])


def parse_cpuinfo(text: str) -> str:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model name", "Hardware"):
            return value.strip()
    return "unknown CPU"


def detect_host(proc: Path = Path("/proc"), gpus: tuple[Gpu, ...] | None = None) -> Host:
    total, available = parse_meminfo((proc / "meminfo").read_text())
    try:
        cpu_model = parse_cpuinfo((proc / "cpuinfo").read_text())
    except OSError:
        cpu_model = "unknown CPU"
    return Host(
        cpu_model=cpu_model,
        cpu_count=len(os.sched_getaffinity(0)),
        memory_bytes=total,
        memory_available_bytes=available,
        gpus=query_gpus() if gpus is None else gpus,
    )


# -- profile ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileChoice:
    profile: Profile
    engine: EngineKind
    weights: Weights
    gpus: tuple[Gpu, ...]  # the GPUs the engines use
    gpu_family: str | None
    reason: str


def _vllm_family(gpu: Gpu) -> str | None:
    words = gpu.name.upper().replace("-", " ").split()
    for family, models in VLLM_GPUS.items():
        if any(m in words for m in models):
            return family
    return None


def _choice(profile: Profile, gpus: tuple[Gpu, ...], family: str | None, reason: str) -> ProfileChoice:
    return ProfileChoice(profile, ENGINE_FOR[profile], WEIGHTS[profile], gpus, family, reason)


def choose_profile(host: Host) -> ProfileChoice:
    gpus = host.gpus
    families = {_vllm_family(g) for g in gpus}
    total = sum(g.memory_bytes or 0 for g in gpus)
    if len(gpus) >= VLLM_DP_SIZE and len(families) == 1 and None not in families and total >= VLLM_MIN_TOTAL_BYTES:
        used = gpus[: len(gpus) // VLLM_DP_SIZE * VLLM_DP_SIZE][: 2 * VLLM_DP_SIZE]
        family = next(iter(families))
        return _choice(
            Profile.VLLM_MULTI_GPU,
            used,
            family,
            f"{len(gpus)} x {gpus[0].name}: vLLM DP{VLLM_DP_SIZE}+EP, {len(used) // VLLM_DP_SIZE} instance(s)",
        )
    unified = [g for g in gpus if g.memory_bytes is None]
    if unified and host.memory_bytes >= DS4_MIN_UNIFIED_BYTES:
        return _choice(Profile.DS4_SINGLE_GPU, tuple(unified[:1]), None, f"{unified[0].name} with unified memory: ds4")
    largest = max(gpus, key=lambda g: g.memory_bytes or 0, default=None)
    if largest is not None and (largest.memory_bytes or 0) >= DS4_MIN_CARD_BYTES:
        return _choice(Profile.DS4_SINGLE_GPU, (largest,), None, f"{largest.name} (>= 100 GiB): ds4 on one GPU")
    if largest is not None and (largest.memory_bytes or 0) >= LLAMA_MIN_CARD_BYTES:
        return _choice(Profile.LLAMA_CPP_GPU, (largest,), None, f"{largest.name} (75-100 GiB): llama.cpp 2-bit")
    why = "no NVIDIA GPU" if not gpus else f"largest GPU {largest.name if largest else '?'} is under 75 GiB"
    return _choice(Profile.CPU_ONLY, (), None, f"{why}: vLLM CPU with the tiny fixture model (dev/demo only)")


# -- capacity -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CapacityPlan:
    memory_pool_bytes: int  # the memory the engine may use, after its utilisation cap
    weights_bytes: int
    weights_in_host_bytes: int  # weights that do not fit the device (llama.cpp --fit spills them)
    reserve_bytes: int  # activations, CUDA graphs, runtime
    kv_budget_bytes: int
    kv_bytes_per_token: int
    ranks: int  # KV caches that hold sessions independently (vLLM DP ranks x instances)
    largest_context: int
    session_context: int
    concurrent_sessions: int
    notes: tuple[str, ...]


class CapacityError(HardwareError):
    code = "hardware.bad_session_context"


VLLM_GPU_UTILISATION = 0.90
DS4_UTILISATION = 0.92
LLAMA_UTILISATION = 0.95
GPU_RESERVE_BYTES = 4 * GIB  # per GPU: activations, CUDA graphs, the CUDA context
UNIFIED_RESERVE_BYTES = 16 * GIB  # unified memory also holds the OS, PostgreSQL, the console
CPU_KV_CACHE_BYTES = 1 * GIB  # VLLM_CPU_KVCACHE_SPACE=1
LLAMA_MAX_SLOTS = 8


def plan_capacity(host: Host, choice: ProfileChoice, session_context: int | None = None) -> CapacityPlan:
    """Largest context and concurrent sessions of `session_context` tokens (formula: decision 0302)."""
    w = choice.weights
    ctx = session_context if session_context is not None else min(32_768, w.max_context)
    if not 0 < ctx <= w.max_context:
        raise CapacityError(f"session context {ctx} must be between 1 and the model's {w.max_context} tokens")
    kvpt = w.kv_bytes_per_token
    notes: list[str] = []
    in_host = 0
    max_live: int | None = None
    if choice.profile is Profile.VLLM_MULTI_GPU:
        ranks = len(choice.gpus)
        instances = ranks // VLLM_DP_SIZE
        pool = sum(int((g.memory_bytes or 0) * VLLM_GPU_UTILISATION) for g in choice.gpus)
        reserve = ranks * GPU_RESERVE_BYTES
        weights = instances * w.size_bytes  # EP shards one copy of the experts over each instance's GPUs
        kv = pool - weights - reserve
        notes.append(f"{instances} vLLM instance(s) of DP{VLLM_DP_SIZE}+EP; each DP rank holds its own sessions")
    elif choice.profile is Profile.DS4_SINGLE_GPU:
        gpu = choice.gpus[0]
        unified = gpu.memory_bytes is None
        device = host.memory_bytes if unified else (gpu.memory_bytes or 0)
        pool = int(device * DS4_UTILISATION)
        reserve = UNIFIED_RESERVE_BYTES if unified else GPU_RESERVE_BYTES
        ranks, weights = 1, w.size_bytes
        kv = pool - weights - reserve
        max_live = 1
        notes.append("ds4 serves one live session at a time; others wait and resume from the SSD KV cache")
    elif choice.profile is Profile.LLAMA_CPP_GPU:
        pool = int((choice.gpus[0].memory_bytes or 0) * LLAMA_UTILISATION)
        reserve, ranks, weights = GPU_RESERVE_BYTES, 1, w.size_bytes
        on_device = max(0, min(weights, pool - reserve - kvpt * ctx))
        in_host = weights - on_device
        kv = pool - reserve - on_device
        max_live = LLAMA_MAX_SLOTS
        if in_host:
            notes.append(f"{in_host / GIB:.1f} GiB of weights stay in host memory (--fit on); decoding is slower")
        if in_host > host.memory_available_bytes - 8 * GIB:
            notes.append("host memory is too small for the weights that do not fit the GPU")
            kv = 0
    else:
        pool = CPU_KV_CACHE_BYTES + w.size_bytes
        reserve, ranks, weights = 0, 1, w.size_bytes
        kv = CPU_KV_CACHE_BYTES
        notes.append("CPU only: throughput is bound by the cores, not by memory; for dev, CI and demo")
    kv = max(0, kv)
    per_rank = kv // ranks
    largest = min(w.max_context, per_rank // kvpt)
    sessions = ranks * (per_rank // (kvpt * ctx))
    if max_live is not None and sessions > max_live:
        sessions = max_live
    if largest < ctx:
        notes.append(f"not enough memory for one session of {ctx} tokens")
    return CapacityPlan(
        memory_pool_bytes=pool,
        weights_bytes=weights,
        weights_in_host_bytes=in_host,
        reserve_bytes=reserve,
        kv_budget_bytes=kv,
        kv_bytes_per_token=kvpt,
        ranks=ranks,
        largest_context=largest,
        session_context=ctx,
        concurrent_sessions=sessions,
        notes=tuple(notes),
    )


# -- engines ------------------------------------------------------------------------------------
ENGINES_ROOT = Path("/opt/enclave/engines")
MODELS_ROOT = Path("/var/lib/enclave/models/current")
FIRST_ENGINE_PORT = 8100


def engines_for(choice: ProfileChoice, plan: CapacityPlan, model: Path | None = None) -> list[EngineAdapter]:
    """The engine instances this profile runs, sized by the plan (ports from FIRST_ENGINE_PORT up)."""
    name = "deepseek-v4-flash"
    if choice.profile is Profile.VLLM_MULTI_GPU:
        family: GpuFamily = "blackwell" if choice.gpu_family == "blackwell" else "hopper"
        return [
            VllmCudaEngine(
                name=f"vllm-{i}",
                model=model or MODELS_ROOT / "deepseek-v4-flash",
                served_model_name=name,
                port=FIRST_ENGINE_PORT + i,
                python=ENGINES_ROOT / "vllm" / "bin" / "python",
                max_model_len=plan.largest_context,
                gpu_family=family,
                data_parallel_size=VLLM_DP_SIZE,
                cuda_devices=tuple(g.index for g in choice.gpus[i * VLLM_DP_SIZE : (i + 1) * VLLM_DP_SIZE]),
            )
            for i in range(len(choice.gpus) // VLLM_DP_SIZE)
        ]
    if choice.profile is Profile.DS4_SINGLE_GPU:
        return [
            Ds4Engine(
                name="ds4-0",
                model=model or MODELS_ROOT / "ds4flash.gguf",
                port=FIRST_ENGINE_PORT,
                ctx=plan.largest_context,
            )
        ]
    if choice.profile is Profile.LLAMA_CPP_GPU:
        slots = max(1, plan.concurrent_sessions)
        return [
            LlamaCppEngine(
                name="llama-0",
                model=model or MODELS_ROOT / "deepseek-v4-flash-ud-iq2_xxs.gguf",
                served_model_name=name,
                port=FIRST_ENGINE_PORT,
                ctx_size=slots * plan.session_context,
                parallel=slots,
                cuda_device=choice.gpus[0].index,
            )
        ]
    return [
        VllmCpuEngine(
            name="vllm-cpu-0",
            model=model or MODELS_ROOT / "enclave-fixture",
            served_model_name="enclave-fixture",
            port=FIRST_ENGINE_PORT,
            python=ENGINES_ROOT / "vllm-cpu" / "bin" / "python",
            max_model_len=plan.largest_context,
        )
    ]


# -- one call for the console and the CLI ---------------------------------------------------------
@dataclass(frozen=True)
class HardwareReport:
    host: Host
    choice: ProfileChoice
    plan: CapacityPlan
    engines: tuple[EngineAdapter, ...]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (the console renders it; `enclavectl hardware --json` prints it)."""
        return {
            "host": asdict(self.host),
            "profile": asdict(self.choice),
            "plan": asdict(self.plan),
            "engines": [
                {"name": e.name, "kind": str(e.kind), "base_url": e.base_url, "max_context": e.context_length()}
                for e in self.engines
            ],
        }


def hardware_report(
    proc: Path = Path("/proc"), gpus: tuple[Gpu, ...] | None = None, session_context: int | None = None
) -> HardwareReport:
    host = detect_host(proc, gpus=gpus)
    choice = choose_profile(host)
    plan = plan_capacity(host, choice, session_context)
    return HardwareReport(host, choice, plan, tuple(engines_for(choice, plan)))


@functools.lru_cache(maxsize=1)
def cached_report() -> HardwareReport:
    """This machine's report, computed once per process (nvidia-smi is slow; hardware does not change)."""
    return hardware_report()
