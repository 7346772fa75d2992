"""The gateway end to end: gunicorn's ASGI worker, PostgreSQL, Redis, the official openai client, and the
OpenAI-shaped test upstream (a stand-in engine that misbehaves on demand)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from mgmt.accounts.models import ApiKey
from mgmt.accounts.services import do_create_api_key, do_revoke_api_key
from mgmt.audit.models import AuditEvent
from mgmt.routing.models import EngineKind, Task
from tests.fixtures.processes import wait_for

from .conftest import add_deployment, free_port, route


def client(gw, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0, timeout=30)


def gateway_events(**filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="gateway.request", **filters).order_by("id"))


def last_event() -> AuditEvent:
    return AuditEvent.objects.filter(action="gateway.request").order_by("-id").first()


def test_chat_models_completions_embeddings_with_the_openai_client(world, upstream, gateway):
    up = upstream("--chunks", "5")
    route(world.emergency, "default", add_deployment("cpu-a", up.url))
    embed = add_deployment("embed-a", up.url, task=Task.EMBEDDING)
    route(world.emergency, "embed", embed)
    gw = gateway()
    api = client(gw, world.nurse_key)

    assert sorted(m.id for m in api.models.list().data) == ["default", "embed"]

    reply = api.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == " w0 w1 w2 w3 w4"
    event = last_event()
    assert (event.actor, event.department, event.outcome, event.target_id) == (
        "nina.nurse",
        "Emergency",
        "ok",
        "default",
    )
    assert event.data["deployment"] == "cpu-a"
    assert event.data["status"] == 200
    assert event.data["completion_tokens"] == 5
    assert event.data["prompt_tokens"] == reply.usage.prompt_tokens
    assert event.data["key_prefix"] == world.nurse_key.split("_")[1]

    pieces = []
    for chunk in api.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hi"}], stream=True
    ):
        assert chunk.usage is None  # not asked for, so the gateway drops the usage-only event
        pieces.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(pieces) == " w0 w1 w2 w3 w4"
    opened = AuditEvent.objects.filter(action="gateway.stream_open").order_by("-id").first()
    assert opened.data["deployment"] == "cpu-a"
    final = last_event()
    assert final.data["stream"] is True
    assert final.data["completion_tokens"] == 5
    assert final.id > opened.id

    usage_chunks = [
        c
        for c in api.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        if c.usage is not None
    ]
    assert usage_chunks[0].usage.completion_tokens == 5

    completion = api.completions.create(model="default", prompt="Once upon")
    assert completion.choices[0].text == " w0 w1 w2 w3 w4"
    vectors = api.embeddings.create(model="embed", input=["a", "b"])
    assert len(vectors.data) == 2
    assert last_event().data["endpoint"] == "/v1/embeddings"

    with pytest.raises(openai.BadRequestError) as wrong:
        api.embeddings.create(model="default", input="a")
    assert wrong.value.code == "wrong_endpoint_for_model"


def _code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "code"}
    return body["error"]["code"]


def test_each_bad_input_has_its_code_and_an_audit_event(world, upstream, gateway):
    up = upstream("--max-model-len", "600")
    route(world.emergency, "default", add_deployment("cpu-a", up.url, max_context=600))
    route(world.litigation, "legal", add_deployment("cpu-b", up.url))
    revoked = do_create_api_key(world.nurse, name="old", expires_at=None, actor=world.nurse)
    do_revoke_api_key(revoked.key, actor=world.nurse)
    from django.utils import timezone

    soon = do_create_api_key(
        world.nurse,
        name="short",
        expires_at=timezone.now() + timezone.timedelta(seconds=1),
        actor=world.nurse,
    )
    gw = gateway(ENCLAVE_GATEWAY_MAX_BODY_BYTES="20000")
    chat = f"{gw.url}/v1/chat/completions"
    good = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    bearer = {"Authorization": f"Bearer {world.nurse_key}"}
    wait_for(lambda: time.time() > soon.key.expires_at.timestamp(), timeout=5, what="key expiry")

    cases = [
        ("missing key", {}, good, 401, "missing_api_key"),
        ("unknown key", {"Authorization": "Bearer enc_deadbeef_nope"}, good, 401, "invalid_api_key"),
        ("not bearer", {"Authorization": f"Basic {world.nurse_key}"}, good, 401, "invalid_api_key"),
        ("revoked key", {"Authorization": f"Bearer {revoked.secret}"}, good, 401, "revoked_api_key"),
        ("expired key", {"Authorization": f"Bearer {soon.secret}"}, good, 401, "expired_api_key"),
        ("unknown alias", bearer, {**good, "model": "gpt-4"}, 404, "model_not_found"),
        # PostgreSQL refuses NUL in text: the audit must still record it (one bad value must not fail
        # the group commit it shares with other requests, which would answer them all 503).
        ("alias with a NUL", bearer, {**good, "model": "de\u0000fault"}, 404, "model_not_found"),
        ("other department's alias", bearer, {**good, "model": "legal"}, 403, "model_not_allowed"),
        ("malformed json", bearer, b'{"model": "default", "messages": [', 400, "invalid_json"),
        ("json not an object", bearer, b"[1, 2]", 400, "invalid_json"),
        # Python's decoder takes NaN, Infinity, UTF-16 and half a surrogate pair (no character: it can be
        # neither sent on nor stored in the audit event), and fails on very deep nesting. Each used to be
        # sent on to the engine, end in a 500, or fail the audit commit of every request sharing it.
        (
            "NaN",
            bearer,
            b'{"model": "default", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
            400,
            "invalid_json",
        ),
        (
            "Infinity",
            bearer,
            b'{"model": "default", "messages": [{"role": "user", "content": "hi"}], "top_p": -Infinity}',
            400,
            "invalid_json",
        ),
        (
            "lone surrogate",
            bearer,
            b'{"model": "default", "messages": [{"role": "user", "content": "a\\ud800"}]}',
            400,
            "invalid_json",
        ),
        (
            "lone surrogate in the alias",
            bearer,
            b'{"model": "de\\uDC00fault", "messages": [{"role": "user", "content": "hi"}]}',
            400,
            "invalid_json",
        ),
        (
            "encoded surrogate",
            bearer,
            b'{"model": "default", "messages": [{"role": "user", "content": "a\xed\xa0\x80"}]}',
            400,
            "invalid_json",
        ),
        ("nested too deeply", bearer, b'{"model": "default", "messages": ' + b"[" * 10_000, 400, "invalid_json"),
        (
            "not UTF-8",
            bearer,
            '{"model": "default", "messages": [{"role": "user", "content": "hi"}]}'.encode("utf-16"),
            400,
            "invalid_json",
        ),
        ("model not a string", bearer, {**good, "model": 7}, 400, "invalid_type"),
        ("messages not a list", bearer, {**good, "messages": "hi"}, 400, "invalid_type"),
        ("stream not a bool", bearer, {**good, "stream": "yes"}, 400, "invalid_type"),
        ("max_tokens not an int", bearer, {**good, "max_tokens": "10"}, 400, "invalid_type"),
        ("no messages", bearer, {"model": "default"}, 400, "missing_field"),
        (
            "bad reasoning effort",
            bearer,
            {**good, "reasoning_effort": "extreme"},
            400,
            "invalid_reasoning_effort",
        ),
        (
            "thinking max on a small context",
            bearer,
            {**good, "reasoning_effort": "max"},
            400,
            "thinking_max_unavailable",
        ),
        (
            "oversized body",
            bearer,
            {**good, "messages": [{"role": "user", "content": "x" * 30000}]},
            413,
            "request_too_large",
        ),
        (
            "max_tokens beyond the context",
            bearer,
            {**good, "max_tokens": 5000},
            400,
            "context_length_exceeded",
        ),
        (
            "prompt beyond the context (engine says so)",
            bearer,
            {**good, "messages": [{"role": "user", "content": "y" * 2000}]},
            400,
            "context_length_exceeded",
        ),
    ]
    for label, headers, body, status, code in cases:
        before = AuditEvent.objects.filter(action="gateway.request").count()
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = httpx.post(chat, content=content, headers={**headers, "content-type": "application/json"})
        assert (response.status_code, _code(response)) == (status, code), label
        events = gateway_events()[before:]
        assert len(events) == 1, label
        assert events[0].data["code"] == code, label
        assert events[0].outcome == "denied", label
    # Wrong method and unknown path get clear errors too.
    assert _code(httpx.get(chat, headers=bearer)) == "method_not_allowed"
    assert _code(httpx.get(f"{gw.url}/v1/nothing", headers=bearer)) == "unknown_endpoint"
    # Nothing of the refused requests reached the engine but the one the engine itself refused.
    assert "maximum context length" not in gw.output()


def test_engine_errors_fallback_and_passive_health(world, upstream, gateway):
    broken = upstream("--fail-status", "500")
    garbage = upstream("--garbage")
    good = upstream("--chunks", "3")
    dead_url = "http://127.0.0.1:9"  # discard port: nothing listens, connection refused
    route(world.emergency, "fails", add_deployment("broken", broken.url))
    route(world.emergency, "garbage", add_deployment("garbage", garbage.url))
    route(world.emergency, "down", add_deployment("dead", dead_url))
    route(world.emergency, "default", add_deployment("dead-first", dead_url), add_deployment("good", good.url))
    route(
        world.emergency,
        "retry",
        add_deployment("broken-first", broken.url),
        add_deployment("good-2", good.url),
    )
    gw = gateway()
    api = client(gw, world.nurse_key)
    hi = [{"role": "user", "content": "hi"}]

    with pytest.raises(openai.InternalServerError) as fails:
        api.chat.completions.create(model="fails", messages=hi)
    assert (fails.value.status_code, fails.value.code) == (502, "upstream_error")
    assert last_event().outcome == "error"
    with pytest.raises(openai.InternalServerError) as bad:
        api.chat.completions.create(model="garbage", messages=hi)
    assert bad.value.code == "upstream_invalid_response"
    with pytest.raises(openai.InternalServerError) as bad_stream:
        list(api.chat.completions.create(model="garbage", messages=hi, stream=True))
    assert bad_stream.value.code == "upstream_invalid_response"
    with pytest.raises(openai.InternalServerError) as down:
        api.chat.completions.create(model="down", messages=hi)
    assert (down.value.status_code, down.value.code) == (503, "upstream_unavailable")
    assert last_event().data["code"] == "upstream_unavailable"

    # Fallback before the first byte: the first deployment refuses connections, the second answers.
    assert api.chat.completions.create(model="default", messages=hi).choices[0].message.content == " w0 w1 w2"
    event = last_event()
    assert (event.data["deployment"], event.data["attempts"]) == ("good", ["dead-first", "good"])
    # ... and the refused one is then skipped for a while (passive health): one attempt only.
    api.chat.completions.create(model="default", messages=hi)
    assert last_event().data.get("attempts") is None
    # A 5xx from the first deployment also falls back, for streams too.
    text = "".join(
        c.choices[0].delta.content or ""
        for c in api.chat.completions.create(model="retry", messages=hi, stream=True)
        if c.choices
    )
    assert text == " w0 w1 w2"
    assert last_event().data["attempts"] == ["broken-first", "good-2"]


def test_engine_dying_mid_stream_ends_the_stream_with_an_error_event(world, upstream, gateway):
    dying = upstream("--chunks", "10", "--die-after-chunks", "3")
    route(world.emergency, "default", add_deployment("dying", dying.url))
    gw = gateway()
    api = client(gw, world.nurse_key)
    received = []

    def consume() -> None:
        for chunk in api.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            received.extend(c.delta.content for c in chunk.choices)

    with pytest.raises(openai.APIError) as stopped:
        consume()
    assert received == [" w0", " w1", " w2"]  # what the engine sent before it died reached the client
    assert "stopped in the middle" in str(stopped.value)
    event = last_event()
    assert (event.outcome, event.data["code"], event.data["status"]) == ("error", "upstream_interrupted", 502)


def test_client_disconnect_mid_stream_cancels_the_engine_request(world, upstream, gateway):
    slow = upstream("--chunks", "200", "--chunk-delay", "0.05")
    route(world.emergency, "default", add_deployment("slow", slow.url))
    gw = gateway()
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {world.nurse_key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    wait_for(lambda: "stream cancelled by the client" in slow.output(), timeout=10, what="engine cancel")
    wait_for(
        lambda: last_event() is not None and last_event().data.get("code") == "client_disconnected",
        timeout=10,
        what="disconnect audit",
    )
    assert last_event().data["status"] == 499


def test_thinking_modes_become_chat_template_kwargs(world, upstream, gateway):
    echo = upstream("--echo")
    route(world.emergency, "reasoning", add_deployment("echo", echo.url), thinking="high")
    route(world.emergency, "default", add_deployment("echo-2", echo.url))
    gw = gateway()
    api = client(gw, world.nurse_key)
    hi = [{"role": "user", "content": "hi"}]

    def sent(**kwargs):
        reply = api.chat.completions.create(messages=hi, **kwargs)
        return reply.model_extra["enclave_test_echo"]

    on = sent(model="reasoning")
    assert on["chat_template_kwargs"] == {"thinking": True, "reasoning_effort": "high"}
    assert on["model"] == "fixture-model"
    assert sent(model="reasoning", reasoning_effort="none")["chat_template_kwargs"] == {"thinking": False}
    assert "chat_template_kwargs" not in sent(model="default")
    assert sent(model="default", reasoning_effort="medium")["chat_template_kwargs"]["thinking"] is True


def test_engines_get_the_fair_queue_priority_and_clients_see_only_the_alias(world, upstream, gateway):
    echo = upstream("--echo")
    route(world.emergency, "default", add_deployment("echo-vllm", echo.url))
    route(world.emergency, "small", add_deployment("echo-llama", echo.url, kind=EngineKind.LLAMA_CPP))
    gw = gateway()
    api = client(gw, world.nurse_key)
    hi = [{"role": "user", "content": "hi"}]

    # A client's own priority never reaches the engine; vLLM gets the fair queue's: an idle department's
    # request lags the virtual clock by 1/weight (Emergency weighs 3), scaled to an integer.
    reply = api.chat.completions.create(model="default", messages=hi, extra_body={"priority": -1000})
    sent = reply.model_extra["enclave_test_echo"]
    assert sent["priority"] == 333
    assert sent["model"] == "fixture-model"  # the engine is asked for its served name ...
    assert reply.model == "default"  # ... and the client hears only the alias it asked for
    stream = api.chat.completions.create(model="default", messages=hi, stream=True, extra_body={"priority": 0})
    chunks = list(stream)
    assert chunks and {c.model for c in chunks} == {"default"}
    assert chunks[0].model_extra["enclave_test_echo"]["priority"] == 333
    assert api.completions.create(model="default", prompt="hi").model == "default"

    # llama.cpp schedules in arrival order: no priority field at all.
    small = api.chat.completions.create(model="small", messages=hi, extra_body={"priority": -5})
    assert "priority" not in small.model_extra["enclave_test_echo"]
    assert small.model == "small"


def test_departments_see_and_use_only_their_own_routes(world, upstream, gateway):
    up = upstream()
    route(world.emergency, "default", add_deployment("er", up.url))
    route(world.emergency, "triage", add_deployment("er-2", up.url))
    route(world.litigation, "default", add_deployment("law", up.url))
    gw = gateway()
    nurse, lawyer = client(gw, world.nurse_key), client(gw, world.lawyer_key)
    assert [m.id for m in lawyer.models.list().data] == ["default"]
    assert [m.id for m in nurse.models.list().data] == ["default", "triage"]
    lawyer.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
    event = last_event()
    assert (event.department, event.data["deployment"]) == ("Litigation", "law")
    with pytest.raises(openai.PermissionDeniedError) as denied:
        lawyer.chat.completions.create(model="triage", messages=[{"role": "user", "content": "x"}])
    assert denied.value.code == "model_not_allowed"
    assert "Emergency" not in str(denied.value)
    assert "er-2" not in str(denied.value)
    assert gateway_events(department="Litigation", outcome="denied")[-1].target_id == "triage"


def test_cookies_set_by_an_engine_go_nowhere(world, upstream, gateway):
    """An engine (or a web server in front of one) that sets a cookie must not see it come back on a
    later request, least of all on another department's, and clients never receive it."""
    up = upstream("--echo", "--set-cookie")
    # By name, as a multi-node engine would be configured (aiohttp keeps no cookies from bare IPs).
    shared = add_deployment("shared", up.url.replace("127.0.0.1", "localhost"))
    route(world.emergency, "default", shared)
    route(world.litigation, "default", shared)
    gw = gateway()
    nurse, lawyer = client(gw, world.nurse_key), client(gw, world.lawyer_key)
    hi = [{"role": "user", "content": "hi"}]

    first = nurse.chat.completions.with_raw_response.create(model="default", messages=hi)
    assert "set-cookie" not in first.headers
    assert "cookie" not in first.parse().model_extra["enclave_test_headers"]
    for api in (lawyer, nurse):
        raw = api.chat.completions.with_raw_response.create(model="default", messages=hi)
        assert "set-cookie" not in raw.headers
        assert "cookie" not in raw.parse().model_extra["enclave_test_headers"]
        chunks = list(api.chat.completions.create(model="default", messages=hi, stream=True))
        assert "cookie" not in chunks[0].model_extra["enclave_test_headers"]
    # The engine hears who is asking only through what the gateway chooses to send.
    sent = raw.parse().model_extra["enclave_test_headers"]
    assert "authorization" not in sent
    assert sent["content-type"] == "application/json"
    assert "accept-encoding" not in sent  # answers are passed through as they come: never compressed
    assert sent["user-agent"] == "enclave-gateway"


