"""Typed helpers that read settings from the environment and fail loudly on bad values.

Secrets may come from a file: for NAME, if NAME_FILE is set, the file's content (stripped) is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


class SettingError(ValueError):
    """A setting in the environment has a value Enclave cannot use."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingError(f"{name}_FILE={file_name!r} cannot be read: {exc.strerror}") from exc
    return os.environ.get(name)


def env_str(name: str, default: str | None = None) -> str:
    value = _raw(name)
    if value is None:
        if default is None:
            raise SettingError(f"{name} must be set")
        return default
    return value


def env_bool(name: str, default: bool = False) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingError(f"{name}={value!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise SettingError(f"{name}={value!r} is not an integer") from exc
    if minimum is not None and number < minimum:
        raise SettingError(f"{name}={number} is below the minimum {minimum}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name: str, default: Path) -> Path:
    value = _raw(name)
    return Path(value) if value else default


@dataclass(frozen=True)
class Database:
    engine: str
    name: str
    user: str = ""
    password: str = ""
    host: str = ""
    port: str = ""
    options: dict[str, str] | None = None

    def as_django(self) -> dict[str, object]:
        config: dict[str, object] = {"ENGINE": self.engine, "NAME": self.name}
        if self.engine.endswith("postgresql"):
            config.update(
                USER=self.user,
                PASSWORD=self.password,
                HOST=self.host,
                PORT=self.port,
                CONN_MAX_AGE=60,
                CONN_HEALTH_CHECKS=True,
                OPTIONS=self.options or {},
            )
        return config


def parse_database_url(url: str) -> Database:
    """postgresql://user:pass@host:port/name, or sqlite:////absolute/path.db (four slashes), or sqlite:///:memory:."""
    parsed = urlparse(url)
    if parsed.scheme in {"postgres", "postgresql"}:
        name = parsed.path.lstrip("/")
        if not name:
            raise SettingError(f"DATABASE_URL {url!r} names no database")
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        return Database(
            engine="django.db.backends.postgresql",
            name=unquote(name),
            user=unquote(parsed.username or ""),
            password=unquote(parsed.password or ""),
            host=parsed.hostname or "",
            port=str(parsed.port or ""),
            options=options,
        )
    if parsed.scheme == "sqlite":
        rest = url[len("sqlite://") :]
        path = rest[1:] if rest.startswith("/") else ""
        if path == ":memory:" or path.startswith("/"):
            return Database(engine="django.db.backends.sqlite3", name=path)
        raise SettingError(f"DATABASE_URL {url!r}: use sqlite:////absolute/path.db")
    raise SettingError(f"DATABASE_URL {url!r}: scheme must be postgresql:// or sqlite:///")
