"""What the gateway needs to know about each engine kind, taken from the adapters (appliance/engines)."""

from __future__ import annotations

from appliance.engines import (
    Ds4Engine,
    EngineAdapter,
    EngineKind,
    LlamaCppEngine,
    PriorityCapability,
    VllmCpuEngine,
    VllmCudaEngine,
)

__all__ = ["takes_priority"]

_ADAPTERS: dict[EngineKind, type[EngineAdapter]] = {
    EngineKind.VLLM_CUDA: VllmCudaEngine,
    EngineKind.VLLM_CPU: VllmCpuEngine,
    EngineKind.DS4: Ds4Engine,
    EngineKind.LLAMA_CPP: LlamaCppEngine,
}
_TAKES_PRIORITY = frozenset(
    kind.value for kind, adapter in _ADAPTERS.items() if adapter.priority is PriorityCapability.REQUEST_FIELD
)


def takes_priority(kind: str) -> bool:
    """True if engines of `kind` schedule by a per-request "priority" body field (vLLM)."""
    return kind in _TAKES_PRIORITY
