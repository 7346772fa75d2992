"""Activation with the real vLLM CPU engine: the engine follows the models pointer (as in `make demo`), the
health gate's smoke inference runs against the new model, a failed gate brings the old model back, and a
rollback of the first update brings back the factory model.

This test has its own engine (not the session one): it is restarted on every pointer move.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from appliance.engines import RestartPolicy, Supervisor, VllmCpuEngine
from appliance.engines.follow import PointerFollower
from appliance.engines.llama_cpp import cpu_fixture_engine
from mgmt.audit.models import AuditEvent
from mgmt.updates.services import do_request_activate, do_request_import, do_request_rollback, run_job
from tests.fixtures.engine import (
    ENGINE_PYTHON,
    FIXTURE_GGUF,
    FIXTURE_MODEL,
    LLAMA_SERVER,
    REPO,
    SERVED_MODEL,
    require_llama_server,
)
from tests.fixtures.processes import wait_for
from tests.updates.conftest import put_on_stick

MODEL_2026Q4 = REPO / "build" / "fixture-model-2026q4"
NAME = "test-follow-pointer"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _served_root(base: str) -> Path | None:
    try:
        return Path(httpx.get(f"{base}/v1/models", timeout=5).json()["data"][0]["root"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError):
        return None


def _chat(base: str) -> int:
    body = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).status_code


def _model_files(directory: Path, name: str) -> dict[str, bytes]:
    return {f"models/{name}/{p.name}": p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.django_db
def test_engine_serves_the_activated_model_and_a_failed_gate_restores_the_old_one(
    personas, media, vendor_kit, settings
) -> None:
    if not (MODEL_2026Q4 / "manifest.json").is_file():
        pytest.fail(f"{MODEL_2026Q4} is missing: `make build/fixture-model-2026q4/manifest.json` (make test does)")
    port = _free_port()

    def make_engine(model: Path) -> VllmCpuEngine:
        return VllmCpuEngine(name=NAME, model=model, served_model_name=SERVED_MODEL, port=port, python=ENGINE_PYTHON)

    base = make_engine(FIXTURE_MODEL).base_url
    releases = settings.STATE_DIR / "bundles" / "releases"
    supervisor = Supervisor(REPO / "test-artifacts" / "engines", RestartPolicy(initial_delay_s=0.5, max_delay_s=5.0))
    follower = PointerFollower(
        supervisor, make_engine, settings.STATE_DIR / "bundles" / "current" / "models", FIXTURE_MODEL, poll_s=0.5
    )
    settings.UPDATES_SMOKE_ENDPOINTS = [base]
    try:
        assert follower.start() == FIXTURE_MODEL.resolve()
        supervisor.wait_ready(NAME, timeout=600)
        assert _served_root(base) == FIXTURE_MODEL.resolve()

        # 2026Q4 upgrades the model: activation restarts the engine on it, the gate smoke-tests it, commit.
        upgrade = {**_model_files(MODEL_2026Q4, "fixture-model-2026q4"), "policies/retention.yaml": b"x: 1\n"}
        put_on_stick(vendor_kit, media, upgrade, "2026Q4", 1)
        assert run_job(do_request_import("ENCLAVE-2026Q4", actor=personas.admin).pk) == "done"
        settings.UPDATES_HEALTH_TIMEOUT_SECONDS = 900
        assert run_job(do_request_activate(actor=personas.admin).pk) == "done"
        new_model = releases / "2026Q4" / "files" / "models" / "fixture-model-2026q4"
        assert _served_root(base) == new_model  # what the gate's smoke inference ran against
        assert (new_model / "model.safetensors").read_bytes() == (MODEL_2026Q4 / "model.safetensors").read_bytes()
        assert _chat(base) == 200
        assert follower.restarts == 1

        # 2027Q1 carries a model the engine cannot load: the gate fails, the pointers flip back, and the
        # engine is restarted on 2026Q4's model, which serves again.
        broken = _model_files(MODEL_2026Q4, "fixture-model-2027q1")
        broken["models/fixture-model-2027q1/config.json"] = b'{"model_type": "no-such-architecture"}\n'
        put_on_stick(vendor_kit, media, broken, "2027Q1", 2)
        assert run_job(do_request_import("ENCLAVE-2027Q1", actor=personas.admin).pk) == "done"
        trust_before = (settings.STATE_DIR / "bundles" / "trust.json").read_bytes()
        settings.UPDATES_HEALTH_TIMEOUT_SECONDS = 30  # the broken model never answers: any bound will do
        assert run_job(do_request_activate(actor=personas.admin).pk) == "bundle.health_check_failed"
        event = AuditEvent.objects.filter(action="bundle.activate").order_by("id").last()
        assert (event.outcome, event.data["code"]) == ("error", "bundle.health_check_failed")
        assert (settings.STATE_DIR / "bundles" / "trust.json").read_bytes() == trust_before
        assert (settings.STATE_DIR / "bundles" / "current" / "models").resolve() == new_model.parent
        wait_for(lambda: _served_root(base) == new_model, timeout=900, what="2026Q4's model serving again", interval=1)
        supervisor.wait_ready(NAME, timeout=900)
        assert _chat(base) == 200

        # Rollback from 2026Q4, the first update: back to the factory image (no pointer), so the engine is
        # restarted on the model the appliance shipped with.
        assert run_job(do_request_rollback(actor=personas.admin).pk) == "done"
        assert not (settings.STATE_DIR / "bundles" / "current" / "models").exists()
        wait_for(
            lambda: _served_root(base) == FIXTURE_MODEL.resolve(), timeout=900, what="the factory model", interval=1
        )
        supervisor.wait_ready(NAME, timeout=900)
        assert _chat(base) == 200
        event = AuditEvent.objects.filter(action="bundle.rollback").order_by("id").last()
        assert (event.outcome, event.data["release"], event.data["from"]) == ("ok", "factory image", "2026Q4")

    finally:
        follower.stop()
        supervisor.stop_all()


@pytest.mark.engine
@pytest.mark.django_db
def test_gate_refuses_an_engine_still_serving_the_old_model(personas, media, vendor_kit, settings, vllm_engine) -> None:
    """Nobody restarts the (shared) engine after the flip: it answers, but from a model outside the
    activated release, so the smoke inference would prove nothing. The gate fails and rolls back."""
    settings.UPDATES_SMOKE_ENDPOINTS = [vllm_engine.base_url]
    settings.UPDATES_HEALTH_TIMEOUT_SECONDS = 5
    put_on_stick(vendor_kit, media, _model_files(MODEL_2026Q4, "fixture-model-2026q4"), "2026Q4", 1)
    assert run_job(do_request_import("ENCLAVE-2026Q4", actor=personas.admin).pk) == "done"
    job = do_request_activate(actor=personas.admin)
    assert run_job(job.pk) == "bundle.health_check_failed"
    job.refresh_from_db()
    assert "not the activated model" in job.error_message
    event = AuditEvent.objects.filter(action="bundle.activate").order_by("id").last()
    assert (event.outcome, event.data["code"]) == ("error", "bundle.health_check_failed")
    assert not (settings.STATE_DIR / "bundles" / "current" / "models").exists()  # back to "no release"
    assert not (settings.STATE_DIR / "bundles" / "trust.json").exists()
    assert _chat(vllm_engine.base_url) == 200


@pytest.mark.engine
@pytest.mark.django_db
def test_gate_reads_llama_servers_model_path(personas, media, vendor_kit, settings) -> None:
    """llama-server names no model directory in /v1/models; the gate reads its /props `model_path`. An
    engine started on the GGUF inside the imported release passes the gate; the same engine, still on
    that GGUF after the next release's flip, is refused and the flip undone."""
    require_llama_server()
    gguf = FIXTURE_GGUF.read_bytes()
    put_on_stick(vendor_kit, media, {"models/fixture-gguf/model.gguf": gguf}, "2026Q4", 1)
    assert run_job(do_request_import("ENCLAVE-2026Q4", actor=personas.admin).pk) == "done"
    staged = settings.STATE_DIR / "bundles" / "releases" / "2026Q4" / "files" / "models" / "fixture-gguf" / "model.gguf"
    engine = cpu_fixture_engine(
        binary=LLAMA_SERVER, model=staged, port=_free_port(), name="test-gate-llama", served_model_name=SERVED_MODEL
    )
    supervisor = Supervisor(REPO / "test-artifacts" / "engines", RestartPolicy(initial_delay_s=0.5, max_delay_s=5.0))
    settings.UPDATES_SMOKE_ENDPOINTS = [engine.base_url]
    settings.UPDATES_HEALTH_TIMEOUT_SECONDS = 60
    try:
        supervisor.start(engine)  # as systemd restarts the engine unit on the new release's model
        supervisor.wait_ready(engine.name, timeout=120)
        assert run_job(do_request_activate(actor=personas.admin).pk) == "done"
        event = AuditEvent.objects.filter(action="bundle.activate").order_by("id").last()
        assert event.outcome == "ok"

        put_on_stick(vendor_kit, media, {"models/fixture-gguf-2027q1/model.gguf": gguf}, "2027Q1", 2)
        assert run_job(do_request_import("ENCLAVE-2027Q1", actor=personas.admin).pk) == "done"
        settings.UPDATES_HEALTH_TIMEOUT_SECONDS = 5  # nobody restarts the engine: any bound will do
        job = do_request_activate(actor=personas.admin)
        assert run_job(job.pk) == "bundle.health_check_failed"
        job.refresh_from_db()
        assert f"serves {staged}, not the activated model" in job.error_message
        current = settings.STATE_DIR / "bundles" / "current" / "models"
        assert current.resolve() == staged.parent.parent.resolve()  # back on 2026Q4
    finally:
        supervisor.stop_all()
