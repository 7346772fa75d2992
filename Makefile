# Enclave — one Makefile; each area adds its own targets in mk/*.mk.
# `make help` lists what is here. Everything installs what it needs itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# Tests and benchmarks use the local PostgreSQL and Redis (scripts/services.sh starts them). The demo uses
# DATABASE_URL / REDIS_URL when set, else embedded defaults (SQLite, a private redis-server).
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/enclave
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL)

# Areas append to these in mk/*.mk, included right here so that the rules below see the full lists
# (make expands prerequisites when it reads a rule).
TEST_STAGES := test-python
TEST_PREREQS :=
# What `make test` prepares before its first stage, besides TEST_PREREQS (an area's build that no single
# stage target should pull in on its own, such as the image's closure and root file system).
TEST_SETUP :=
DEMO_PREREQS :=
BENCH_TARGETS :=
LINT_STAGES := lint-python
-include mk/*.mk

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN{FS=":.*## "}{printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}'

$(VENV)/.stamp: pyproject.toml scripts/system-deps.sh requirements-apt.txt
	bash scripts/system-deps.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.PHONY: venv
venv: $(VENV)/.stamp ## Create .venv with the console, the tools and the system packages they need

.PHONY: services
services: ## Make sure PostgreSQL and Redis run on loopback (starts them if down)
	bash scripts/services.sh

.PHONY: demo
demo: venv $(DEMO_PREREQS) ## Run the appliance: console + gateway + engine, prints URL and one-time admin password
	$(BIN)/python -m appliance.demo

# `make test` first installs the venv alone (it may run apt, which takes one lock), then prepares everything
# the stages need side by side: llama-server compiles on the CPU while the engine venv and the image's closure
# download (on a clean 2-core clone that saves several minutes of CI). One job per chain (llama-server, the
# engine venv and its fixtures, the image's base, the GGUF fixture), so that none waits for a slot: with
# three, llama-server's chain started only when the image's base was done. The stages then run one after
# another.
TEST_SETUP_JOBS ?= 4

.PHONY: test
test: ## Run every test CI runs (real PostgreSQL, Redis, Celery, Chromium, slapd, qemu, ...)
	$(MAKE) venv
	$(MAKE) -j$(TEST_SETUP_JOBS) --output-sync=target test-setup
	$(MAKE) -j1 $(TEST_STAGES)

.PHONY: test-setup
test-setup: venv services $(TEST_PREREQS) $(TEST_SETUP) ## What `make test` builds before its first stage (side by side)

.PHONY: test-python
test-python: venv services $(TEST_PREREQS)
	$(TEST_ENV) $(BIN)/pytest -p no:cacheprovider --timeout=900 --durations=25 $(PYTEST_ARGS)

.PHONY: lint
lint: $(LINT_STAGES) ## ruff, mypy on appliance/, check --deploy, makemigrations --check, ansible-lint

.PHONY: lint-python
lint-python: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy appliance/
	DJANGO_SETTINGS_MODULE=mgmt.settings ENCLAVE_PRODUCTION=1 ENCLAVE_SECRET_KEY=lint-only-$$(openssl rand -hex 32) \
	  ENCLAVE_ALLOWED_HOSTS=enclave.local $(BIN)/python manage.py check --deploy --fail-level WARNING
	$(BIN)/python manage.py makemigrations --check --dry-run

.PHONY: bench
bench: venv services $(BENCH_TARGETS) ## Measure speed against named references; writes bench-results/*.json

.PHONY: clean
clean: ## Remove the venv, build outputs and demo state
	rm -rf $(VENV) bench-results build var

