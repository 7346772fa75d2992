from __future__ import annotations

from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "mgmt.routing"
    label = "routing"
    verbose_name = "Model routing"

    def ready(self) -> None:
        from . import signals

        signals.connect()
