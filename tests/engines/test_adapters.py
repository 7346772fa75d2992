"""Engine adapters render their exact command line, environment, probes and capabilities."""

from pathlib import Path

import pytest

from appliance.engines import (
    DS4_MODEL_ID,
    Ds4Engine,
    EngineError,
    EngineKind,
    EngineNotLoopback,
    InvalidEngineName,
    InvalidEngineOption,
    LlamaCppEngine,
    PriorityCapability,
    VllmCpuEngine,
    VllmCudaEngine,
)

OFFLINE = {
    "DO_NOT_TRACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
}
VLLM_PY = Path("/opt/enclave/engines/vllm/bin/python")


def cuda_engine(**kw: object) -> VllmCudaEngine:
    args: dict = {
        "name": "vllm-0",
        "model": Path("/models/dsv4"),
        "served_model_name": "deepseek-v4-flash",
        "port": 8100,
        "python": VLLM_PY,
        "max_model_len": 262144,
        "cuda_devices": (0, 1, 2, 3),
    }
    args.update(kw)
    return VllmCudaEngine(**args)


def test_vllm_cuda_hopper_dp_ep_argv() -> None:
    assert cuda_engine().argv() == (
        "/opt/enclave/engines/vllm/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "/models/dsv4",
        "--served-model-name",
        "deepseek-v4-flash",
        "--host",
        "127.0.0.1",
        "--port",
        "8100",
        "--max-model-len",
        "262144",
        "--scheduling-policy",
        "priority",
        "--kv-cache-dtype",
        "fp8",
        "--block-size",
        "256",
        "--tokenizer-mode",
        "deepseek_v4",
        "--reasoning-parser",
        "deepseek_v4",
        "--tool-call-parser",
        "deepseek_v4",
        "--enable-auto-tool-choice",
        "--gpu-memory-utilization",
        "0.90",
        "--data-parallel-size",
        "4",
        "--compilation-config",
        '{"cudagraph_mode":"FULL_AND_PIECEWISE","custom_ops":["all"]}',
        "--enable-expert-parallel",
    )
    assert cuda_engine().environment() == {
        **OFFLINE,
        "VLLM_ENGINE_READY_TIMEOUT_S": "3600",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3",
    }


def test_vllm_cuda_blackwell_and_mtp_add_the_recipe_overrides() -> None:
    argv = cuda_engine(gpu_family="blackwell", mtp_speculative_tokens=2).argv()
    tail = argv[argv.index("--enable-expert-parallel") :]
    assert tail == (
        "--enable-expert-parallel",
        "--moe-backend",
        "deep_gemm_mega_moe",
        "--speculative-config",
        '{"method":"mtp","num_speculative_tokens":2}',
    )


def test_vllm_cuda_single_gpu_has_no_dp_flags() -> None:
    argv = cuda_engine(data_parallel_size=1, cuda_devices=(5,), expert_parallel=False).argv()
    assert "--data-parallel-size" not in argv
    assert "--compilation-config" not in argv
    assert "--enable-expert-parallel" not in argv
    assert cuda_engine(data_parallel_size=1, cuda_devices=(5,)).environment()["CUDA_VISIBLE_DEVICES"] == "5"


def test_vllm_cpu_argv_env_and_launch() -> None:
    engine = VllmCpuEngine(
        name="vllm-cpu-0",
        model=Path("/work/build/fixture-model"),
        served_model_name="enclave-fixture",
        port=18000,
        python=Path("/work/.venv-engine/bin/python"),
    )
    assert engine.argv() == (
        "/work/.venv-engine/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "/work/build/fixture-model",
        "--served-model-name",
        "enclave-fixture",
        "--host",
        "127.0.0.1",
        "--port",
        "18000",
        "--max-model-len",
        "2048",
        "--scheduling-policy",
        "priority",
        "--dtype",
        "bfloat16",
        "--enforce-eager",
    )
    assert engine.environment() == {**OFFLINE, "VLLM_CPU_KVCACHE_SPACE": "1"}
    launch = engine.launch()
    assert launch.kind is EngineKind.VLLM_CPU
    assert launch.health_url == "http://127.0.0.1:18000/health"
    assert launch.metrics_url == "http://127.0.0.1:18000/metrics"
    assert launch.priority is PriorityCapability.REQUEST_FIELD
    assert launch.max_context == 2048
    assert not launch.supports_think_max


