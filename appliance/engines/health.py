"""Health probes and load metrics of running engines (sync for the supervisor, async for the gateway)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from appliance.engines.base import EngineLaunch

__all__ = ["EngineLoad", "ProbeResult", "aprobe", "ascrape_load", "parse_load", "probe", "scrape_load"]

# vLLM's gauges (vllm/v1/metrics/loggers.py); llama.cpp names its own with a "llamacpp:" prefix (the llama.cpp we
# build, 0c1e570, has no KV-usage gauge any more: kv_cache_usage_ratio is what older releases exported).
_RUNNING = ("vllm:num_requests_running", "llamacpp:requests_processing")
_WAITING = ("vllm:num_requests_waiting", "llamacpp:requests_deferred")
_KV_USAGE = ("vllm:kv_cache_usage_perc", "llamacpp:kv_cache_usage_ratio")


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    status_code: int | None
    detail: str


@dataclass(frozen=True)
class EngineLoad:
    """What an engine reports about its load; None where the engine has no such metric."""

    running: float | None
    waiting: float | None
    kv_cache_usage: float | None


def _result(launch: EngineLaunch, response: httpx.Response) -> ProbeResult:
    ok = response.status_code == launch.health.expect_status
    return ProbeResult(ok, response.status_code, f"GET {launch.health.path} -> {response.status_code}")


def probe(launch: EngineLaunch, timeout: float = 2.0, client: httpx.Client | None = None) -> ProbeResult:
    """One GET of the engine's health probe; never raises for network errors (they mean "not ready")."""
    try:
        if client is not None:
            return _result(launch, client.get(launch.health_url, timeout=timeout))
        with httpx.Client(trust_env=False) as own:
            return _result(launch, own.get(launch.health_url, timeout=timeout))
    except httpx.HTTPError as exc:
        return ProbeResult(False, None, f"GET {launch.health.path} failed: {type(exc).__name__}: {exc}")


async def aprobe(launch: EngineLaunch, client: httpx.AsyncClient, timeout: float = 2.0) -> ProbeResult:
    try:
        return _result(launch, await client.get(launch.health_url, timeout=timeout))
    except httpx.HTTPError as exc:
        return ProbeResult(False, None, f"GET {launch.health.path} failed: {type(exc).__name__}: {exc}")


def parse_load(text: str) -> EngineLoad:
    """Sum the running/waiting/KV-usage gauges of a Prometheus exposition (over all label sets)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _RUNNING + _WAITING + _KV_USAGE:
                found[sample.name] = found.get(sample.name, 0.0) + sample.value

    def first(names: tuple[str, ...]) -> float | None:
        return next((found[n] for n in names if n in found), None)

    return EngineLoad(running=first(_RUNNING), waiting=first(_WAITING), kv_cache_usage=first(_KV_USAGE))


def scrape_load(launch: EngineLaunch, timeout: float = 2.0) -> EngineLoad | None:
    """Read the engine's /metrics; None when it has no metrics endpoint (ds4) or does not answer."""
    if launch.metrics_url is None:
        return None
    try:
        with httpx.Client(trust_env=False) as client:
            response = client.get(launch.metrics_url, timeout=timeout)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return parse_load(response.text)


async def ascrape_load(launch: EngineLaunch, client: httpx.AsyncClient, timeout: float = 2.0) -> EngineLoad | None:
    """The async form of scrape_load, for the gateway's event loop."""
    if launch.metrics_url is None:
        return None
    try:
        response = await client.get(launch.metrics_url, timeout=timeout)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return parse_load(response.text)
