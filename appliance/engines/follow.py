"""An engine that serves the model the activated models pointer selects (the demo and the tests).

On the appliance, systemd restarts the engine units after an activation; in `make demo` and in the tests
this follower does that job: it polls the bundles' models pointer and, when the model directory it
resolves to changes (an activation, an automatic rollback after a failed health gate, a Rollback),
stops the engine and starts it again on the new directory, under the same name and port.

The engine is given the *resolved* directory, so its `/v1/models` answer (`root`) names the release it
actually loaded: the health gate can tell the new model from the old one still running (decision 0404).
With no models pointer yet (nothing activated), the engine serves `fallback`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from appliance.engines.base import EngineAdapter
from appliance.engines.supervisor import Supervisor

__all__ = ["PointerFollower", "model_under_pointer"]

log = logging.getLogger(__name__)


def model_under_pointer(models_pointer: Path, served_dir: str | None = None) -> Path | None:
    """The model directory the pointer selects, resolved: `served_dir` if given, else the first
    (by name) directory under it holding a config.json. None when there is no pointer or no model."""
    if not models_pointer.is_dir():
        return None
    resolved = models_pointer.resolve()
    if served_dir is not None:
        wanted = resolved / served_dir
        return wanted if (wanted / "config.json").is_file() else None
    candidates = sorted(p for p in resolved.iterdir() if p.is_dir() and (p / "config.json").is_file())
    return candidates[0] if candidates else None


class PointerFollower:
    """Keep one supervised engine on the model under `models_pointer` (or `fallback`)."""

    def __init__(
        self,
        supervisor: Supervisor,
        make_engine: Callable[[Path], EngineAdapter],
        models_pointer: Path,
        fallback: Path,
        *,
        poll_s: float = 1.0,
    ) -> None:
        self.supervisor = supervisor
        self.make_engine = make_engine
        self.models_pointer = models_pointer
        self.fallback = fallback.resolve()
        self.poll_s = poll_s
        self.current: Path | None = None
        self.name = make_engine(self.fallback).name
        self.restarts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wanted(self) -> Path:
        return model_under_pointer(self.models_pointer) or self.fallback

    def start(self) -> Path:
        """Start the engine on the wanted model and follow the pointer from a daemon thread."""
        self.current = self.wanted()
        self.supervisor.start(self.make_engine(self.current))
        self._thread = threading.Thread(target=self._loop, name=f"follow-{self.name}", daemon=True)
        self._thread.start()
        return self.current

    def poll(self) -> bool:
        """Restart the engine if the pointer now selects another model; True when it did."""
        wanted = self.wanted()
        if wanted == self.current:
            return False
        log.info("engine %s: models pointer moved from %s to %s; restarting", self.name, self.current, wanted)
        self.supervisor.stop(self.name)
        self.supervisor.start(self.make_engine(wanted))
        self.current = wanted
        self.restarts += 1
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # a failed restart is retried at the next poll; the supervisor logs details
                log.exception("engine %s: following the models pointer failed", self.name)