def test_console_changes_reach_the_gateway_through_pubsub(world, upstream, gateway):
    up = upstream()
    gw = gateway()  # reloads only on pub/sub here (timer at 600 s)
    api = client(gw, world.lawyer_key)
    assert api.models.list().data == []
    route(world.litigation, "default", add_deployment("law", up.url))
    wait_for(lambda: [m.id for m in api.models.list().data] == ["default"], timeout=5, what="route visible")
    api.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
    do_revoke_api_key(ApiKey.objects.get(user=world.lawyer), actor=world.lawyer)

    def refused() -> bool:
        try:
            api.models.list()
        except openai.AuthenticationError as exc:
            return exc.code == "revoked_api_key"
        return False

    wait_for(refused, timeout=5, what="revocation visible")


def test_no_durable_audit_means_no_answer(world, upstream, gateway):
    import psycopg

    from tests.fixtures.processes import test_database_url

    up = upstream()
    route(world.emergency, "default", add_deployment("er", up.url))
    gw = gateway()
    api = client(gw, world.nurse_key)
    hi = [{"role": "user", "content": "hi"}]
    api.chat.completions.create(model="default", messages=hi)
    url = test_database_url()
    database = url.rsplit("/", 1)[1]
    admin = psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True)
    # PostgreSQL stops accepting the gateway: new connections refused, its open ones ended.
    admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
        " AND application_name LIKE 'enclave-gateway%%'",
        [database],
    )
    try:
        with pytest.raises(openai.InternalServerError) as refused:
            api.chat.completions.create(model="default", messages=hi)
        assert (refused.value.status_code, refused.value.code) == (503, "audit_unavailable")
        with pytest.raises(openai.APIError) as refused_stream:
            list(api.chat.completions.create(model="default", messages=hi, stream=True))
        assert "audit" in str(refused_stream.value).lower()
        health = httpx.get(f"{gw.url}/healthz")
        assert (health.status_code, health.json()["audit_ok"]) == (503, False)
    finally:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.close()
    count = len(gateway_events())
    assert api.chat.completions.create(model="default", messages=hi).choices
    assert len(gateway_events()) == count + 1


