"""Let pytest-django flush the database after transactional tests although the audit tables refuse
TRUNCATE (their append-only trigger). The flush runs with triggers off (session_replication_role =
replica, test database only), and the role is reset right after, so every other test sees the triggers.

Use: request `committed_db` instead of `transactional_db` (both fixtures below must be collected: import
them in the conftest).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection


@pytest.fixture(autouse=True)
def _reset_replication_role(django_db_blocker: Any) -> Iterator[None]:
    # Autouse: set up before transactional_db, so torn down after its flush.
    yield
    if connection.connection is not None and connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute("RESET session_replication_role")


@pytest.fixture
def committed_db(transactional_db: None) -> Iterator[None]:
    """transactional_db whose flush can empty the append-only audit tables."""
    yield
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
