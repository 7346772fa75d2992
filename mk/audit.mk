# Audit trail benchmark (issue 2).
BENCH_TARGETS += bench-audit

.PHONY: bench-audit
bench-audit: venv services ## Audit ingest vs bare INSERT, verify speed over 1M events, search p95 -> bench-results/audit.json
	$(BIN)/python -m bench.audit
