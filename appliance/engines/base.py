"""What every engine adapter shares: its kind, health probe, metrics, priority capability and launch.

An adapter is a frozen dataclass describing ONE engine instance (name, model, loopback port and the
engine's own knobs). Rendering is pure: `argv()`, `environment()` and `launch()` compute the exact
command line and environment; `appliance.engines.systemd` turns a launch into a systemd drop-in and
`appliance.engines.supervisor` runs it as a child process.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from appliance.engines.errors import EngineNotLoopback, InvalidEngineName, InvalidEngineOption

__all__ = [
    "OFFLINE_ENVIRONMENT",
    "THINK_MAX_MIN_CONTEXT",
    "EngineAdapter",
    "EngineKind",
    "EngineLaunch",
    "HealthProbe",
    "PriorityCapability",
]

THINK_MAX_MIN_CONTEXT = 393_216
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,47}$")

# Every engine runs with these: nothing may reach a hub or report usage from an air-gapped appliance.
OFFLINE_ENVIRONMENT: Mapping[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


class EngineKind(enum.StrEnum):
    VLLM_CUDA = "vllm-cuda"
    VLLM_CPU = "vllm-cpu"
    DS4 = "ds4"
    LLAMA_CPP = "llama-cpp"


class PriorityCapability(enum.StrEnum):
    """How the gateway can pass a request priority to the engine."""

    NONE = "none"  # the engine serves in arrival order; the gateway's own fair queue is all there is
    REQUEST_FIELD = "request-field"  # vLLM --scheduling-policy priority: body field "priority", lower first


@dataclass(frozen=True)
class HealthProbe:
    """An HTTP GET that answers `expect_status` once the engine serves (ds4 has no /health)."""

    path: str
    expect_status: int = 200


@dataclass(frozen=True)
class EngineLaunch:
    """Everything needed to start one engine instance, rendered from its adapter."""

    name: str
    kind: EngineKind
    argv: tuple[str, ...]
    env: Mapping[str, str]
    base_url: str
    health: HealthProbe
    metrics_path: str | None
    served_model_name: str
    priority: PriorityCapability
    max_context: int
    workdir: Path | None = None

    @property
    def supports_think_max(self) -> bool:
        """DeepSeek's "max" reasoning effort needs a context of at least THINK_MAX_MIN_CONTEXT tokens."""
        return self.max_context >= THINK_MAX_MIN_CONTEXT

    @property
    def health_url(self) -> str:
        return self.base_url + self.health.path

    @property
    def metrics_url(self) -> str | None:
        return None if self.metrics_path is None else self.base_url + self.metrics_path


@dataclass(frozen=True, kw_only=True)
class EngineAdapter:
    """Fields common to every engine instance. Subclasses add their knobs and render argv/env."""

    kind: ClassVar[EngineKind]
    health: ClassVar[HealthProbe]
    metrics_path: ClassVar[str | None]
    priority: ClassVar[PriorityCapability]

    name: str
    model: Path
    served_model_name: str
    port: int
    host: str = "127.0.0.1"
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidEngineName(
                f"engine name {self.name!r} is not valid: use 1-48 characters a-z, 0-9 and '-', "
                "starting with a letter (it becomes the systemd unit enclave-engine@NAME)"
            )
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise EngineNotLoopback(
                f"engine {self.name}: host {self.host!r} is not a loopback address; engines have no auth "
                "of their own and must listen on 127.0.0.1 or ::1 (the gateway is the door)"
            )
        if not 1 <= self.port <= 65535:
            raise InvalidEngineOption(f"engine {self.name}: port {self.port} is outside 1-65535")
        if not self.served_model_name or any(c.isspace() for c in self.served_model_name):
            raise InvalidEngineOption(
                f"engine {self.name}: served model name {self.served_model_name!r} must be one word"
            )

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def argv(self) -> tuple[str, ...]:
        raise NotImplementedError

    def context_length(self) -> int:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        env = dict(OFFLINE_ENVIRONMENT)
        env.update(self.extra_env)
        return env

    def workdir(self) -> Path | None:
        return None

    def writable_paths(self) -> tuple[Path, ...]:
        """Paths outside its state directory that the engine writes (systemd ReadWritePaths)."""
        return ()

    def launch(self) -> EngineLaunch:
        return EngineLaunch(
            name=self.name,
            kind=self.kind,
            argv=self.argv(),
            env=self.environment(),
            base_url=self.base_url,
            health=self.health,
            metrics_path=self.metrics_path,
            served_model_name=self.served_model_name,
            priority=self.priority,
            max_context=self.context_length(),
            workdir=self.workdir(),
        )


def require_positive(engine: str, option: str, value: float) -> None:
    if value <= 0:
        raise InvalidEngineOption(f"engine {engine}: {option} must be positive, got {value}")
