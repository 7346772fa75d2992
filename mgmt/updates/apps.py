from django.apps import AppConfig


class UpdatesConfig(AppConfig):
    name = "mgmt.updates"
    label = "updates"
    default_auto_field = "django.db.models.BigAutoField"
