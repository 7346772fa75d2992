"""Every way a bundle can be refused, one exception class each, with a stable `code`.

The console, the CLI and the audit trail show `code` and the message; tests assert on `code`.
Codes never change once released: add new classes rather than re-using a code for something else.
"""

from __future__ import annotations

__all__ = [
    "AptPackageMissing",
    "AuditUnavailable",
    "BadRootRotation",
    "BadSignature",
    "BadState",
    "BundleBusy",
    "BundleError",
    "ExpiredBundle",
    "ExtraFile",
    "HashMismatch",
    "HealthCheckFailed",
    "MetadataInvalid",
    "MetadataMismatch",
    "MetadataMissing",
    "MetadataTooLarge",
    "MissingFile",
    "NoPreviousRelease",
    "NoSpace",
    "NotABundle",
    "NotNewer",
    "PathNotPortable",
    "ProvisioningFailed",
    "Rollback",
    "SourceUnavailable",
    "TargetTooLong",
    "TargetTruncated",
    "ThresholdNotMet",
    "TooManyRotations",
    "TrustRootMissing",
    "UnknownKey",
    "Unreadable",
    "UnsafeEntry",
    "UnsafePath",
    "VenvBuildFailed",
    "WrongChannel",
    "WrongHardware",
    "WrongProduct",
]


class BundleError(Exception):
    """Base class: a bundle operation was refused or failed. `code` is stable, `hint` says what to do."""

    code = "bundle.error"
    hint = ""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


# --- the stick and its layout -------------------------------------------------------------------
class NotABundle(BundleError):
    code = "bundle.not_a_bundle"
    hint = "point at the ENCLAVE-<version> directory on the stick"


class MetadataMissing(BundleError):
    code = "bundle.metadata_missing"
    hint = "the bundle is incomplete (half-written?); copy it again from the vendor's release"


class MetadataTooLarge(BundleError):
    code = "bundle.metadata_too_large"
    hint = "the metadata is larger than any genuine bundle's; the stick was tampered with"


class MetadataInvalid(BundleError):
    code = "bundle.metadata_invalid"
    hint = "the metadata cannot be parsed; the bundle is damaged or not an Enclave bundle"


class Unreadable(BundleError):
    code = "bundle.unreadable"
    hint = "a file on the stick cannot be read; check the stick and its permissions"


class UnsafePath(BundleError):
    code = "bundle.unsafe_path"
    hint = "the bundle names a file outside its own tree; refuse it and tell the vendor"


class PathNotPortable(BundleError):
    code = "bundle.path_not_portable"
    hint = "exFAT and FAT sticks ignore letter case and drop a name's trailing dots; the vendor must rename it"


class UnsafeEntry(BundleError):
    code = "bundle.unsafe_entry"
    hint = "bundles hold only plain files and directories (no symlinks, devices or pipes)"


class ExtraFile(BundleError):
    code = "bundle.extra_file"
    hint = "the stick holds a file the signed metadata does not list; use an untouched copy of the bundle"


class MissingFile(BundleError):
    code = "bundle.missing_file"
    hint = "a signed file is missing from the stick; the copy is incomplete"


# --- signatures, versions, time -----------------------------------------------------------------
class BadSignature(BundleError):
    code = "bundle.bad_signature"
    hint = "a signature does not match the metadata; the bundle was altered after signing"


class UnknownKey(BundleError):
    code = "bundle.unknown_key"
    hint = "the bundle was signed by a key this appliance does not trust"


class ThresholdNotMet(BundleError):
    code = "bundle.threshold_not_met"
    hint = "not enough of the required keys signed this bundle (two of three are needed)"


class BadRootRotation(BundleError):
    code = "bundle.bad_root_rotation"
    hint = "a new trust root in the bundle is not signed by enough keys of the one before it"


class TooManyRotations(BundleError):
    code = "bundle.too_many_rotations"
    hint = "the bundle carries more root versions than the appliance will walk"


class ExpiredBundle(BundleError):
    code = "bundle.expired"
    hint = "the bundle's metadata has expired; ask the vendor for a current bundle"


class Rollback(BundleError):
    code = "bundle.rollback"
    hint = "the bundle is older than the one already accepted; use the Rollback action instead"


class NotNewer(BundleError):
    code = "bundle.not_newer"
    hint = "this bundle (or one of the same release) was already imported"


class MetadataMismatch(BundleError):
    code = "bundle.metadata_mismatch"
    hint = "the metadata files come from different releases (mix-and-match)"


class SequenceMismatch(BundleError):
    code = "bundle.sequence_mismatch"
    hint = "the bundle's targets version and release sequence differ; ask the vendor for a rebuilt bundle"


class IssuedInFuture(BundleError):
    code = "bundle.issued_in_future"
    hint = (
        "the bundle says it was issued more than a year from now; check the appliance's clock, or ask the "
        "vendor for a correctly dated bundle"
    )


class WrongProduct(BundleError):
    code = "bundle.wrong_product"
    hint = "the bundle is for another product"


class WrongHardware(BundleError):
    code = "bundle.wrong_hardware"
    hint = "the bundle is not built for this appliance's hardware class"


class WrongChannel(BundleError):
    code = "bundle.wrong_channel"
    hint = "the bundle belongs to another release channel"


# --- copying ------------------------------------------------------------------------------------
class TargetTooLong(BundleError):
    code = "bundle.target_too_long"
    hint = "a file holds more data than was signed; the stick was tampered with"


class TargetTruncated(BundleError):
    code = "bundle.target_truncated"
    hint = "a file is shorter than signed; the copy on the stick is incomplete"


class HashMismatch(BundleError):
    code = "bundle.hash_mismatch"
    hint = "a file's content differs from what was signed; the stick is damaged or was tampered with"


class NoSpace(BundleError):
    code = "bundle.no_space"
    hint = "free disk space on the appliance (old releases, logs) and import again"


class SourceUnavailable(BundleError):
    code = "bundle.source_unavailable"
    hint = "the stick went away or failed while copying; plug it in again and re-import (copying resumes)"


class VenvBuildFailed(BundleError):
    code = "bundle.venv_build_failed"
    hint = "the bundle's Python wheels do not install here (built for another Python or platform?); tell the vendor"


# --- the appliance's own state ------------------------------------------------------------------
class BundleBusy(BundleError):
    code = "bundle.busy"
    hint = "another import or activation is running; wait for it to finish"


class BadState(BundleError):
    code = "bundle.bad_state"
    hint = "the requested step does not fit the current update state; see `enclavectl bundle status`"


class HealthCheckFailed(BundleError):
    code = "bundle.health_check_failed"
    hint = "the new release did not pass the health check; the previous release was restored"


class ProvisioningFailed(BundleError):
    code = "bundle.provisioning_failed"
    hint = "applying the bundle's operating-system packages failed; the previous release was restored"


class AptPackageMissing(ProvisioningFailed):
    code = "bundle.apt_package_missing"
    hint = "the bundle names a package its own apt repository (debs/) lacks; nothing was installed"


class NoPreviousRelease(BundleError):
    code = "bundle.no_previous_release"
    hint = "there is no earlier release on this appliance to return to"


class AuditUnavailable(BundleError):
    code = "bundle.audit_unavailable"
    hint = "start the console's database, or pass --no-audit where there is none (vendor machine, bench)"


class TrustRootMissing(BundleError):
    code = "bundle.trust_root_missing"
    hint = "the appliance's shipped trust root (ENCLAVE_BUNDLE_TRUST_ROOT) is missing or unreadable"
