"""The Celery application: workers run `celery -A mgmt worker`, the sealer runs under `celery -A mgmt beat`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mgmt.settings")

app = Celery("enclave")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
