"""What the root-side applier (enclave-apply-bundle, run as root) checks before apt sees a bundle's debs/.

The update manager runs as the unprivileged `enclave` user, which writes releases/ itself. Root therefore
trusts nothing it finds there: it verifies the release's signed metadata (releases/<r>/metadata/, kept at
import) from the root shipped in the image, with the same verifier as an import, and copies every signed
debs/ file into a private folder of its own, checking length and SHA-256 while copying. apt then reads
only that copy, so a file swapped after the check cannot reach it. Files under debs/ that are not signed
are not copied. A release older (by sequence) than the last one root applied is refused: replaying an
old, genuinely signed bundle cannot downgrade packages.

See docs/decisions/0504-bundle-provisioning-on-activation.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from appliance.bundles.errors import Rollback
from appliance.bundles.fsio import atomic_write, read_bounded
from appliance.bundles.layout import MAX_LENGTHS, ReleaseInfo
from appliance.bundles.staging import copy_verified
from appliance.bundles.trust import TrustState
from appliance.bundles.verify import ApplianceIdentity, BundleVerifier, TargetEntry

__all__ = ["APPLIED_FILE", "private_copy", "record_applied"]

APPLIED_FILE = "applied.json"
PREFIX = "debs/"


def _last_applied(work_root: Path) -> tuple[str, int] | None:
    path = work_root / APPLIED_FILE
    if not path.is_file():
        return None
    data = json.loads(read_bounded(path, 4096))
    return (str(data["release"]), data["sequence"]) if isinstance(data.get("sequence"), int) else None


def private_copy(
    release_dir: Path, work_root: Path, shipped_root: Path, identity: ApplianceIdentity
) -> tuple[ReleaseInfo, Path, list[TargetEntry]]:
    """Verify `release_dir`'s metadata from `shipped_root` and copy its signed debs/ files, checked, into
    work_root/<release>/ (made afresh). Returns the release, that folder and the files copied. Raises a
    BundleError (the verifier's codes, or bundle.rollback) and leaves no copy behind."""
    verifier = BundleVerifier(TrustState(root=read_bounded(shipped_root, MAX_LENGTHS["root"])), identity)
    release, entries = verifier.verify_signed(release_dir / "metadata")
    last = _last_applied(work_root)
    if last is not None and release.sequence < last[1]:
        raise Rollback(
            f"release {release.release} (#{release.sequence}) is older than {last[0]} (#{last[1]}), "
            "whose packages this appliance already applied"
        )
    dest = work_root / release.release
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, mode=0o700)
    wanted = [e for e in entries if e.path.startswith(PREFIX)]
    try:
        for entry in wanted:
            copy_verified(release_dir / "files" / entry.path, entry, dest / entry.path)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return release, dest, wanted


def record_applied(work_root: Path, release: ReleaseInfo) -> None:
    """Remember the newest release whose packages were applied (root's own anti-downgrade record)."""
    last = _last_applied(work_root)
    if last is not None and last[1] > release.sequence:
        return
    record = {"release": release.release, "sequence": release.sequence}
    atomic_write(work_root / APPLIED_FILE, json.dumps(record).encode(), mode=0o600)
