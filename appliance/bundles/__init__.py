"""Signed update bundles: vendor build/sign, verification (python-tuf), staging, activation, rollback.

Pure core: no Django imports. The console (mgmt.updates) and `enclavectl bundle` drive it.
"""

from appliance.bundles.errors import BundleError
from appliance.bundles.layout import PRODUCT, ReleaseInfo
from appliance.bundles.manager import UpdateConfig, UpdateManager
from appliance.bundles.verify import ApplianceIdentity, BundleVerifier, TargetEntry, VerifiedBundle

__all__ = [
    "PRODUCT",
    "ApplianceIdentity",
    "BundleError",
    "BundleVerifier",
    "ReleaseInfo",
    "TargetEntry",
    "UpdateConfig",
    "UpdateManager",
    "VerifiedBundle",
]
