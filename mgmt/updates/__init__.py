"""Bundle import jobs, removable-media discovery, activation and rollback, for the console.

The work itself is appliance.bundles (pure, no Django); this app runs it as claimed job rows in
Celery, audits every step and feeds the console's Updates page.
"""

__all__: list[str] = []