def test_session_lookups_at_the_same_moment_share_one_connect(world):
    """Requests with console sessions that arrive together when the gateway has no lookup connection (at
    start, or after PostgreSQL restarted) make one connection between them, not one each; if that connect
    fails, every one of them gets its error at once (none waits behind another's connect), and the next
    request tries again."""
    import asyncio

    import psycopg
    from django.conf import settings
    from django.test import Client

    from appliance.gateway.session_auth import SessionAuth
    from appliance.gateway.snapshot import SnapshotKeeper
    from tests.fixtures.processes import test_database_url

    browser = Client()
    browser.force_login(world.nurse)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"

    async def together(database_url: str) -> tuple[SessionAuth, list[object]]:
        snapshot = await SnapshotKeeper(test_database_url(), "", 60).reload()
        auth = SessionAuth(database_url, settings.SECRET_KEY, cache_seconds=0)
        try:
            found = await asyncio.gather(
                *(auth.authenticate(cookie, "1", snapshot) for _ in range(20)), return_exceptions=True
            )
            if isinstance(found[0], psycopg.Error):
                await asyncio.gather(auth.authenticate(cookie, "1", snapshot), return_exceptions=True)
        finally:
            await auth.close()
        return auth, found

    auth, found = asyncio.run(together(test_database_url()))
    assert auth.connects == 1
    assert {(k.username, k.department.name) for k in found} == {("nina.nurse", "Emergency")}

    nothing_there = f"postgresql://postgres@127.0.0.1:{free_port()}/enclave"
    auth, found = asyncio.run(together(nothing_there))
    assert all(isinstance(error, psycopg.OperationalError) for error in found)
    assert auth.connects == 2  # one for the 20 at once, one for the request after them


