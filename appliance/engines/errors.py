"""Errors of the engines package: one class per failure, each with a stable code tests assert on."""

from __future__ import annotations


class EngineError(Exception):
    """Base class; `code` is stable (tests, logs and the console key on it), the message is for people."""

    code = "engine.error"


class InvalidEngineName(EngineError):
    code = "engine.invalid_name"


class InvalidEngineOption(EngineError):
    code = "engine.invalid_option"


class EngineNotLoopback(EngineError):
    code = "engine.not_loopback"


class EngineAlreadyManaged(EngineError):
    code = "engine.already_managed"


class UnknownEngine(EngineError):
    code = "engine.unknown"


class EngineStartTimeout(EngineError):
    code = "engine.start_timeout"


class EngineGaveUp(EngineError):
    code = "engine.gave_up"


class EngineExecutableMissing(EngineError):
    code = "engine.executable_missing"
