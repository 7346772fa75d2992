"""Register the engine instances a node runs as deployments, and give one department a route to them.

The engines role writes /etc/enclave/engines/deployments.json (a list of {name, kind, model, endpoint,
max_context}); the first boot runs this command with it. Idempotent: what exists is left as it is, so a
second run (or a later boot) changes nothing. Every write goes through mgmt.routing.services (audited).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from mgmt.accounts.models import Department
from mgmt.accounts.services import do_create_department
from mgmt.routing.models import Deployment, Model, Route
from mgmt.routing.services import TargetSpec, do_create_deployment, do_create_model, do_set_route

FIELDS = {"name": str, "kind": str, "model": str, "endpoint": str, "max_context": int}


def _entries(path: Path) -> list[dict[str, Any]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CommandError(f"DEPLOYMENTS_UNREADABLE: {path}: {exc}") from exc
    if not isinstance(raw, list):
        raise CommandError(f"DEPLOYMENTS_INVALID: {path} must hold a list")
    for number, entry in enumerate(raw):
        for field, kind in FIELDS.items():
            if not isinstance(entry, dict) or not isinstance(entry.get(field), kind):
                raise CommandError(f"DEPLOYMENTS_INVALID: entry {number} needs {field!r} ({kind.__name__})")
    return raw


class Command(BaseCommand):
    help = "Register this node's engine instances (deployments.json) and a route of one department to them."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--department", default="General", help="department given the route")
        parser.add_argument("--alias", default="default", help="the route's alias (the `model` clients send)")

    def handle(self, *args: Any, **options: Any) -> None:
        entries = _entries(options["file"])
        if not entries:
            self.stdout.write("no engine instances on this node: nothing to register")
            return
        with transaction.atomic():
            deployments = []
            for entry in entries:
                model = Model.objects.filter(name=entry["model"]).first() or do_create_model(
                    entry["model"], served_name=entry["model"], actor=None
                )
                deployment = Deployment.objects.filter(name=entry["name"]).first()
                if deployment is None:
                    deployment = do_create_deployment(
                        entry["name"],
                        model=model,
                        kind=entry["kind"],
                        endpoint=entry["endpoint"],
                        max_context=entry["max_context"],
                        max_concurrency=int(entry.get("max_concurrency", 1)),
                        actor=None,
                    )
                    self.stdout.write(f"deployment {deployment.name} ({deployment.kind}) at {deployment.endpoint}")
                deployments.append(deployment)
            name = options["department"]
            department = Department.objects.filter(name=name).first() or do_create_department(name, actor=None)
            if not Route.objects.filter(department=department, alias=options["alias"]).exists():
                do_set_route(department, options["alias"], [TargetSpec(deployment=d) for d in deployments], actor=None)
                self.stdout.write(
                    f"route {department.name}/{options['alias']} -> {', '.join(d.name for d in deployments)}"
                )
