"""The appliance.bundles manager, configured from Django settings."""

from __future__ import annotations

from django.conf import settings

from appliance.bundles.layout import PRODUCT
from appliance.bundles.manager import PhaseHook, UpdateConfig, UpdateManager
from appliance.bundles.verify import ApplianceIdentity

__all__ = ["update_manager"]


def update_manager(on_phase: PhaseHook | None = None) -> UpdateManager:
    config = UpdateConfig(
        state_dir=settings.STATE_DIR,
        shipped_root=settings.BUNDLE_TRUST_ROOT,
        identity=ApplianceIdentity(PRODUCT, settings.UPDATES_CHANNEL, settings.HARDWARE_CLASS),
    )
    return UpdateManager(config, on_phase=on_phase)
