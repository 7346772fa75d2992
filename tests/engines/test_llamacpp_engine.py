"""The real llama.cpp `llama-server` (built by `make llama-server`) against the LlamaCppEngine adapter.

First: every flag the adapter renders, for every hardware profile that gets a llama.cpp engine, is one this
binary accepts (its own `--help`, and its own argument parser). Then the session's engine (the GGUF fixture
under the real Supervisor): health, metrics, chat, stream, the template kwargs, a too-long request, kill -9.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from appliance import hardware
from appliance.engines import (
    EngineKind,
    EngineState,
    LlamaCppEngine,
    PriorityCapability,
    aprobe,
    ascrape_load,
    probe,
    scrape_load,
)
from appliance.engines.llama_cpp import KV_CACHE_TYPES
from tests.fixtures.engine import (
    FIXTURE_GGUF,
    LLAMA_CTX_SIZE,
    LLAMA_PARALLEL,
    LLAMA_SERVER,
    REPO,
    RunningEngine,
    llama_fixture_engine,
    require_llama_server,
)
from tests.fixtures.processes import wait_for

pytestmark = pytest.mark.engine
DATA = Path(__file__).parent / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LLAMA_SERVER), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def help_text() -> str:
    require_llama_server()
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def accepted_options(help_text: str) -> dict[str, str]:
    """Option name -> its help line, from `--help`: an entry's line starts with its names ("-fa,   --flash-attn
    [on|off|auto]   set Flash ..."); names and value placeholders (N, TYPE, [on|off]) come before the first word."""
    options: dict[str, str] = {}
    placeholder = re.compile(r"[A-Z0-9_<>{}\[\]|,.=-]+|\[[a-z|]+\]|<[^>]+>|\{[^}]+\}")
    for line in help_text.splitlines():
        if not line.startswith("-"):
            continue
        for token in line.split():
            name = token.rstrip(",")
            if re.fullmatch(r"--?[a-zA-Z0-9][\w-]*", name):
                options[name] = line
            elif not placeholder.fullmatch(token):
                break  # the description begins
    return options


def profile_engines() -> list[LlamaCppEngine]:
    """The llama.cpp engines the planner renders for every captured host that gets one, plus the CPU fixture."""
    engines: list[LlamaCppEngine] = []
    for csv in sorted(DATA.glob("*.csv")):
        host = hardware.detect_host(DATA / "proc-dgx", gpus=hardware.parse_nvidia_smi_csv(csv.read_text()))
        choice = hardware.choose_profile(host)
        if choice.engine is EngineKind.LLAMA_CPP:
            (engine,) = hardware.engines_for(choice, hardware.plan_capacity(host, choice))
            assert isinstance(engine, LlamaCppEngine)
            engines.append(engine)
    assert len(engines) >= 2  # h100x2 and rtxpro6000 today (tests/engines/test_hardware.py)
    engines.append(llama_fixture_engine(8101))
    for cache in sorted(KV_CACHE_TYPES):
        engines.append(LlamaCppEngine(name="kv", model=FIXTURE_GGUF, served_model_name="m", port=1, cache_type=cache))
    return engines


def test_every_rendered_flag_is_in_the_binarys_help(help_text: str) -> None:
    options = accepted_options(help_text)
    assert "--model" in options and "--ctx-size" in options  # the parser reads this binary's help format
    for engine in profile_engines():
        argv = engine.argv()
        flags = [a for a in argv[1:] if a.startswith("-")]
        assert flags, argv
        unknown = [f for f in flags if f not in options]
        assert not unknown, f"{engine.name}: llama-server does not know {unknown}"
        # Options with an enumerated value: the rendered value is one the help lists.
        for flag, value in itertools.pairwise(argv):
            if flag in ("--flash-attn", "--fit"):
                choices = re.search(r"\[([a-z|]+)\]", options[flag])
                assert choices and value in choices.group(1).split("|"), (flag, value, options[flag])
            if flag in ("--cache-type-k", "--cache-type-v"):
                allowed = re.search(r"allowed values: ([\w, ]+)", help_text)
                assert allowed and value in [v.strip() for v in allowed.group(1).split(",")], (flag, value)


