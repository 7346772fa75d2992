# Directory login (real slapd) and the console flow in Debian's Chromium. Both also run in `make test`
# (they are ordinary pytest tests); these targets run one of them alone.

.PHONY: test-ldap
test-ldap: venv services ## Directory login tests against a real slapd started by the tests
	$(BIN)/pytest -p no:cacheprovider tests/ldap $(PYTEST_ARGS)

.PHONY: test-browser
test-browser: venv services ## Console flow in Chromium via Playwright; screenshots in test-artifacts/screenshots/
	$(BIN)/pytest -p no:cacheprovider -m browser tests/browser $(PYTEST_ARGS)
