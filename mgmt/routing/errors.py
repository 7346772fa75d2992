from __future__ import annotations

__all__ = ["RoutingError"]


class RoutingError(Exception):
    """A refused routing change. `code` is stable (tests and the console key on it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
