"""Console pages for engines, routes and usage: appliance admins only; changes go through the services."""

from __future__ import annotations

import pytest

from mgmt.audit.models import AuditEvent
from mgmt.audit.services import record_event
from mgmt.routing.models import Deployment, Model, Route
from tests.fixtures.personas import verified_client


@pytest.mark.parametrize("persona", ["dept_admin", "staff", "auditor"])
def test_only_appliance_admins_reach_the_routing_pages(personas, persona):
    client = verified_client(personas.by_name(persona))
    for url in ("/routing/", "/routing/usage/"):
        assert client.get(url).status_code == 403


def test_admin_adds_a_model_a_deployment_and_a_route(personas):
    admin = verified_client(personas.admin)
    assert admin.post("/routing/", {"form": "model", "name": "flash", "served_name": "ds-flash"}).status_code == 302
    from mgmt.routing.models import Model

    model = Model.objects.get(name="flash")
    response = admin.post(
        "/routing/",
        {
            "form": "deployment",
            "name": "gpu-1",
            "model": model.pk,
            "kind": "vllm-cuda",
            "endpoint": "http://10.0.0.5:8000",
            "max_context": "131072",
            "max_concurrency": "16",
        },
    )
    assert response.status_code == 302
    response = admin.post(
        "/routing/routes/",
        {"department": personas.radiology.pk, "alias": "default", "thinking": "high", "targets": "gpu-1 0 1"},
    )
    assert response.status_code == 302
    route = Route.objects.get(department=personas.radiology, alias="default")
    assert [t.deployment.name for t in route.targets.all()] == ["gpu-1"]
    assert AuditEvent.objects.get(action="routing.route.set").actor == personas.admin.username
    page = admin.get("/routing/").content.decode()
    assert 'data-route="radiology/default"' in page
    assert "gpu-1 (0, 1)" in page


def test_bad_route_form_shows_the_code_and_changes_nothing(personas):
    admin = verified_client(personas.admin)
    response = admin.post(
        "/routing/routes/", {"department": personas.radiology.pk, "alias": "default", "targets": "nope"}
    )
    assert response.status_code == 400
    assert 'data-code="route.unknown_deployment"' in response.content.decode()
    assert not Route.objects.exists()
    assert not Deployment.objects.exists()


def test_usage_charts_count_gateway_requests_per_department(personas):
    for tokens in (10, 20, 30):
        record_event(
            "gateway.request",
            actor=personas.staff,
            department=personas.radiology,
            data={"prompt_tokens": tokens, "completion_tokens": 1, "latency_ms": 5.0, "status": 200},
        )
    record_event("gateway.request", actor=personas.other_staff, data={"latency_ms": 7.0})
    page = verified_client(personas.admin).get("/routing/usage/").content.decode()
    assert 'data-department="Radiology" data-metric="requests"' in page
    assert "requests/hour · total 3" in page
    assert "tokens/hour · total 63" in page
    assert 'data-department="Litigation" data-metric="requests"' in page


def test_engines_page_shows_this_machines_capacity_plan(personas):
    from appliance.hardware import cached_report

    plan = cached_report().plan
    page = verified_client(personas.admin).get("/routing/").content.decode()
    assert f'data-capacity="largest_context">{plan.largest_context}<' in page
    assert f'data-capacity="concurrent_sessions">{plan.concurrent_sessions}<' in page
    assert cached_report().choice.profile in page


@pytest.mark.parametrize(
    ("url", "data", "code", "action"),
    [
        (
            "/routing/",
            {"form": "model", "name": "Not A Slug", "served_name": "m"},
            "model.bad_name",
            "routing.model.create_refused",
        ),
        (
            "/routing/",
            {"form": "deployment", "name": "gpu-1", "model": "999999999", "kind": "vllm-cuda"},
            "deployment.unknown_model",
            "routing.deployment.create_refused",
        ),
        ("/routing/", {"form": "other"}, "form.unknown", "routing.form_refused"),
        (
            "/routing/routes/",
            {"department": "abc", "alias": "default", "targets": "x"},
            "route.unknown_department",
            "routing.route.set_refused",
        ),
        (
            "/routing/routes/",
            {"department": "@radiology", "alias": "default", "targets": "nope"},
            "route.unknown_deployment",
            "routing.route.set_refused",
        ),
    ],
)
def test_refused_routing_form_is_audited_and_changes_nothing(personas, url, data, code, action):
    admin = verified_client(personas.admin)
    last_event = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    data = {k: str(personas.radiology.pk) if v == "@radiology" else v for k, v in data.items()}
    response = admin.post(url, data)
    assert response.status_code == 400 and f'data-code="{code}"'.encode() in response.content
    assert not (Model.objects.exists() or Deployment.objects.exists() or Route.objects.exists())
    event = AuditEvent.objects.get(id__gt=last_event)  # the refusal, and nothing else
    assert (event.action, event.outcome, event.actor, event.data) == (action, "denied", "alice.admin", {"code": code})
