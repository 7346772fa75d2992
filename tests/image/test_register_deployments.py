"""The first boot's `enclave_register_deployments`: the engines role's deployments.json becomes the
console's deployments and the General/default route, once (a second run changes nothing); a malformed
file is refused with its code and registers nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from mgmt.audit.models import AuditEvent
from mgmt.routing.models import Deployment, Route

pytestmark = pytest.mark.django_db

ENTRY = {
    "name": "llama",
    "kind": "llama-cpp",
    "model": "enclave-fixture-gguf",
    "endpoint": "http://127.0.0.1:8101",
    "max_context": 2048,
    "max_concurrency": 1,
}


def test_deployments_and_the_default_route_are_registered_once(tmp_path: Path) -> None:
    path = tmp_path / "deployments.json"
    path.write_text(json.dumps([ENTRY]))
    call_command("enclave_register_deployments", str(path))
    deployment = Deployment.objects.get(name="llama")
    assert (deployment.kind, deployment.endpoint, deployment.model.served_name) == (
        "llama-cpp",
        "http://127.0.0.1:8101",
        "enclave-fixture-gguf",
    )
    route = Route.objects.get(department__name="General", alias="default")
    assert [t.deployment.name for t in route.targets.all()] == ["llama"]
    events = AuditEvent.objects.count()
    call_command("enclave_register_deployments", str(path))
    assert Deployment.objects.count() == 1
    assert Route.objects.count() == 1
    assert AuditEvent.objects.count() == events


def test_a_malformed_file_is_refused_and_registers_nothing(tmp_path: Path) -> None:
    path = tmp_path / "deployments.json"
    path.write_text(json.dumps([{**ENTRY, "max_context": "2048"}]))
    with pytest.raises(CommandError, match="DEPLOYMENTS_INVALID: entry 0 needs 'max_context'"):
        call_command("enclave_register_deployments", str(path))
    assert not Deployment.objects.exists()
    assert not Route.objects.exists()
