"""The OpenAI-compatible ASGI gateway (the hot path). See docs/decisions/035x for its choices."""

from .app import Gateway, create_app
from .config import GatewayConfig
from .errors import GatewayError

__all__ = ["Gateway", "GatewayConfig", "GatewayError", "create_app"]
