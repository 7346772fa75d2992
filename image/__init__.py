"""Offline image build for the Enclave appliance: package/wheel closure, root file system, disk, boot test.

Run as `python -m image.build` (see mk/image.mk). Every failure raises an ImageError subclass with a
stable code; the build never leaves a half-written output in place of a good one.
"""

from image.errors import (
    ClosureMissingPackage,
    ConfigInvalid,
    ImageError,
    LockStale,
    PackageHashMismatch,
    ProvisionFailed,
    ProvisionNotIdempotent,
    SignatureInvalid,
    ToolFailed,
    WheelHashMismatch,
    WheelMissing,
)

__all__ = [
    "ClosureMissingPackage",
    "ConfigInvalid",
    "ImageError",
    "LockStale",
    "PackageHashMismatch",
    "ProvisionFailed",
    "ProvisionNotIdempotent",
    "SignatureInvalid",
    "ToolFailed",
    "WheelHashMismatch",
    "WheelMissing",
]
