"""Who is calling and which route they get: pure functions over a Snapshot (no I/O)."""

from __future__ import annotations

import hashlib

from .errors import GatewayError
from .payload import Endpoint
from .snapshot import KeyEntry, Route, Snapshot

__all__ = ["authenticate", "key_prefix", "resolve_route"]

KEY_START = "enc_"


def key_prefix(key: str) -> str:
    """The public prefix of `enc_<prefix>_<secret>`, for the audit trail; never the secret."""
    if not key.startswith(KEY_START):
        return ""
    prefix, sep, _secret = key[len(KEY_START) :].partition("_")
    return prefix[:16] if sep else ""


def authenticate(authorization: str | None, snapshot: Snapshot, now: float) -> KeyEntry:
    if not authorization:
        raise GatewayError(
            401,
            "missing_api_key",
            "No API key: send “Authorization: Bearer enc_…” with a key from the console.",
        )
    scheme, _sep, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise GatewayError(401, "invalid_api_key", "The Authorization header must be “Bearer <API key>”.")
    entry = snapshot.keys.get(hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest())
    if entry is None:
        raise GatewayError(401, "invalid_api_key", "This API key is not known. Create a key in the console.")
    if entry.revoked:
        raise GatewayError(401, "revoked_api_key", "This API key has been revoked. Create a new one in the console.")
    if entry.expires_at is not None and entry.expires_at <= now:
        raise GatewayError(401, "expired_api_key", "This API key has expired. Create a new one in the console.")
    if not entry.user_active:
        raise GatewayError(401, "account_disabled", "The account this key belongs to is disabled.")
    return entry


def resolve_route(snapshot: Snapshot, key: KeyEntry, alias: str, endpoint: Endpoint) -> Route:
    route = snapshot.routes.get((key.department.id, alias))
    if route is None:
        if alias in snapshot.all_aliases:
            # Say only that this department may not use it: nothing about who may.
            raise GatewayError(
                403,
                "model_not_allowed",
                f"Your department may not use the model “{alias}”. GET /v1/models lists the ones it may use.",
                param="model",
            )
        raise GatewayError(
            404,
            "model_not_found",
            f"There is no model “{alias}”. GET /v1/models lists the ones you may use.",
            param="model",
        )
    if route.task != endpoint.task:
        raise GatewayError(
            400,
            "wrong_endpoint_for_model",
            f"“{alias}” is a {route.task} model; it cannot serve {endpoint.path}.",
            param="model",
        )
    return route
