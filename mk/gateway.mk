# Gateway: the OpenAI-compatible ASGI gateway (appliance/gateway) and its benchmark.
# See docs/decisions/0350-gateway-asgi-server.md and the other 035x records.
GATEWAY_WORKERS ?= 2
GATEWAY_BIND ?= 127.0.0.1:8080
LITELLM_VERSION := 1.106.0
LITELLM_VENV := build/litellm-venv

BENCH_TARGETS += bench-gateway

.PHONY: gateway
gateway: venv services ## Run the gateway in the foreground (gunicorn's native ASGI worker)
	ENCLAVE_GATEWAY_WORKERS=$(GATEWAY_WORKERS) $(BIN)/gunicorn --worker-class asgi \
	  --workers $(GATEWAY_WORKERS) --worker-connections 4096 --bind $(GATEWAY_BIND) appliance.gateway.asgi:app

# LiteLLM's proxy, the benchmark's reference, in a scratch venv of its own (never the console's).
$(LITELLM_VENV)/.stamp: mk/gateway.mk
	test -x $(LITELLM_VENV)/bin/python || $(PY) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install -q "litellm[proxy]==$(LITELLM_VERSION)"
	touch $@

.PHONY: litellm-venv
litellm-venv: $(LITELLM_VENV)/.stamp ## Install LiteLLM's proxy (pinned) into build/litellm-venv for the benchmark

.PHONY: bench-gateway
bench-gateway: venv services litellm-venv ## Gateway vs direct vs LiteLLM at 1/10/100 clients -> bench-results/gateway.json
	$(BIN)/python bench/gateway_bench.py --litellm $(LITELLM_VENV)/bin/litellm --out bench-results/gateway.json
