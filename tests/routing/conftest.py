from tests.db_flush import _reset_replication_role, committed_db  # noqa: F401
