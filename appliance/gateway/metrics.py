"""Prometheus metrics of the gateway. With gunicorn's several workers set PROMETHEUS_MULTIPROC_DIR (a fresh
directory per start) and /metrics aggregates every worker through prometheus-client's multiprocess mode."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = [
    "AUDIT_BATCH",
    "AUDIT_FAILURES",
    "IN_FLIGHT",
    "QUEUED",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SNAPSHOT_RELOADS",
    "TOKENS",
    "render",
]

REQUESTS = Counter("enclave_gateway_requests_total", "Requests answered", ["endpoint", "status", "code", "department"])
REQUEST_SECONDS = Histogram(
    "enclave_gateway_request_seconds",
    "Time from request to the last byte",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
TOKENS = Counter("enclave_gateway_tokens_total", "Tokens reported by engines", ["department", "kind"])
IN_FLIGHT = Gauge(
    "enclave_gateway_in_flight",
    "Requests holding a deployment slot",
    ["deployment"],
    multiprocess_mode="livesum",
)
QUEUED = Gauge(
    "enclave_gateway_queued",
    "Requests waiting for a deployment slot",
    ["deployment"],
    multiprocess_mode="livesum",
)
AUDIT_BATCH = Histogram(
    "enclave_gateway_audit_batch_size",
    "Audit events per group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 512),
)
AUDIT_FAILURES = Counter("enclave_gateway_audit_failures_total", "Audit group commits that failed")
SNAPSHOT_RELOADS = Counter("enclave_gateway_snapshot_reloads_total", "Snapshot loads from PostgreSQL")


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
