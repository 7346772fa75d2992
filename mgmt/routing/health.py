"""Active health of deployments: probe each engine the way its adapter says (vLLM and llama.cpp /health,
ds4 /v1/models) and record changes with do_set_deployment_health (audited; the gateway is told).
A healthy engine with a metrics endpoint (vLLM, llama.cpp) also reports its load (requests running and
waiting, KV cache in use), which the Engines page shows; it is kept in the cache, not audited.

The gateway also skips a deployment for a few seconds after a failed connection (passive health);
this probe is what the console shows and what takes a dead engine out of every worker's routes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from django.core.cache import cache

from appliance.engines import ADAPTERS, EngineKind, EngineLoad, parse_load

from .models import Deployment
from .services import do_set_deployment_health

__all__ = ["ProbeOutcome", "deployment_loads", "probe_deployments"]

# Three missed probes (beat runs one every 10 s) and a load figure is too old to show.
LOAD_TTL_SECONDS = 30


def _load_key(deployment_id: int) -> str:
    return f"routing:load:{deployment_id}"


@dataclass(frozen=True)
class ProbeOutcome:
    deployment: str
    healthy: bool
    detail: str


def probe_deployments(timeout: float = 2.0) -> list[ProbeOutcome]:
    outcomes = []
    with httpx.Client(trust_env=False, timeout=timeout) as client:
        for deployment in Deployment.objects.filter(enabled=True):
            adapter = ADAPTERS[EngineKind(deployment.kind)]
            probe = adapter.health
            try:
                response = client.get(deployment.endpoint + probe.path)
                healthy = response.status_code == probe.expect_status
                detail = f"GET {probe.path} -> {response.status_code}"
            except httpx.HTTPError as exc:
                healthy, detail = False, f"GET {probe.path} failed: {type(exc).__name__}"
            do_set_deployment_health(deployment, healthy=healthy, reason=detail)
            load = (
                _scrape(client, deployment.endpoint + adapter.metrics_path)
                if healthy and adapter.metrics_path
                else None
            )
            if load is None:
                cache.delete(_load_key(deployment.pk))
            else:
                cache.set(_load_key(deployment.pk), {**asdict(load), "at": time.time()}, LOAD_TTL_SECONDS)
            outcomes.append(ProbeOutcome(deployment.name, healthy, detail))
    return outcomes


def _scrape(client: httpx.Client, url: str) -> EngineLoad | None:
    try:
        response = client.get(url)
    except httpx.HTTPError:
        return None
    return parse_load(response.text) if response.status_code == 200 else None


def deployment_loads(deployments: list[Deployment]) -> dict[int, dict[str, Any]]:
    """The last load each engine reported (running, waiting, kv_cache_percent, age_seconds), by deployment id."""
    found = cache.get_many([_load_key(d.pk) for d in deployments])
    now = time.time()
    loads = {}
    for d in deployments:
        entry = found.get(_load_key(d.pk))
        if entry is not None:
            kv = entry["kv_cache_usage"]
            loads[d.pk] = {
                **entry,
                "kv_cache_percent": None if kv is None else round(kv * 100, 1),
                "age_seconds": max(0, round(now - entry["at"])),
            }
    return loads
