"""Shared test set-up. Tests run against the real PostgreSQL and Redis (make test sets DATABASE_URL and
REDIS_URL and starts them); fixtures in tests/fixtures start the other real processes they need."""

pytest_plugins = [
    "tests.fixtures.personas",
    "tests.fixtures.processes",
    "tests.fixtures.slapd",
    "tests.fixtures.browser",
    "tests.fixtures.engine",
]


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _require_postgresql(django_db_setup, django_db_blocker):
    """The suite proves behaviour on the appliance's database: refuse to run it on anything else."""
    from django.db import connection

    assert connection.vendor == "postgresql", (
        "the tests need PostgreSQL: run `make test`, or set DATABASE_URL=postgresql://postgres@127.0.0.1:5432/enclave"
    )
