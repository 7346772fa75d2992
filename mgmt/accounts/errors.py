"""Refusals a person can hit, each with a stable code (tests assert on it) and a message for people."""

from __future__ import annotations


class AccountError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
