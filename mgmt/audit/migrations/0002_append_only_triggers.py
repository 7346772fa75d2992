"""UPDATE and DELETE on the audit tables are refused by the database itself (PostgreSQL and SQLite)."""

from django.db import migrations


def install(apps, schema_editor):
    from mgmt.audit.triggers import install as install_triggers

    install_triggers(schema_editor)


def uninstall(apps, schema_editor):
    from mgmt.audit.triggers import uninstall as uninstall_triggers

    uninstall_triggers(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(install, uninstall)]
