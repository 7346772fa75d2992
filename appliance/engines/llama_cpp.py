"""llama.cpp's `llama-server` serving a 2-bit DeepSeek V4 Flash GGUF on one 80-96 GB card.

It serves /health ("200 once the model is loaded") and, with `--metrics`, Prometheus /metrics.
Requests are spread over `parallel` slots with continuous batching; there is no request priority.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from appliance.engines.base import (
    EngineAdapter,
    EngineKind,
    HealthProbe,
    PriorityCapability,
    require_positive,
)
from appliance.engines.errors import InvalidEngineOption

__all__ = ["FIXTURE_CTX_SIZE", "FIXTURE_PARALLEL", "KV_CACHE_TYPES", "LlamaCppEngine", "cpu_fixture_engine"]

KV_CACHE_TYPES = frozenset({"f16", "bf16", "q8_0", "q4_0"})
# The GGUF fixture's shape in tests, the bench and the image's boot test: 2 slots of 2048 tokens each (the vLLM
# fixture engine's max-model-len), within the fixture's 4096-token training context.
FIXTURE_CTX_SIZE = 4096
FIXTURE_PARALLEL = 2


@dataclass(frozen=True, kw_only=True)
class LlamaCppEngine(EngineAdapter):
    kind: ClassVar[EngineKind] = EngineKind.LLAMA_CPP
    health: ClassVar[HealthProbe] = HealthProbe("/health")
    metrics_path: ClassVar[str | None] = "/metrics"
    priority: ClassVar[PriorityCapability] = PriorityCapability.NONE

    binary: Path = Path("/opt/enclave/engines/llama.cpp/bin/llama-server")
    ctx_size: int = 131_072
    parallel: int = 4
    cache_type: str = "q8_0"
    cuda_device: int | None = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self.name, "ctx_size", self.ctx_size)
        require_positive(self.name, "parallel", self.parallel)
        if self.cache_type not in KV_CACHE_TYPES:
            raise InvalidEngineOption(
                f"engine {self.name}: KV cache type {self.cache_type!r} is not one of {sorted(KV_CACHE_TYPES)}"
            )

    def context_length(self) -> int:
        # llama-server splits --ctx-size evenly over the slots: one request gets ctx_size / parallel.
        return self.ctx_size // self.parallel

    def argv(self) -> tuple[str, ...]:
        return (
            str(self.binary),
            "--model",
            str(self.model),
            "--alias",
            self.served_model_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--ctx-size",
            str(self.ctx_size),
            "--parallel",
            str(self.parallel),
            # context_length() is ctx_size / parallel: every slot its own KV range (with a unified KV buffer a
            # slot could take the whole of --ctx-size; this llama.cpp enables that when --parallel is auto).
            "--no-kv-unified",
            "--cont-batching",
            "--jinja",
            "--flash-attn",
            "on",
            "--fit",
            "on",
            "--cache-type-k",
            self.cache_type,
            "--cache-type-v",
            self.cache_type,
            "--metrics",
            "--no-ui",  # --no-webui is the deprecated spelling (llama.cpp 0c1e570)
        )

    def environment(self) -> dict[str, str]:
        env = super().environment()
        if self.cuda_device is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.cuda_device)
        return env


def cpu_fixture_engine(
    *, binary: Path, model: Path, port: int, name: str = "fixture", served_model_name: str = "enclave-fixture"
) -> LlamaCppEngine:
    """llama-server on the tiny GGUF fixture (appliance/engines/fixture_gguf.py), CPU only."""
    return LlamaCppEngine(
        name=name,
        model=model,
        served_model_name=served_model_name,
        port=port,
        binary=binary,
        ctx_size=FIXTURE_CTX_SIZE,
        parallel=FIXTURE_PARALLEL,
        cuda_device=None,
    )
