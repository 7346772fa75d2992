"""Where bundles come from: mounted removable media (pyudev, on the appliance) and, for development
and tests, configured watch directories. A bundle is a directory named ENCLAVE-* with metadata/."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from appliance.bundles.errors import BundleError
from appliance.bundles.verify import VerifiedBundle

from .config import update_manager

__all__ = ["FoundBundle", "discover", "find_bundle", "removable_mount_points"]


@dataclass
class FoundBundle:
    path: Path
    verified: VerifiedBundle | None
    error: BundleError | None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def components(self) -> list[tuple[str, int, int]]:
        """(top-level directory or file, files, bytes): what the bundle carries, for the admin to read."""
        totals: dict[str, list[int]] = {}
        for target in self.verified.targets if self.verified else ():
            entry = totals.setdefault(target.path.split("/", 1)[0], [0, 0])
            entry[0] += 1
            entry[1] += target.length
        return [(name, files, size) for name, (files, size) in sorted(totals.items())]


def _unescape_mount_field(field: str) -> str:
    """/proc/self/mounts writes space, tab, newline and backslash in a path as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def removable_mount_points() -> list[Path]:
    """Mount points of USB block devices (partitions, or a whole stick formatted without a partition
    table), from udev's view of the devices and the kernel's mount table."""
    import pyudev

    context = pyudev.Context()
    nodes = {
        dev.device_node
        for dev in context.list_devices(subsystem="block")
        if dev.properties.get("ID_BUS") == "usb"
        and dev.device_node
        and dev.properties.get("DEVTYPE") in ("disk", "partition")
    }
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, target = line.split()[:2]
        if _unescape_mount_field(source) in nodes:
            mounts.append(Path(_unescape_mount_field(target)))
    return mounts


def _roots() -> list[Path]:
    roots = [Path(p) for p in settings.UPDATES_WATCH_DIRS]
    if settings.UPDATES_USE_UDEV:
        roots += removable_mount_points()
    return roots


def discover(verify: bool = True) -> list[FoundBundle]:
    """Bundles on the media, each verified (metadata only: nothing is copied) unless verify=False."""
    manager = update_manager()
    found = []
    for root in _roots():
        if not root.is_dir():
            continue
        for candidate in sorted(root.iterdir()):
            if not candidate.name.startswith("ENCLAVE-") or not candidate.is_dir() or candidate.is_symlink():
                continue
            verified, error = None, None
            if verify:
                try:
                    verified = manager.verify(candidate)
                except BundleError as exc:
                    error = exc
            found.append(FoundBundle(candidate, verified, error))
    return found


def find_bundle(name: str) -> Path | None:
    """The discovered bundle called `name`: the console never takes a path from the browser."""
    for bundle in discover(verify=False):
        if bundle.name == name:
            return bundle.path
    return None
