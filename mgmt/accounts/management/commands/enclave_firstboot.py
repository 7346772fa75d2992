"""First boot: create the audit key and the first appliance admin with a one-time password.

Idempotent: a second run changes nothing unless --reset-admin is given (then the first admin gets a new
one-time password, audited). The password is printed once, on the machine's console.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from appliance.auditchain import key_id, load_or_create_private_key
from mgmt.accounts.models import Role, User
from mgmt.accounts.services import do_create_user, do_reset_password
from mgmt.audit.services import record_event


class Command(BaseCommand):
    help = "Create the audit key and the first appliance admin (prints a one-time password)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--reset-admin", action="store_true", help="issue a new one-time password")

    def handle(self, *args: Any, **options: Any) -> None:
        key = load_or_create_private_key(settings.AUDIT_KEY_PATH)
        username = options["username"]
        with transaction.atomic():
            admin = User.objects.filter(username=username).first()
            if admin is None:
                admin, password = do_create_user(username, role=Role.APPLIANCE_ADMIN, department=None, actor=None)
                record_event("appliance.firstboot", data={"admin": username, "audit_key_id": key_id(key.public_key())})
            elif options["reset_admin"]:
                password = do_reset_password(admin, actor=None)
            else:
                self.stdout.write(f"first boot already done: admin {username!r} exists (use --reset-admin)")
                return
        self.stdout.write(f"admin user:          {username}")
        self.stdout.write(f"one-time password:   {password}")
        self.stdout.write(f"audit key id:        {key_id(key.public_key())}")
