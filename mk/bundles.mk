# Signed update bundles (appliance/bundles). Tests run under test-python (tests/bundles).
BENCH_TARGETS += bench-bundles

.PHONY: bench-bundles
bench-bundles: venv ## Bundle import vs cp, deep verify vs sha256sum, peak RSS 1 vs 8 GiB (bench-results/bundles.json)
	$(BIN)/python bench/bundles_bench.py

# The demo bundle ships an "upgraded" fixture model: same shape, weights from another seed (2026Q4), so its
# files differ from the model the demo starts with. DEMO_BUNDLE_MODEL overrides the directory.
DEMO_BUNDLE_MODEL ?= build/fixture-model-2026q4
build/fixture-model-2026q4/manifest.json: .venv-engine/.stamp appliance/engines/fixture_model.py
	.venv-engine/bin/python appliance/engines/fixture_model.py --out build/fixture-model-2026q4 --seed 20264

.PHONY: demo-bundle
demo-bundle: venv engine build/fixture-model-2026q4/manifest.json ## Signed 2026Q4 demo bundle (upgraded fixture model) into var/media/
	$(BIN)/python -m appliance.bundles.demo_bundle --model $(DEMO_BUNDLE_MODEL)
TEST_PREREQS += build/fixture-model-2026q4/manifest.json  # tests/updates/test_engine_follows_activation.py
