# Signed update bundles (appliance/bundles). Tests run under test-python (tests/bundles).
BENCH_TARGETS += bench-bundles

.PHONY: bench-bundles
bench-bundles: venv ## Bundle import vs cp, deep verify vs sha256sum, peak RSS 1 vs 8 GiB (bench-results/bundles.json)
	$(BIN)/python bench/bundles_bench.py

# DEMO_BUNDLE_MODEL: the fixture model directory (default: build/fixture-model from `make engine`, when it
# exists), shipped in the bundle as models/<name>/.
DEMO_BUNDLE_MODEL ?= $(wildcard build/fixture-model)
.PHONY: demo-bundle
demo-bundle: venv ## Build a signed 2026Q4 demo bundle into var/media/ (Updates page of `make demo`)
	$(BIN)/python -m appliance.bundles.demo_bundle $(if $(DEMO_BUNDLE_MODEL),--model $(DEMO_BUNDLE_MODEL))
