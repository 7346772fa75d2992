"""A real vendor (keys on disk, python-tuf metadata) and a real appliance state directory per test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import Key, Signer
from tuf.api.metadata import Metadata

from appliance.bundles import vendor
from appliance.bundles.layout import ReleaseInfo
from appliance.bundles.manager import UpdateConfig, UpdateManager
from appliance.bundles.verify import ApplianceIdentity

IDENTITY = ApplianceIdentity(product="enclave", channel="stable", hardware_class="cpu-dev")


@dataclass
class VendorKit:
    """The vendor's offline keys and root chain, as files, like `enclavectl bundle keygen/root` make them."""

    keys_dir: Path
    roots_dir: Path
    public: dict[str, Key] = field(default_factory=dict)

    def signer(self, name: str) -> Signer:
        return vendor.load_signer(self.keys_dir / f"{name}.key")

    def release(self, name: str, sequence: int, **overrides: object) -> ReleaseInfo:
        values: dict[str, object] = {
            "product": "enclave",
            "release": name,
            "sequence": sequence,
            "channel": "stable",
            "hardware": ("cpu-dev", "h200x8"),
            "issued": datetime.now(UTC).replace(microsecond=0),
        }
        values.update(overrides)
        return ReleaseInfo(**values)  # type: ignore[arg-type]

    def rotate_targets_keys(self) -> None:
        """Root v2: the same root keys, new targets keys (targets-4/5/6), signed by two old and two new
        root keys; written next to 1.root.json, so every bundle built after this carries it."""
        for name in ("targets-4", "targets-5", "targets-6"):
            self.public[name] = vendor.generate_key(self.keys_dir, name)
        rotated = vendor.rotate_root(
            Metadata.from_file(str(self.roots_dir / "1.root.json")),  # type: ignore[arg-type]
            root_keys=[self.public[f"root-{i}"] for i in (1, 2, 3)],
            targets_keys=[self.public[f"targets-{i}"] for i in (4, 5, 6)],
            release_key=self.public["release"],
            old_signers=[self.signer("root-2"), self.signer("root-3")],
            new_signers=[self.signer("root-2"), self.signer("root-3")],
        )
        vendor.write_metadata(self.roots_dir / "2.root.json", rotated)

    def build(
        self,
        out: Path,
        files: dict[str, bytes],
        name: str = "2026Q4",
        sequence: int = 2,
        *,
        signers: tuple[str, ...] = ("targets-1", "targets-2"),
        expires_days: int = 365,
        **release: object,
    ) -> Path:
        source = out / f"src-{name}-{sequence}"
        for rel, data in files.items():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            (source / rel).write_bytes(data)
        source.mkdir(parents=True, exist_ok=True)
        bundle = vendor.build_bundle(
            source,
            out / f"stick-{name}-{sequence}",
            release=self.release(name, sequence, **release),
            roots_dir=self.roots_dir,
            expires_days=expires_days,
        )
        vendor.sign_bundle(
            bundle,
            targets_signers=[self.signer(s) for s in signers],
            release_signer=self.signer("release"),
            expires_days=expires_days,
        )
        return bundle


def _make_kit(base: Path) -> VendorKit:
    kit = VendorKit(keys_dir=base / "keys", roots_dir=base / "roots")
    names = ["root-1", "root-2", "root-3", "targets-1", "targets-2", "targets-3", "release", "rogue"]
    for name in names:
        kit.public[name] = vendor.generate_key(kit.keys_dir, name)
    root = vendor.make_root(
        root_keys=[kit.public[f"root-{i}"] for i in (1, 2, 3)],
        targets_keys=[kit.public[f"targets-{i}"] for i in (1, 2, 3)],
        release_key=kit.public["release"],
        root_signers=[kit.signer("root-1"), kit.signer("root-2")],
    )
    kit.roots_dir.mkdir(parents=True)
    vendor.write_metadata(kit.roots_dir / "1.root.json", root)
    return kit


@pytest.fixture
def kit(tmp_path: Path) -> VendorKit:
    return _make_kit(tmp_path / "vendor")


PAYLOAD = {
    "models/tiny/config.json": b'{"model_type": "llama"}\n',
    "models/tiny/model.safetensors": bytes(range(256)) * 512,
    "policies/retention.yaml": b"content_retention: off\n",
    "provisioning.tar": b"\0" * 4096,
}


@dataclass
class Appliance:
    state_dir: Path
    shipped_root: Path
    clock_offset: timedelta = timedelta()

    def manager(self, **kwargs: object) -> UpdateManager:
        return UpdateManager(
            UpdateConfig(self.state_dir, self.shipped_root, IDENTITY),
            clock=lambda: datetime.now(UTC) + self.clock_offset,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
def appliance(tmp_path: Path, kit: VendorKit) -> Appliance:
    shipped = tmp_path / "image" / "1.root.json"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes((kit.roots_dir / "1.root.json").read_bytes())
    return Appliance(tmp_path / "state", shipped)


def healthy(pointers: Path) -> None:
    """The health gate the tests use when health is not the subject: the model pointer must resolve."""
    if not (pointers / "models" / "tiny" / "config.json").is_file():
        raise RuntimeError("models pointer does not resolve")


def snapshot_tree(path: Path) -> dict[str, tuple[str, int, int]]:
    """Names, link targets and sizes of everything under `path`: equal before/after means nothing changed."""
    result: dict[str, tuple[str, int, int]] = {}
    if not path.exists():
        return result
    for item in sorted(path.rglob("*")):
        st = item.lstat()
        link = str(item.readlink()) if item.is_symlink() else ""
        result[str(item.relative_to(path))] = (link, st.st_size if not item.is_dir() else 0, st.st_mode)
    return result


Installer = Callable[..., Path]
