"""SQL that makes the audit tables append-only, for PostgreSQL and SQLite.

The only DELETE allowed is the retention purge, which says so for its own transaction:
PostgreSQL: `SET LOCAL enclave.audit_retention = 'purge'`; SQLite: a row in audit_retention_permit.
"""

from __future__ import annotations

from typing import Any

APPEND_ONLY_TABLES = ("audit_event", "audit_seal", "audit_checkpoint")
PURGEABLE_TABLES = ("audit_event", "audit_seal")

POSTGRES_FUNCTION = """
CREATE OR REPLACE FUNCTION enclave_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND TG_TABLE_NAME IN ('audit_event', 'audit_seal')
     AND current_setting('enclave.audit_retention', true) = 'purge' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit.append_only: % on % refused; the audit trail is append-only', TG_OP, TG_TABLE_NAME
    USING ERRCODE = '42501';
END
$$;
"""


def install(schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_FUNCTION, params=None)
        for table in APPEND_ONLY_TABLES:
            schema_editor.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION enclave_audit_append_only()"
            )
            schema_editor.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION enclave_audit_append_only()"
            )
    elif vendor == "sqlite":
        schema_editor.execute("CREATE TABLE audit_retention_permit (id INTEGER PRIMARY KEY)")
        for table in APPEND_ONLY_TABLES:
            schema_editor.execute(
                f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} BEGIN "
                "SELECT RAISE(ABORT, 'audit.append_only: UPDATE refused; the audit trail is append-only'); END"
            )
            permit = " WHEN NOT EXISTS (SELECT 1 FROM audit_retention_permit)" if table in PURGEABLE_TABLES else ""
            schema_editor.execute(
                f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}{permit} BEGIN "
                "SELECT RAISE(ABORT, 'audit.append_only: DELETE refused; the audit trail is append-only'); END"
            )
    else:  # pragma: no cover - only the two databases above are supported
        raise RuntimeError(f"the audit trail needs PostgreSQL or SQLite, not {vendor}")


def uninstall(schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for table in APPEND_ONLY_TABLES:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        schema_editor.execute("DROP FUNCTION IF EXISTS enclave_audit_append_only()")
    elif vendor == "sqlite":
        for table in APPEND_ONLY_TABLES:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        schema_editor.execute("DROP TABLE IF EXISTS audit_retention_permit")