def test_one_value_postgresql_refuses_does_not_fail_the_batch_it_shares(world):
    """Events from many requests share one statement: a value PostgreSQL refuses (NUL in text, half a
    surrogate pair in json) would fail every one of them, and their requests would be answered 503.
    The gateway refuses such request bodies itself; the writer makes any such value storable too."""
    import asyncio

    from appliance.gateway.audit_writer import AuditRow, AuditWriter
    from tests.fixtures.processes import test_database_url

    async def write_together() -> None:
        writer = AuditWriter(test_database_url())
        await writer.start()
        try:
            rows = [
                AuditRow("gateway.request", "denied", target_id=text, data={"alias": text})
                for text in ("plain", "half \ud800 pair", "nul \x00 byte")
            ]
            await asyncio.gather(*(writer.write(row) for row in rows))
            assert (writer.failures, writer.last_batch_size) == (0, 3)
        finally:
            await writer.stop()

    asyncio.run(write_together())
    stored = [(e.target_id, e.data["alias"]) for e in gateway_events()]
    assert stored == [("plain", "plain"), ("half ? pair", "half ? pair"), ("nul \ufffd byte", "nul \ufffd byte")]


def test_the_audit_connections_are_open_before_the_first_request(world, gateway):
    """Both audit committers connect when the gateway starts: a request that lands on a committer that
    has not written yet must not wait for PostgreSQL to accept a connection (seen in CI on a loaded
    2-core machine: the connect took over its 3 s limit, and a stream was refused `audit_unavailable`)."""
    import psycopg

    from tests.fixtures.processes import test_database_url

    url = test_database_url()
    database = url.rsplit("/", 1)[1]
    admin = psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True)
    try:
        (since,) = admin.execute("SELECT now()").fetchone()

        def audit_connections() -> int:
            (count,) = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                " AND application_name = 'enclave-gateway-audit' AND backend_start >= %s",
                [database, since],
            ).fetchone()
            return int(count)

        gw = gateway()
        wait_for(lambda: audit_connections() == 2, timeout=30, what="the gateway's two audit connections")
        assert httpx.get(f"{gw.url}/healthz").json()["audit_ok"] is True
    finally:
        admin.close()


