"""The health gate run after the pointer flip: every pointer resolves, every configured engine answers
/health, serves the model under the activated models pointer (as vLLM's /v1/models or llama-server's
/props names it), and answers a one-token smoke chat completion. A failure rolls the appliance back
to N-1 (decision 0404)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings

from appliance.bundles.errors import HealthCheckFailed

__all__ = ["engine_health_gate"]


def _wait_healthy(client: httpx.Client, base: str, deadline: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        try:
            response = client.get(f"{base}/health")
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(1.0)
    raise HealthCheckFailed(f"engine {base} did not become healthy ({last})")


def _get_json(client: httpx.Client, url: str) -> Any:
    """The JSON document at `url`, or None when it does not answer 200 with JSON."""
    try:
        response = client.get(url)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _served_root(client: httpx.Client, base: str) -> str | None:
    """The model the engine says it loaded: vLLM's /v1/models `root` (its model directory), else
    llama-server's /props `model_path` (its GGUF file); None if it cannot say. A relative path would be
    relative to the engine's working directory, which the gate does not know: that counts as cannot say."""
    try:
        root = _get_json(client, f"{base}/v1/models")["data"][0].get("root")
    except (TypeError, KeyError, IndexError, AttributeError):
        root = None
    if not isinstance(root, str):
        try:
            root = _get_json(client, f"{base}/props").get("model_path")
        except AttributeError:
            root = None
    return root if isinstance(root, str) and Path(root).is_absolute() else None


def _wait_serving_pointer(client: httpx.Client, base: str, models: Path, deadline: float) -> None:
    """Wait until the engine serves a model from the activated release: the old engine may still answer
    while it is being restarted on the new model. Without a models pointer there is nothing to compare."""
    if not models.is_dir():
        return
    activated = models.resolve()
    root: str | None = None
    while time.monotonic() < deadline:
        root = _served_root(client, base)
        if root is not None and Path(root).resolve().is_relative_to(activated):
            return
        time.sleep(1.0)
    raise HealthCheckFailed(
        f"engine {base} serves {root or 'no model'}, not the activated model under {activated}; "
        "it was not restarted on the new release"
    )


def _smoke(client: httpx.Client, base: str) -> None:
    try:
        models = client.get(f"{base}/v1/models").json()["data"]
        body = {"model": models[0]["id"], "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        answer = client.post(f"{base}/v1/chat/completions", json=body)
        if answer.status_code != 200 or not answer.json().get("choices"):
            raise HealthCheckFailed(f"engine {base} smoke inference failed: HTTP {answer.status_code}")
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise HealthCheckFailed(f"engine {base} smoke inference failed: {exc}") from exc


def engine_health_gate(pointers: Path) -> None:
    for link in sorted(pointers.iterdir()):
        if not link.resolve().is_dir():
            raise HealthCheckFailed(f"{link.name} points at a directory that does not exist")
    deadline = time.monotonic() + settings.UPDATES_HEALTH_TIMEOUT_SECONDS
    with httpx.Client(timeout=10.0) as client:
        for endpoint in settings.UPDATES_SMOKE_ENDPOINTS:
            base = endpoint.rstrip("/")
            _wait_healthy(client, base, deadline)
            _wait_serving_pointer(client, base, pointers / "models", deadline)
            _wait_healthy(client, base, deadline)  # the engine now answering may be the restarted one
            _smoke(client, base)
