"""Engine bench: vLLM CPU and llama.cpp start-up and chat latency, direct against the engine (no gateway).

References measured side by side in the same run:
- vLLM start-up vs `import vllm.entrypoints.openai.api_server` in the same venv (the floor of any start);
- llama-server start-up vs `llama-server --version` (spawning the binary, loading no model);
- chat completion and time to first token vs GET /v1/models on the same server (the HTTP floor).
Both engines serve the same tiny fixture (the HF checkpoint and its GGUF twin). Writes
bench-results/engine.json and prints a short table. CPU-bound on a shared 2-core machine: noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from appliance.engines import EngineAdapter, Supervisor, VllmCpuEngine
from appliance.engines.llama_cpp import cpu_fixture_engine

NAME = "bench-vllm-cpu"
LLAMA_NAME = "bench-llama-cpp"
MODEL = "enclave-fixture"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"p50_ms": statistics.median(ms), "p95_ms": _pct(ms, 0.95), "p99_ms": _pct(ms, 0.99), "n": len(ms)}


def _import_time(python: Path) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    subprocess.run(
        [str(python), "-c", "import vllm.entrypoints.openai.api_server"],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def _chat(client: httpx.Client, url: str, max_tokens: int) -> float:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Summarise the letter."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    t0 = time.perf_counter()
    response = client.post(f"{url}/v1/chat/completions", json=body)
    response.raise_for_status()
    return time.perf_counter() - t0


def _ttft(client: httpx.Client, url: str) -> float:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 16,
        "stream": True,
        "ignore_eos": True,
    }
    t0 = time.perf_counter()
    # A fresh connection after the stream: llama-server closes its side after every streamed response although
    # it announced keep-alive, and a reused one then fails (tests/gateway/test_llamacpp.py). Same for both engines.
    headers = {"Connection": "close"}
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as response:
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: ") and '"content":"' in line:
                first = time.perf_counter() - t0
                break
        else:
            raise RuntimeError("no content chunk in the stream")
        for _ in lines:  # drain the rest of the stream
            pass
    return first


def _version_time(binary: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(binary), "--version"], check=True, capture_output=True)
    return time.perf_counter() - t0


def _serve_and_measure(sup: Supervisor, engine: EngineAdapter, requests: int) -> dict[str, object]:
    """Start `engine` (timed: spawn -> /health 200), then interleave the latency series against it."""
    url = engine.base_url
    t0 = time.perf_counter()
    sup.start(engine)
    sup.wait_ready(engine.name, timeout=900)
    startup_s = time.perf_counter() - t0
    with httpx.Client(timeout=120, trust_env=False) as client:
        for _ in range(3):  # warm-up
            _chat(client, url, 16)
            client.get(f"{url}/v1/models")
        models = []
        chat16 = []
        chat1 = []
        ttft = []
        for _ in range(requests):  # interleaved so that noise hits every series alike
            t = time.perf_counter()
            client.get(f"{url}/v1/models").raise_for_status()
            models.append(time.perf_counter() - t)
            chat1.append(_chat(client, url, 1))
            chat16.append(_chat(client, url, 16))
            ttft.append(_ttft(client, url))
    sup.stop(engine.name)
    return {
        "startup_s": startup_s,
        "models_get": _summary(models),
        "chat_1_token": _summary(chat1),
        "chat_16_tokens": _summary(chat16),
        "ttft_stream": _summary(ttft),
        "chat_16_p50_ratio_vs_models_get": statistics.median(chat16) / statistics.median(models),
        "ttft_p50_ratio_vs_models_get": statistics.median(ttft) / statistics.median(models),
    }


def _table(result: dict[str, object]) -> None:
    print(f"  {'series':<30} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}")
    for label, key in (
        ("GET /v1/models (reference)", "models_get"),
        ("chat, 1 token", "chat_1_token"),
        ("chat, 16 tokens", "chat_16_tokens"),
        ("stream, first token", "ttft_stream"),
    ):
        s = result[key]
        assert isinstance(s, dict)
        print(f"  {label:<30} {s['p50_ms']:9.1f} {s['p95_ms']:9.1f} {s['p99_ms']:9.1f}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", type=Path, default=Path(".venv-engine/bin/python"))
    parser.add_argument("--model", type=Path, default=Path("build/fixture-model"))
    parser.add_argument("--llama-server", type=Path, default=Path("build/llama.cpp/bin/llama-server"))
    parser.add_argument("--gguf", type=Path, default=Path("build/fixture-gguf/enclave-fixture.gguf"))
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("bench-results/engine.json"))
    args = parser.parse_args()

    import_s = _import_time(args.python)
    version_s = _version_time(args.llama_server)
    vllm = VllmCpuEngine(
        name=NAME,
        model=args.model.resolve(),
        served_model_name=MODEL,
        port=_port(),
        python=args.python.absolute(),
    )
    # The tests' shape: 2 slots of 2048 tokens (the vLLM engine's max-model-len), CPU only.
    llama = cpu_fixture_engine(
        binary=args.llama_server.resolve(), model=args.gguf.resolve(), port=_port(), name=LLAMA_NAME
    )
    with Supervisor(Path("var/bench-engines")) as sup:
        v = _serve_and_measure(sup, vllm, args.requests)
        ll = _serve_and_measure(sup, llama, args.requests)
    assert isinstance(v["startup_s"], float) and isinstance(ll["startup_s"], float)
    result = {
        "machine": {"cpus": os.cpu_count(), "note": "shared 2-core machine; CPU-bound figures are noisy"},
        "engine": "vllm-cpu 0.32.0, tiny fixture model (2 layers, hidden 128), max-model-len 2048",
        **v,
        "reference_import_s": import_s,
        "startup_ratio_vs_import": v["startup_s"] / import_s,
        "llama_cpp": {
            "engine": "llama-server (llama.cpp 0c1e570, CPU, baseline x86-64), GGUF fixture f32, 2 slots x 2048",
            **ll,
            "reference_version_s": version_s,
            "startup_ratio_vs_version": ll["startup_s"] / version_s,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nvLLM CPU engine, direct (no gateway) -> {args.out}")
    print(
        f"  start-up (spawn -> /health 200)   {v['startup_s']:8.1f} s   (ref: import only {import_s:.1f} s, "
        f"x{v['startup_s'] / import_s:.1f})"
    )
    _table(result)
    print("\nllama.cpp llama-server, direct (no gateway), same fixture as GGUF")
    print(
        f"  start-up (spawn -> /health 200)   {ll['startup_s']:8.2f} s   (ref: --version only {version_s:.2f} s, "
        f"x{ll['startup_s'] / version_s:.1f})"
    )
    _table(ll)
    return 0


if __name__ == "__main__":
    sys.exit(main())
