"""The gateway as gunicorn loads it: `gunicorn --worker-class asgi appliance.gateway.asgi:app`."""

from __future__ import annotations

from .app import create_app

app = create_app()