def test_ds4_probes_v1_models_and_has_no_metrics_or_priority() -> None:
    engine = Ds4Engine(name="ds4-0", model=Path("/models/ds4flash.gguf"), port=8100, ctx=393216, threads=16)
    assert engine.argv() == (
        "/opt/enclave/engines/ds4/bin/ds4-server",
        "--cuda",
        "--model",
        "/models/ds4flash.gguf",
        "--ctx",
        "393216",
        "--host",
        "127.0.0.1",
        "--port",
        "8100",
        "--kv-disk-dir",
        "/var/lib/enclave/ds4-kv",
        "--kv-disk-space-mb",
        "8192",
        "--threads",
        "16",
        "--warm-weights",
    )
    launch = engine.launch()
    assert launch.health_url == "http://127.0.0.1:8100/v1/models"
    assert launch.metrics_url is None
    assert launch.priority is PriorityCapability.NONE
    assert launch.served_model_name == DS4_MODEL_ID
    assert launch.supports_think_max  # ctx 393216 is exactly the minimum for "max"
    assert engine.writable_paths() == (Path("/var/lib/enclave/ds4-kv"),)


def test_llama_cpp_argv_and_per_slot_context() -> None:
    engine = LlamaCppEngine(
        name="llama-0",
        model=Path("/models/v4.gguf"),
        served_model_name="deepseek-v4-flash",
        port=8101,
        ctx_size=262144,
        parallel=8,
        cuda_device=1,
    )
    assert engine.argv() == (
        "/opt/enclave/engines/llama.cpp/bin/llama-server",
        "--model",
        "/models/v4.gguf",
        "--alias",
        "deepseek-v4-flash",
        "--host",
        "127.0.0.1",
        "--port",
        "8101",
        "--ctx-size",
        "262144",
        "--parallel",
        "8",
        "--no-kv-unified",
        "--cont-batching",
        "--jinja",
        "--flash-attn",
        "on",
        "--fit",
        "on",
        "--cache-type-k",
        "q8_0",
        "--cache-type-v",
        "q8_0",
        "--metrics",
        "--no-ui",
    )
    launch = engine.launch()
    assert launch.health_url == "http://127.0.0.1:8101/health"
    assert launch.metrics_url == "http://127.0.0.1:8101/metrics"
    assert launch.max_context == 32768
    assert launch.env["CUDA_VISIBLE_DEVICES"] == "1"


def test_ipv6_loopback_is_bracketed() -> None:
    engine = Ds4Engine(name="ds4-0", model=Path("/m.gguf"), port=8100, host="::1")
    assert engine.base_url == "http://[::1]:8100"


@pytest.mark.parametrize(
    ("make", "error", "code"),
    [
        (lambda: cuda_engine(name="Bad Name"), InvalidEngineName, "engine.invalid_name"),
        (lambda: cuda_engine(name="x" * 49), InvalidEngineName, "engine.invalid_name"),
        (lambda: cuda_engine(host="0.0.0.0"), EngineNotLoopback, "engine.not_loopback"),  # noqa: S104
        (lambda: cuda_engine(host="10.0.0.5"), EngineNotLoopback, "engine.not_loopback"),
        (lambda: cuda_engine(host="localhost.evil"), EngineNotLoopback, "engine.not_loopback"),
        (lambda: cuda_engine(port=0), InvalidEngineOption, "engine.invalid_option"),
        (lambda: cuda_engine(port=70000), InvalidEngineOption, "engine.invalid_option"),
        (lambda: cuda_engine(served_model_name="two words"), InvalidEngineOption, "engine.invalid_option"),
        (lambda: cuda_engine(max_model_len=0), InvalidEngineOption, "engine.invalid_option"),
        (lambda: cuda_engine(data_parallel_size=9), InvalidEngineOption, "engine.invalid_option"),
        (lambda: cuda_engine(cuda_devices=(0, 1)), InvalidEngineOption, "engine.invalid_option"),
        (lambda: cuda_engine(gpu_memory_utilization=1.0), InvalidEngineOption, "engine.invalid_option"),
        (lambda: cuda_engine(gpu_family="ampere"), InvalidEngineOption, "engine.invalid_option"),
        (lambda: cuda_engine(mtp_speculative_tokens=4), InvalidEngineOption, "engine.invalid_option"),
        (
            lambda: Ds4Engine(name="d", model=Path("/m"), port=1, served_model_name="other"),
            InvalidEngineOption,
            "engine.invalid_option",
        ),
        (
            lambda: LlamaCppEngine(name="l", model=Path("/m"), served_model_name="m", port=1, cache_type="q3"),
            InvalidEngineOption,
            "engine.invalid_option",
        ),
    ],
)
def test_bad_engine_settings_are_refused_with_a_stable_code(make, error, code) -> None:
    with pytest.raises(error) as info:
        make()
    assert isinstance(info.value, EngineError)
    assert info.value.code == code