def test_the_binarys_parser_accepts_every_rendered_command_line(tmp_path: Path) -> None:
    """The GPU profiles' command lines cannot serve here (no card, no 80 GB model), but llama-server parses its
    whole command line before it loads the model: with a missing model file it must fail on the MODEL."""
    require_llama_server()
    for engine in profile_engines()[: -len(KV_CACHE_TYPES)]:
        argv = list(engine.argv())
        argv[argv.index("--model") + 1] = str(tmp_path / "absent.gguf")
        argv[argv.index("--port") + 1] = str(_free_port())
        result = _run(*argv[1:])
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert "invalid argument" not in output and "error while handling argument" not in output, output[-2000:]
        assert "absent.gguf" in output, output[-2000:]
    # ... and the same check fails for a flag the binary does not have (the check can fail).
    bad = _run("--model", str(tmp_path / "absent.gguf"), "--no-such-flag")
    assert bad.returncode != 0
    assert "--no-such-flag" in bad.stdout + bad.stderr


def test_binary_is_cpu_only_and_baseline_x86_64() -> None:
    require_llama_server()
    version = _run("--version")
    assert version.returncode == 0
    text = version.stdout + version.stderr
    assert "0c1e570" in text  # the llama.cpp commit mk/llama.mk pins (LLAMA_CPP_COMMIT)
    # No AVX/AVX2/FMA/F16C/AVX-512 instruction in the binary: it must run on qemu's TCG CPU models.
    disasm = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(LLAMA_SERVER)], capture_output=True, timeout=600
    )
    assert disasm.returncode == 0
    ymm_or_vex = re.compile(rb"\t(v[a-z0-9]+|vfmadd\w*)\s+.*%[xyz]mm", re.MULTILINE)
    found = ymm_or_vex.search(disasm.stdout)
    assert found is None, found.group(0) if found else b""
    libs = subprocess.run(["ldd", str(LLAMA_SERVER)], capture_output=True, text=True, timeout=30).stdout
    assert not re.search(r"libcuda|libcurl|libssl|libggml|libllama|libgomp", libs), libs


def test_health_models_and_metrics(llama_engine: RunningEngine) -> None:
    launch = llama_engine.launch
    assert launch.kind is EngineKind.LLAMA_CPP
    assert launch.priority is PriorityCapability.NONE
    assert launch.max_context == LLAMA_CTX_SIZE // LLAMA_PARALLEL == 2048
    result = probe(launch)
    assert result.ok, result.detail
    assert result.status_code == 200
    models = httpx.get(f"{llama_engine.base_url}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [llama_engine.model]
    props = httpx.get(f"{llama_engine.base_url}/props", timeout=10).json()
    assert props["total_slots"] == LLAMA_PARALLEL
    assert props["default_generation_settings"]["n_ctx"] == launch.max_context  # per slot: no unified KV

    assert chat(llama_engine).status_code == 200
    metrics = httpx.get(launch.metrics_url or "", timeout=10)
    assert metrics.status_code == 200
    assert "llamacpp:requests_processing" in metrics.text
    load = scrape_load(launch)
    assert load is not None
    assert load.running is not None and load.running >= 0
    assert load.waiting is not None and load.waiting >= 0


def test_async_probe_and_load(llama_engine: RunningEngine) -> None:
    async def go() -> tuple[bool, float | None]:
        async with httpx.AsyncClient(trust_env=False) as client:
            result = await aprobe(llama_engine.launch, client)
            load = await ascrape_load(llama_engine.launch, client)
            return result.ok, None if load is None else load.running

    ok, running = asyncio.run(go())
    assert ok
    assert running is not None


def test_metrics_need_their_flag(tmp_path: Path) -> None:
    """Without --metrics llama-server answers /metrics with an error: the adapter's flag is what turns it on."""
    require_llama_server()
    engine = llama_fixture_engine(_free_port(), name="llama-no-metrics")
    argv = [a for a in engine.argv() if a != "--metrics"]
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: probe(engine.launch()).ok or proc.poll() is not None, timeout=120, what="llama-server /health")
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        response = httpx.get(f"{engine.base_url}/metrics", timeout=10)
        assert response.status_code != 200
        assert "metrics" in response.text.lower()
        assert scrape_load(engine.launch()) is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def chat(engine: RunningEngine, **extra: object) -> httpx.Response:
    body = {
        "model": engine.model,
        "messages": [{"role": "user", "content": "Summarise the discharge letter."}],
        "max_tokens": 8,
        "temperature": 0,
        **extra,
    }
    return httpx.post(f"{engine.base_url}/v1/chat/completions", json=body, timeout=60)


