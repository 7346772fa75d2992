"""Every console URL × every persona, generated from the URL configuration: no view escapes its check.

A view either declares the roles that may open it (@require_role) or is explicitly public (@public);
a new view without either fails test_every_console_view_declares_its_roles.
"""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, get_resolver

from mgmt.accounts.access import PUBLIC
from mgmt.accounts.services import do_create_api_key
from tests.fixtures.personas import PERSONA_NAMES, PERSONA_ROLES, verified_client

PUBLIC_URLS = {"console:login", "console:logout", "console:healthz"}


def _console_patterns() -> list[tuple[str, URLPattern]]:
    found = []

    def walk(patterns, prefix, namespace):
        for pattern in patterns:
            if isinstance(pattern, URLPattern):
                found.append((f"{namespace}:{pattern.name}", prefix + str(pattern.pattern), pattern))
            else:
                walk(pattern.url_patterns, prefix + str(pattern.pattern), pattern.namespace or namespace)

    walk(get_resolver().url_patterns, "", "")
    return found  # every namespace: console, routing, and whatever is added next


PATTERNS = _console_patterns()


def test_every_console_view_declares_its_roles():
    assert len(PATTERNS) >= 20
    assert {name.split(":")[0] for name, _, _ in PATTERNS} >= {"console", "routing"}
    for name, _, pattern in PATTERNS:
        roles = getattr(pattern.callback, "enclave_roles", None)
        assert roles is not None, f"{name} declares no roles: decorate it with @require_role or @public"
        assert (roles == PUBLIC) == (name in PUBLIC_URLS), f"{name}: public views are exactly {PUBLIC_URLS}"


def _url(route: str, personas) -> str:
    from mgmt.chat.services import do_create_conversation
    from mgmt.routing.services import TargetSpec, do_create_deployment, do_create_model, do_set_route

    key = do_create_api_key(personas.staff, name="matrix", expires_at=None, actor=None).key
    model = do_create_model("matrix", served_name="matrix-model", actor=None)
    deployment = do_create_deployment(
        "matrix-cpu", model=model, kind="vllm-cpu", endpoint="http://127.0.0.1:9", max_context=2048, actor=None
    )
    route_row = do_set_route(personas.radiology, "default", [TargetSpec(deployment=deployment)], actor=None)
    values = {
        "department_id": personas.radiology.pk,
        "user_id": personas.staff.pk,
        "key_id": key.pk,
        "deployment_id": deployment.pk,
        "route_id": route_row.pk,
        "conversation_id": do_create_conversation(personas.staff, "default").pk,
    }
    return "/" + re.sub(r"<int:(\w+)>", lambda m: str(values[m.group(1)]), route)


CASES = [
    (name, route, persona, method)
    for name, route, pattern in PATTERNS
    if pattern.callback.enclave_roles != PUBLIC
    for persona in PERSONA_NAMES
    for method in ("get", "post")
]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "route", "persona", "method"), CASES, ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in CASES])
def test_permission_matrix(personas, name, route, persona, method):
    roles = dict((n, p) for n, _, p in PATTERNS)[name].callback.enclave_roles
    client = verified_client(personas.by_name(persona))
    response = getattr(client, method)(_url(route, personas))
    role = PERSONA_ROLES[persona]
    if role is None:
        assert response.status_code == 302 and response["Location"].startswith("/login/"), response.status_code
    elif role in roles:
        assert response.status_code != 403 or b'data-code="access.role"' not in response.content
        assert response.status_code < 500
    else:
        assert response.status_code == 403
        assert b'data-code="access.role"' in response.content
        from mgmt.audit.models import AuditEvent

        assert AuditEvent.objects.filter(action="access.denied", actor=personas.by_name(persona).username).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("persona", "path", "code"),
    [
        ("dept_admin", "/users/{other_staff}/", "access.user"),
        ("dept_admin", "/users/{admin}/", "access.user"),
        ("dept_admin", "/departments/{litigation}/weight/", "access.department"),
        ("staff", "/keys/{other_key}/revoke/", "access.apikey"),
        ("dept_admin", "/keys/{other_key}/revoke/", "access.apikey"),
    ],
)
def test_object_checks_keep_admins_inside_their_department(personas, persona, path, code):
    other_key = do_create_api_key(personas.other_staff, name="k", expires_at=None, actor=None).key
    url = path.format(
        other_staff=personas.other_staff.pk,
        admin=personas.admin.pk,
        litigation=personas.litigation.pk,
        other_key=other_key.pk,
    )
    response = verified_client(personas.by_name(persona)).post(url, {"weight": 5, "role": "staff"})
    assert response.status_code == 403 and f'data-code="{code}"'.encode() in response.content
    other_key.refresh_from_db()
    personas.litigation.refresh_from_db()
    assert other_key.revoked_at is None and personas.litigation.weight == 1
