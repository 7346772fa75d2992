"""Gateway settings from the environment (the same variables the console reads where they overlap)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .faults import FAULT_ENV, FAULT_POINTS

__all__ = ["GatewayConfig"]


def _int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ValueError(f"{name}={value} is below the minimum {minimum}")
    return value


def _float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ValueError(f"{name}={value} is below the minimum {minimum}")
    return value


def _choice(name: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, "")
    if value and value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def _database_dsn(url: str) -> str:
    if not url.startswith(("postgres://", "postgresql://")):
        raise ValueError(f"DATABASE_URL must be a PostgreSQL URL for the gateway, not {url.split(':')[0]}")
    return url


@dataclass(frozen=True)
class GatewayConfig:
    database_url: str
    redis_url: str
    max_body_bytes: int = 8 * 1024 * 1024
    # The most of an engine's non-streamed answer that is read (decision 0352): room for a legitimate large
    # embeddings batch (2048 inputs of 4096 dimensions are about 170 MB of JSON), not for a broken engine
    # to fill a worker's memory.
    max_answer_bytes: int = 256 * 1024 * 1024
    # Safety net: reload the snapshot on this period even without a pub/sub message.
    reload_seconds: float = 30.0
    # How many gunicorn workers share each deployment's concurrency limit.
    workers: int = 1
    queue_timeout_seconds: float = 120.0
    max_queue: int = 2000
    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 600.0
    # After a connection failure a deployment is skipped by this worker for this long.
    down_seconds: float = 5.0
    audit_batch_max: int = 512
    # How long a console session lookup is trusted (a sign-out reaches the gateway within this time).
    session_cache_seconds: float = 10.0
    # Tests only (faults.py): where the gateway is to fail on purpose; "" (production) for nowhere.
    test_fault: str = ""

    @classmethod
    def from_env(cls) -> GatewayConfig:
        return cls(
            database_url=_database_dsn(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/enclave")),
            redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            max_body_bytes=_int("ENCLAVE_GATEWAY_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=1024),
            max_answer_bytes=_int("ENCLAVE_GATEWAY_MAX_ANSWER_BYTES", 256 * 1024 * 1024, minimum=1024),
            reload_seconds=_float("ENCLAVE_GATEWAY_RELOAD_SECONDS", 30.0, minimum=0.5),
            workers=_int("ENCLAVE_GATEWAY_WORKERS", 1, minimum=1),
            queue_timeout_seconds=_float("ENCLAVE_GATEWAY_QUEUE_TIMEOUT_SECONDS", 120.0, minimum=0.1),
            max_queue=_int("ENCLAVE_GATEWAY_MAX_QUEUE", 2000, minimum=1),
            connect_timeout_seconds=_float("ENCLAVE_GATEWAY_CONNECT_TIMEOUT_SECONDS", 3.0, minimum=0.1),
            read_timeout_seconds=_float("ENCLAVE_GATEWAY_READ_TIMEOUT_SECONDS", 600.0, minimum=1.0),
            down_seconds=_float("ENCLAVE_GATEWAY_DOWN_SECONDS", 5.0, minimum=0.0),
            audit_batch_max=_int("ENCLAVE_GATEWAY_AUDIT_BATCH_MAX", 512, minimum=1),
            session_cache_seconds=_float("ENCLAVE_GATEWAY_SESSION_CACHE_SECONDS", 10.0, minimum=0.0),
            test_fault=_choice(FAULT_ENV, FAULT_POINTS),
        )