def test_chat_completion(llama_engine: RunningEngine) -> None:
    response = chat(llama_engine, ignore_eos=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 8
    # "<|begin|><|start|>user\nSummarise the discharge letter.<|end|>\n<|start|>assistant\n": the GGUF's template.
    assert body["usage"]["prompt_tokens"] > 6


def test_chat_is_deterministic_at_temperature_zero(llama_engine: RunningEngine) -> None:
    first = chat(llama_engine, ignore_eos=True, max_tokens=12).json()["choices"][0]["message"]["content"]
    second = chat(llama_engine, ignore_eos=True, max_tokens=12).json()["choices"][0]["message"]["content"]
    assert first == second


def test_thinking_kwarg_reaches_the_chat_template(llama_engine: RunningEngine) -> None:
    plain = chat(llama_engine).json()["usage"]["prompt_tokens"]
    thinking = chat(llama_engine, chat_template_kwargs={"thinking": True})
    assert thinking.status_code == 200, thinking.text
    assert thinking.json()["usage"]["prompt_tokens"] > plain  # the template appended "<think>\n"


def test_streaming_chunks(llama_engine: RunningEngine) -> None:
    body = {
        "model": llama_engine.model,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 6,
        "stream": True,
        "ignore_eos": True,
    }
    with httpx.stream("POST", f"{llama_engine.base_url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert len(events) >= 3  # role chunk, content chunks, [DONE]


def test_prompt_longer_than_a_slot_is_a_400(llama_engine: RunningEngine) -> None:
    long = [{"role": "user", "content": "word " * 3000}]  # > 2048 tokens per slot
    response = chat(llama_engine, messages=long)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "exceed_context_size_error"
    assert "context" in error["message"]


def test_kill9_engine_is_restarted_and_serves_again(llama_engine: RunningEngine) -> None:
    sup, name = llama_engine.supervisor, llama_engine.name
    before = sup.status(name)
    assert before.state is EngineState.READY
    assert before.pid is not None
    os.kill(before.pid, signal.SIGKILL)
    with pytest.raises(httpx.HTTPError):
        chat(llama_engine)  # nothing listens until the supervisor has restarted it
    after = sup.wait_ready(name, timeout=120, min_starts=before.starts + 1)
    assert after.pid != before.pid
    assert after.last_exit_code == -signal.SIGKILL
    assert chat(llama_engine).status_code == 200


def test_enclavectl_serves_the_gguf_fixture_until_sigterm(tmp_path: Path) -> None:
    require_llama_server()
    port = _free_port()
    argv = [str(REPO / ".venv" / "bin" / "enclavectl"), "engine", "serve-fixture", "--engine", "llama-cpp"]
    argv += ["--port", str(port), "--log-dir", str(tmp_path), "--llama-server", str(LLAMA_SERVER)]
    proc = subprocess.Popen(
        [*argv, "--model", str(FIXTURE_GGUF)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0].startswith(f"starting llama.cpp llama-server on http://127.0.0.1:{port}"), lines
        assert "--no-kv-unified" in lines[1] and str(FIXTURE_GGUF) in lines[1]
        assert lines[2].startswith("ready:"), lines
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["enclave-fixture"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)  # the supervisor took llama-server with it
