"""ds4 ("DwarfStar 4", antirez/ds4): one-GPU CUDA engine for DeepSeek V4 Flash with a KV cache on SSD.

ds4-server has no /health and no /metrics (runtimes.md 1.4), so readiness is probed with
GET /v1/models. It serves one live session at a time (no batching; other conversations resume from
the disk KV cache) and has no request priority. Its model id is fixed: "deepseek-v4-flash".
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

__all__ = ["DS4_MODEL_ID", "Ds4Engine"]

DS4_MODEL_ID = "deepseek-v4-flash"


@dataclass(frozen=True, kw_only=True)
class Ds4Engine(EngineAdapter):
    kind: ClassVar[EngineKind] = EngineKind.DS4
    health: ClassVar[HealthProbe] = HealthProbe("/v1/models")
    metrics_path: ClassVar[str | None] = None
    priority: ClassVar[PriorityCapability] = PriorityCapability.NONE

    served_model_name: str = DS4_MODEL_ID
    binary: Path = Path("/opt/enclave/engines/ds4/bin/ds4-server")
    ctx: int = 100_000
    kv_disk_dir: Path = Path("/var/lib/enclave/ds4-kv")
    kv_disk_space_mb: int = 8192
    threads: int | None = None
    warm_weights: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.served_model_name != DS4_MODEL_ID:
            raise InvalidEngineOption(
                f"engine {self.name}: ds4 always serves the model id {DS4_MODEL_ID!r}; "
                "map an alias to it in the routes instead"
            )
        require_positive(self.name, "ctx", self.ctx)
        require_positive(self.name, "kv_disk_space_mb", self.kv_disk_space_mb)
        if self.threads is not None:
            require_positive(self.name, "threads", self.threads)

    def context_length(self) -> int:
        return self.ctx

    def writable_paths(self) -> tuple[Path, ...]:
        return (self.kv_disk_dir,)

    def argv(self) -> tuple[str, ...]:
        argv = [
            str(self.binary),
            "--cuda",
            "--model",
            str(self.model),
            "--ctx",
            str(self.ctx),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--kv-disk-dir",
            str(self.kv_disk_dir),
            "--kv-disk-space-mb",
            str(self.kv_disk_space_mb),
        ]
        if self.threads is not None:
            argv += ["--threads", str(self.threads)]
        if self.warm_weights:
            argv.append("--warm-weights")
        return tuple(argv)
