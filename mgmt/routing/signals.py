"""Accounts changes (keys, users, departments) also change what the gateway must know: publish them."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from .invalidation import publish_on_commit

# Saves that touch only these fields (a login's last_login) change nothing the gateway holds.
_IRRELEVANT_USER_FIELDS = frozenset({"last_login", "password", "first_name", "last_name", "email"})


def _changed(sender: Any, **kwargs: Any) -> None:
    fields = kwargs.get("update_fields")
    if fields and frozenset(fields) <= _IRRELEVANT_USER_FIELDS:
        return
    publish_on_commit(f"{sender._meta.label_lower}.changed")


def connect() -> None:
    from mgmt.accounts.models import ApiKey, Department, User

    for model in (ApiKey, Department, User):
        post_save.connect(_changed, sender=model, dispatch_uid=f"routing-invalidate-save-{model.__name__}")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"routing-invalidate-del-{model.__name__}")
