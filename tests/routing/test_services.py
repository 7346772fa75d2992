"""Routing writes: validated, audited in their transaction, and announced to the gateways on commit."""

from __future__ import annotations

import json

import pytest
import redis
from django.conf import settings
from django.db import transaction

from mgmt.accounts.services import do_create_department
from mgmt.audit.models import AuditEvent
from mgmt.routing.errors import RoutingError
from mgmt.routing.invalidation import channel as invalidation_channel
from mgmt.routing.models import Route, RouteTarget
from mgmt.routing.services import (
    TargetSpec,
    do_create_deployment,
    do_create_model,
    do_delete_route,
    do_set_deployment_health,
    do_set_route,
    do_update_deployment,
)


@pytest.fixture
def catalog(db):
    model = do_create_model("deepseek-v4-flash", served_name="deepseek-v4-flash", actor=None)
    dep = do_create_deployment(
        "cpu-1", model=model, kind="vllm-cpu", endpoint="http://127.0.0.1:8001/", max_context=2048, actor=None
    )
    dep2 = do_create_deployment(
        "cpu-2", model=model, kind="vllm-cpu", endpoint="http://127.0.0.1:8002", max_context=2048, actor=None
    )
    department = do_create_department("Radiology", weight=2, actor=None)
    return model, dep, dep2, department


@pytest.fixture
def channel():
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    pubsub.subscribe(invalidation_channel())
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    yield pubsub
    pubsub.close()
    client.close()


def _messages(pubsub) -> list[dict]:
    out = []
    while (message := pubsub.get_message(timeout=0.5)) is not None:
        if message["type"] == "message":
            out.append(json.loads(message["data"]))
    return out


def test_route_with_fallback_is_stored_and_audited(catalog):
    _model, dep, dep2, department = catalog
    assert dep.endpoint == "http://127.0.0.1:8001"
    route = do_set_route(department, "default", [TargetSpec(dep, 0, 3), TargetSpec(dep2, 1)], actor=None)
    assert [(t.deployment.name, t.priority, t.weight) for t in route.targets.all()] == [
        ("cpu-1", 0, 3),
        ("cpu-2", 1, 1),
    ]
    event = AuditEvent.objects.filter(action="routing.route.set").get()
    assert event.department == "Radiology"
    assert event.data["after"][1] == {"deployment": "cpu-2", "priority": 1, "weight": 1}
    # Replacing the route keeps one row and records before/after.
    do_set_route(department, "default", [TargetSpec(dep2)], actor=None)
    assert RouteTarget.objects.filter(route=route).count() == 1
    assert AuditEvent.objects.filter(action="routing.route.set").latest("id").data["before"][0]["deployment"] == "cpu-1"
    do_delete_route(Route.objects.get(), actor=None)
    assert not Route.objects.exists()
    assert AuditEvent.objects.filter(action="routing.route.delete").count() == 1


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda c: do_create_model("Bad Name", served_name="x", actor=None), "model.bad_name"),
        (lambda c: do_create_model("m", served_name="x", task="vision", actor=None), "model.bad_task"),
        (lambda c: do_create_model("deepseek-v4-flash", served_name="x", actor=None), "model.exists"),
        (
            lambda c: do_create_deployment(
                "d", model=c[0], kind="tgi", endpoint="http://h:1", max_context=1, actor=None
            ),
            "deployment.bad_kind",
        ),
        (
            lambda c: do_create_deployment("d", model=c[0], kind="ds4", endpoint="ftp://h", max_context=1, actor=None),
            "deployment.bad_endpoint",
        ),
        (
            lambda c: do_create_deployment(
                "d", model=c[0], kind="ds4", endpoint="http://h:1", max_context=0, actor=None
            ),
            "deployment.bad_context",
        ),
        (
            lambda c: do_create_deployment(
                "cpu-1", model=c[0], kind="ds4", endpoint="http://h:1", max_context=9, actor=None
            ),
            "deployment.exists",
        ),
        (lambda c: do_update_deployment(c[1], max_concurrency=0, actor=None), "deployment.bad_concurrency"),
        (lambda c: do_set_route(c[3], "Default!", [TargetSpec(c[1])], actor=None), "route.bad_alias"),
        (lambda c: do_set_route(c[3], "default", [], actor=None), "route.no_targets"),
        (
            lambda c: do_set_route(c[3], "default", [TargetSpec(c[1], weight=0)], actor=None),
            "route.bad_weight",
        ),
        (
            lambda c: do_set_route(c[3], "default", [TargetSpec(c[1]), TargetSpec(c[1], 1)], actor=None),
            "route.duplicate_target",
        ),
        (
            lambda c: do_set_route(c[3], "reasoning", [TargetSpec(c[1])], thinking="max", actor=None),
            "route.thinking_max_context",
        ),
    ],
)
def test_bad_changes_are_refused_with_a_code_and_change_nothing(catalog, call, code):
    before = AuditEvent.objects.count()
    with pytest.raises(RoutingError) as refused:
        call(catalog)
    assert refused.value.code == code
    assert AuditEvent.objects.count() == before
    assert not Route.objects.exists()


def test_invalidation_is_published_after_commit_only(committed_db, channel):
    model = do_create_model("m", served_name="m", actor=None)
    dep = do_create_deployment(
        "cpu-1", model=model, kind="vllm-cpu", endpoint="http://127.0.0.1:8001", max_context=2048, actor=None
    )
    department = do_create_department("Radiology", actor=None)
    _messages(channel)

    def rolled_back() -> None:
        with transaction.atomic():
            do_set_route(department, "default", [TargetSpec(dep)], actor=None)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        rolled_back()
    assert _messages(channel) == []
    do_set_route(department, "default", [TargetSpec(dep)], actor=None)
    assert [m["reason"] for m in _messages(channel)] == ["routing.route"]
    do_set_deployment_health(dep, healthy=False, reason="probe failed")
    assert [m["reason"] for m in _messages(channel)] == ["routing.deployment"]
    assert AuditEvent.objects.filter(action="routing.deployment.health").get().data["healthy"] is False
    # Account changes the gateway holds (departments, keys, users) are announced as well.
    do_create_department("Oncology", actor=None)
    assert "accounts.department.changed" in [m["reason"] for m in _messages(channel)]
