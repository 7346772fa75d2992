# Signed update bundles (appliance/bundles). Tests run under test-python (tests/bundles).
BENCH_TARGETS += bench-bundles

.PHONY: bench-bundles
bench-bundles: venv ## Bundle import vs cp, deep verify vs sha256sum, peak RSS 1 vs 8 GiB (bench-results/bundles.json)
	$(BIN)/python bench/bundles_bench.py
