"""One exception class per way the image build can fail, each with a stable code."""

from __future__ import annotations


class ImageError(Exception):
    """Base class: `code` is stable (tests and scripts match on it), the message is for people."""

    code = "IMAGE_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(f"{self.code}: {message}")


class ClosureMissingPackage(ImageError):
    """A package the image needs is not in the local repository (or its lock)."""

    code = "IMAGE_CLOSURE_MISSING_PACKAGE"


class PackageHashMismatch(ImageError):
    """A .deb in the local repository does not have the SHA-256 its lock records."""

    code = "IMAGE_PACKAGE_HASH_MISMATCH"


class WheelMissing(ImageError):
    """The wheelhouse lacks a wheel the lock names."""

    code = "IMAGE_WHEEL_MISSING"


class WheelHashMismatch(ImageError):
    """A wheel does not have the SHA-256 the lock records."""

    code = "IMAGE_WHEEL_HASH_MISMATCH"


class LockStale(ImageError):
    """The Python lock no longer satisfies the project's dependencies: run `make image-lock`."""

    code = "IMAGE_LOCK_STALE"


class ProvisionFailed(ImageError):
    """The provisioning playbook failed inside the image root."""

    code = "IMAGE_PROVISION_FAILED"


class ConfigInvalid(ImageError):
    """A service configuration written by the playbook does not pass its own checker (nginx -t, ...)."""

    code = "IMAGE_CONFIG_INVALID"


class ProvisionNotIdempotent(ImageError):
    """A second run of the playbook changed something."""

    code = "IMAGE_PROVISION_NOT_IDEMPOTENT"


class SignatureInvalid(ImageError):
    """The disk image does not match its SHA-256 file or its Ed25519 signature."""

    code = "IMAGE_SIGNATURE_INVALID"


class ToolFailed(ImageError):
    """An external build tool (mmdebstrap, mkfs, syslinux, ...) failed."""

    code = "IMAGE_TOOL_FAILED"


class EngineMissing(ImageError):
    """The engine the image ships (llama-server) or the model it serves was not built."""

    code = "IMAGE_ENGINE_MISSING"
