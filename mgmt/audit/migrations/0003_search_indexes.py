"""Indexes for the auditors' usual filters, and statistics on correlated columns."""

from django.db import migrations, models


def _statistics(apps, schema_editor):
    # department and action are correlated: without these statistics the planner guesses that any combination
    # is common and walks the primary key backwards through a million rows for one that has none.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE STATISTICS IF NOT EXISTS audit_event_dept_action_stats (mcv, dependencies) "
            "ON department, action FROM audit_event"
        )


def _drop_statistics(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP STATISTICS IF EXISTS audit_event_dept_action_stats")


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only_triggers")]

    operations = [
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["department", "action"], name="audit_event_dept_action"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["actor", "action"], name="audit_event_actor_action"),
        ),
        migrations.RunPython(_statistics, _drop_statistics),
    ]
