"""Console-session auth for the gateway: the staff Chat page calls /v1 with the user's console session.

The session row is read from Django's `django_session` table and its signed data checked with Django's
own signing code (the console's SECRET_KEY), then the same checks Django makes: the session's password
hash still matches the user's (a password change ends sessions), the user is active, and roles that
need a second factor have passed it (django-otp's `otp_device_id`). Browsers must also send the header
`X-Enclave-Console: 1`: a cross-site page cannot add it without a CORS preflight, which the gateway
never grants, so the session cookie alone never authorises a request (CSRF).

Lookups are cached for ENCLAVE_GATEWAY_SESSION_CACHE_SECONDS (default 10): a sign-out reaches the
gateway within that time.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from .errors import GatewayError
from .snapshot import KeyEntry, Snapshot

__all__ = ["CONSOLE_HEADER", "SessionAuth", "console_secret_key"]

CONSOLE_HEADER = b"x-enclave-console"
SESSION_COOKIE = "sessionid"
SESSION_SALT = "django.contrib.sessions.SessionStore"
AUTH_HASH_SALT = "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash"
MFA_ROLES = frozenset({"appliance_admin", "department_admin", "auditor"})
DEV_SECRET = "dev-only-insecure-key-do-not-use-in-production-0123456789"  # noqa: S105 - mgmt/settings.py dev default


def console_secret_key() -> str:
    """The console's SECRET_KEY, read as mgmt/settings.py reads it (ENCLAVE_SECRET_KEY[_FILE])."""
    file_name = os.environ.get("ENCLAVE_SECRET_KEY_FILE")
    if file_name:
        return Path(file_name).read_text(encoding="utf-8").strip()
    value = os.environ.get("ENCLAVE_SECRET_KEY")
    if value:
        return value
    if os.environ.get("ENCLAVE_PRODUCTION", "").lower() in ("1", "true", "yes", "on"):
        raise ValueError("ENCLAVE_SECRET_KEY must be set in production (the gateway checks console sessions)")
    return DEV_SECRET


def _configure_signing(secret: str) -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure(SECRET_KEY=secret, SECRET_KEY_FALLBACKS=[])


def session_key_from_cookie(cookie: str | None) -> str | None:
    if not cookie:
        return None
    for part in cookie.split(";"):
        name, _sep, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value:
            return value.strip('"')
    return None


@dataclass(frozen=True, slots=True)
class _SessionUser:
    user_id: int
    username: str
    active: bool
    role: str
    department_id: int | None
    mfa_passed: bool


class SessionAuth:
    def __init__(self, database_url: str, secret_key: str, cache_seconds: float) -> None:
        self.database_url = database_url
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, _SessionUser | None]] = {}
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._connecting: asyncio.Future[psycopg.AsyncConnection[Any]] | None = None
        self.connects = 0
        _configure_signing(secret_key)

    async def authenticate(self, cookie: str | None, console_header: str | None, snapshot: Snapshot) -> KeyEntry:
        session_key = session_key_from_cookie(cookie)
        if session_key is None:
            raise GatewayError(
                401, "missing_api_key", "No API key: send “Authorization: Bearer enc_…” with a key from the console."
            )
        if console_header != "1":
            raise GatewayError(
                403,
                "console_header_required",
                "Requests made with a console session must send the header X-Enclave-Console: 1.",
            )
        user = await self._lookup(session_key)
        if user is None:
            raise GatewayError(401, "session_invalid", "Your console session has ended; sign in again.")
        if not user.active:
            raise GatewayError(401, "account_disabled", "The account this session belongs to is disabled.")
        if user.role in MFA_ROLES and not user.mfa_passed:
            raise GatewayError(401, "mfa_required", "Complete the second sign-in step in the console first.")
        department = snapshot.departments.get(user.department_id or -1)
        if department is None:
            raise GatewayError(
                403, "no_department", "Your account belongs to no department, so it has no models to use."
            )
        return KeyEntry(0, "session", user.user_id, user.username, True, department, None, False)

    async def _lookup(self, session_key: str) -> _SessionUser | None:
        now = time.monotonic()
        cached = self._cache.get(session_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        user = await self._load(session_key)
        if self.cache_seconds > 0:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[session_key] = (now + self.cache_seconds, user)
        return user

    async def _load(self, session_key: str) -> _SessionUser | None:
        from django.core import signing
        from django.utils.crypto import salted_hmac

        conn = await self._connection()
        row = await (
            await conn.execute(
                "SELECT session_data FROM django_session WHERE session_key = %s AND expire_date > now()",
                [session_key],
            )
        ).fetchone()
        if row is None:
            return None
        try:
            data = signing.loads(row[0], salt=SESSION_SALT, serializer=signing.JSONSerializer)
            user_id = int(data["_auth_user_id"])
        except (signing.BadSignature, KeyError, ValueError, TypeError):
            return None
        user = await (
            await conn.execute(
                "SELECT username, password, is_active, role, department_id FROM accounts_user WHERE id = %s",
                [user_id],
            )
        ).fetchone()
        if user is None:
            return None
        username, password, active, role, department_id = user
        expected = salted_hmac(AUTH_HASH_SALT, password, algorithm="sha256").hexdigest()
        if not hmac.compare_digest(expected, str(data.get("_auth_user_hash", ""))):
            return None  # the password changed since this session began
        return _SessionUser(user_id, username, bool(active), role, department_id, bool(data.get("otp_device_id")))

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        """The lookup connection. Requests that find none usable at the same moment share one connect, and
        its error if it fails (each request tried its own before, and all but one of those were dropped)."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
            # Retrieved here too: the requests that shared it may all have been cancelled (clients gone).
            self._connecting.add_done_callback(lambda done: done.cancelled() or done.exception())
        # A cancelled request (its client gone) does not cancel the connect the others wait for.
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        self.connects += 1
        self._conn = await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, connect_timeout=3, application_name="enclave-gateway-session"
        )
        return self._conn

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._conn is not None:
            await self._conn.close()
