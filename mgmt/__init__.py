"""The Enclave console: a Django project (accounts, audit, routing, updates, console)."""

from .celery import app as celery_app

__all__ = ["celery_app"]
