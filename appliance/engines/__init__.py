"""Inference engines: adapters (exact command line, environment, systemd unit, health, metrics,
priority capability), health probes and load metrics, and a local supervisor for the demo and tests.

    engine = VllmCpuEngine(name="demo", model=Path("build/fixture-model"), served_model_name="fixture",
                           port=8100, python=Path(".venv-engine/bin/python"))
    with Supervisor(Path("var/engines")) as sup:
        sup.start(engine)
        sup.wait_ready("demo", timeout=300)

`fixture_model` (the tiny model generator) is run by the engine venv's interpreter as a script and is
deliberately not imported here (it needs torch).
"""

from appliance.engines.base import (
    OFFLINE_ENVIRONMENT,
    THINK_MAX_MIN_CONTEXT,
    EngineAdapter,
    EngineKind,
    EngineLaunch,
    HealthProbe,
    PriorityCapability,
)
from appliance.engines.ds4 import DS4_MODEL_ID, Ds4Engine
from appliance.engines.errors import (
    EngineAlreadyManaged,
    EngineError,
    EngineExecutableMissing,
    EngineGaveUp,
    EngineNotLoopback,
    EngineStartTimeout,
    InvalidEngineName,
    InvalidEngineOption,
    UnknownEngine,
)
from appliance.engines.health import (
    EngineLoad,
    ProbeResult,
    aprobe,
    ascrape_load,
    parse_load,
    probe,
    scrape_load,
)
from appliance.engines.llama_cpp import LlamaCppEngine
from appliance.engines.supervisor import EngineState, EngineStatus, RestartPolicy, Supervisor
from appliance.engines.systemd import render_dropin, render_template_unit, unit_name
from appliance.engines.vllm import VllmCpuEngine, VllmCudaEngine

# The adapter of each engine kind: one place that knows which class speaks for a kind.
ADAPTERS: dict[EngineKind, type[EngineAdapter]] = {
    EngineKind.VLLM_CUDA: VllmCudaEngine,
    EngineKind.VLLM_CPU: VllmCpuEngine,
    EngineKind.DS4: Ds4Engine,
    EngineKind.LLAMA_CPP: LlamaCppEngine,
}

__all__ = [
    "ADAPTERS",
    "DS4_MODEL_ID",
    "OFFLINE_ENVIRONMENT",
    "THINK_MAX_MIN_CONTEXT",
    "Ds4Engine",
    "EngineAdapter",
    "EngineAlreadyManaged",
    "EngineError",
    "EngineExecutableMissing",
    "EngineGaveUp",
    "EngineKind",
    "EngineLaunch",
    "EngineLoad",
    "EngineNotLoopback",
    "EngineStartTimeout",
    "EngineState",
    "EngineStatus",
    "HealthProbe",
    "InvalidEngineName",
    "InvalidEngineOption",
    "LlamaCppEngine",
    "PriorityCapability",
    "ProbeResult",
    "RestartPolicy",
    "Supervisor",
    "UnknownEngine",
    "VllmCpuEngine",
    "VllmCudaEngine",
    "aprobe",
    "ascrape_load",
    "parse_load",
    "probe",
    "render_dropin",
    "render_template_unit",
    "scrape_load",
    "unit_name",
]
