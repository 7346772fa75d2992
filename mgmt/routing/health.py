"""Active health of deployments: probe each engine the way its adapter says (vLLM and llama.cpp /health,
ds4 /v1/models) and record changes with do_set_deployment_health (audited; the gateway is told).

The gateway also skips a deployment for a few seconds after a failed connection (passive health);
this probe is what the console shows and what takes a dead engine out of every worker's routes.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from appliance.engines import Ds4Engine, LlamaCppEngine, VllmCpuEngine, VllmCudaEngine

from .models import Deployment, EngineKind
from .services import do_set_deployment_health

__all__ = ["ProbeOutcome", "probe_deployments"]

PROBES = {
    EngineKind.VLLM: VllmCudaEngine.health,
    EngineKind.VLLM_CPU: VllmCpuEngine.health,
    EngineKind.DS4: Ds4Engine.health,
    EngineKind.LLAMA_CPP: LlamaCppEngine.health,
}


@dataclass(frozen=True)
class ProbeOutcome:
    deployment: str
    healthy: bool
    detail: str


def probe_deployments(timeout: float = 2.0) -> list[ProbeOutcome]:
    outcomes = []
    with httpx.Client(trust_env=False, timeout=timeout) as client:
        for deployment in Deployment.objects.filter(enabled=True):
            probe = PROBES[EngineKind(deployment.kind)]
            try:
                response = client.get(deployment.endpoint + probe.path)
                healthy = response.status_code == probe.expect_status
                detail = f"GET {probe.path} -> {response.status_code}"
            except httpx.HTTPError as exc:
                healthy, detail = False, f"GET {probe.path} failed: {type(exc).__name__}"
            do_set_deployment_health(deployment, healthy=healthy, reason=detail)
            outcomes.append(ProbeOutcome(deployment.name, healthy, detail))
    return outcomes
