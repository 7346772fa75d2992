"""Load metrics parsing (the real engine's /metrics is read in test_vllm_engine.py)."""

from pathlib import Path

from appliance.engines import Ds4Engine, EngineLoad, parse_load, probe, scrape_load

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="enclave-fixture"} 2.0
vllm:num_requests_running{engine="1",model_name="enclave-fixture"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="enclave-fixture"} 4.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="enclave-fixture"} 0.25
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="enclave-fixture"} 1234.0
"""

LLAMA_METRICS = """\
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 3
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 1
"""


def test_vllm_gauges_are_summed_over_dp_ranks() -> None:
    assert parse_load(VLLM_METRICS) == EngineLoad(running=3.0, waiting=4.0, kv_cache_usage=0.25)


def test_llama_cpp_gauges() -> None:
    assert parse_load(LLAMA_METRICS) == EngineLoad(running=3.0, waiting=1.0, kv_cache_usage=None)


def test_ds4_has_no_metrics_and_a_dead_port_is_not_healthy() -> None:
    launch = Ds4Engine(name="ds4-0", model=Path("/m.gguf"), port=9).launch()  # port 9 (discard): nothing
    assert scrape_load(launch) is None
    result = probe(launch, timeout=1.0)
    assert not result.ok
    assert result.status_code is None
    assert result.detail.startswith("GET /v1/models failed: ConnectError")
