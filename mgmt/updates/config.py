"""The appliance.bundles manager, configured from Django settings."""

from __future__ import annotations

import shlex

from django.conf import settings

from appliance.bundles.layout import PRODUCT
from appliance.bundles.manager import PhaseHook, UpdateConfig, UpdateManager
from appliance.bundles.provision import Provisioner, command_provisioner, skip_provisioning
from appliance.bundles.verify import ApplianceIdentity

__all__ = ["provisioner", "update_manager"]


def update_manager(on_phase: PhaseHook | None = None) -> UpdateManager:
    config = UpdateConfig(
        state_dir=settings.STATE_DIR,
        shipped_root=settings.BUNDLE_TRUST_ROOT,
        identity=ApplianceIdentity(PRODUCT, settings.UPDATES_CHANNEL, settings.HARDWARE_CLASS),
    )
    return UpdateManager(config, on_phase=on_phase, provisioner=provisioner())


def provisioner() -> Provisioner:
    """The activation's provisioning step from settings (UPDATES_APPLY_COMMAND); skipped when unset."""
    command = shlex.split(settings.UPDATES_APPLY_COMMAND)
    if not command:
        return skip_provisioning(
            "skipped: ENCLAVE_UPDATES_APPLY_COMMAND is not set on this host, so the bundle's debs/ were not applied"
        )
    return command_provisioner(command, timeout=float(settings.UPDATES_APPLY_TIMEOUT_SECONDS))
