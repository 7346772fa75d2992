"""Every refusal the gateway can give: an HTTP status, an OpenAI error type and a stable code."""

from __future__ import annotations

import json

__all__ = ["GatewayError", "error_body"]


class GatewayError(Exception):
    """One failure with a stable `code`; rendered as OpenAI's {"error": {"message", "type", "code"}}."""

    def __init__(self, status: int, code: str, message: str, *, kind: str = "", param: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        if not kind:
            if status == 401:
                kind = "authentication_error"
            elif status == 403:
                kind = "permission_error"
            elif status == 404:
                kind = "not_found_error"
            elif status == 429:
                kind = "rate_limit_error"
            elif status < 500:
                kind = "invalid_request_error"
            else:
                kind = "server_error"
        self.kind = kind

    def body(self) -> bytes:
        return error_body(self.message, self.kind, self.code, self.param)


def error_body(message: str, kind: str, code: str, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}, separators=(",", ":")
    ).encode("utf-8")