def test_metrics_and_health(world, upstream, gateway):
    up = upstream()
    route(world.emergency, "default", add_deployment("er", up.url))
    gw = gateway()
    client(gw, world.nurse_key).chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
    health = httpx.get(f"{gw.url}/healthz").json()
    assert health["status"] == "ok"
    assert health["snapshot_loaded"] is True
    text = httpx.get(f"{gw.url}/metrics").text
    assert (
        'enclave_gateway_requests_total{code="",department="emergency",'
        'endpoint="/v1/chat/completions",status="200"} 1.0'
    ) in text
    assert 'enclave_gateway_tokens_total{department="emergency",kind="completion"} 8.0' in text


def test_console_session_authenticates_like_a_key(world, upstream, gateway):
    from django.test import Client

    from mgmt.accounts.models import Role
    from mgmt.accounts.services import do_create_user

    up = upstream()
    route(world.emergency, "default", add_deployment("er", up.url))
    gw = gateway(ENCLAVE_GATEWAY_SESSION_CACHE_SECONDS="0")
    browser = Client()
    browser.force_login(world.nurse)
    session = {"Cookie": f"sessionid={browser.cookies['sessionid'].value}", "X-Enclave-Console": "1"}
    models = httpx.get(f"{gw.url}/v1/models", headers=session)
    assert [m["id"] for m in models.json()["data"]] == ["default"]
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=session).status_code == 200
    event = last_event()
    assert (event.actor, event.department, event.data["key_prefix"]) == ("nina.nurse", "Emergency", "session")

    without_header = {"Cookie": session["Cookie"]}
    assert _code(httpx.get(f"{gw.url}/v1/models", headers=without_header)) == "console_header_required"
    forged = {"Cookie": "sessionid=not-a-session", "X-Enclave-Console": "1"}
    assert _code(httpx.get(f"{gw.url}/v1/models", headers=forged)) == "session_invalid"

    admin, _ = do_create_user("ada.admin", role=Role.APPLIANCE_ADMIN, department=world.emergency, actor=None)
    admin_browser = Client()
    admin_browser.force_login(admin)  # password passed, second factor not yet
    half = {"Cookie": f"sessionid={admin_browser.cookies['sessionid'].value}", "X-Enclave-Console": "1"}
    assert _code(httpx.get(f"{gw.url}/v1/models", headers=half)) == "mfa_required"

    # A password change ends the session for the gateway as for the console.
    world.nurse.set_password("another long passphrase 77")
    world.nurse.save()
    assert _code(httpx.get(f"{gw.url}/v1/models", headers=session)) == "session_invalid"
    assert gateway_events(outcome="denied")[-1].data["code"] == "session_invalid"
