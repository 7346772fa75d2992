"""Active health: the probe marks a dead engine down (audited), the gateway then routes around it."""

from __future__ import annotations

import openai

from mgmt.audit.models import AuditEvent
from mgmt.routing.health import probe_deployments
from mgmt.routing.models import Deployment
from mgmt.routing.tasks import probe_deployments_task
from tests.fixtures.processes import wait_for

from .conftest import add_deployment, route


def test_probe_marks_a_dead_engine_down_and_back_up(world, upstream, gateway):
    primary = upstream("--chunks", "1")
    backup = upstream("--chunks", "2")
    route(world.emergency, "default", add_deployment("primary", primary.url), add_deployment("backup", backup.url))
    gw = gateway()
    api = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=world.nurse_key, max_retries=0)
    hi = [{"role": "user", "content": "hi"}]
    assert [o.healthy for o in probe_deployments()] == [True, True]
    assert not AuditEvent.objects.filter(action="routing.deployment.health").exists()  # no change, no event

    primary.stop()
    outcomes = {o.deployment: o for o in probe_deployments()}
    assert (outcomes["primary"].healthy, outcomes["backup"].healthy) == (False, True)
    assert "ConnectError" in outcomes["primary"].detail
    event = AuditEvent.objects.get(action="routing.deployment.health")
    assert (event.data["name"], event.data["healthy"]) == ("primary", False)
    assert Deployment.objects.get(name="primary").healthy is False

    # Every gateway worker learns it through the snapshot: straight to the backup, no failed attempt.
    def backup_only() -> bool:
        reply = api.chat.completions.create(model="default", messages=hi)
        last = AuditEvent.objects.filter(action="gateway.request").latest("id")
        return reply.choices[0].message.content == " w0 w1" and "attempts" not in last.data

    wait_for(backup_only, timeout=5, what="gateway routing around the dead engine")
    assert probe_deployments_task() == 1  # the Celery task runs the same probe
    assert "<strong>down</strong>" in _engines_page()

    # The engine is back (here: the admin points the deployment at a live one): the next probe says so.
    from mgmt.routing.services import do_update_deployment

    do_update_deployment(Deployment.objects.get(name="primary"), endpoint=backup.url, actor=None)
    assert {o.deployment: o.healthy for o in probe_deployments()} == {"primary": True, "backup": True}
    changes = [e.data["healthy"] for e in AuditEvent.objects.filter(action="routing.deployment.health").order_by("id")]
    assert changes == [False, True]


def _engines_page() -> str:
    from mgmt.accounts.models import Role
    from tests.fixtures.personas import make_user, verified_client

    admin = verified_client(make_user("ann.admin", Role.APPLIANCE_ADMIN, None))
    return admin.get("/routing/").content.decode()
