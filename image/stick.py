"""Signed update bundles on a virtual USB stick, for the image's boot test, made with the project's own
vendor tools (appliance.bundles.vendor: keys, root, build, threshold sign).

The image build ships the root of `vendor_keys(keys)` as /etc/enclave/trust/bundle-root.json, so a
bundle signed with those keys verifies on the booted image; a release build points ENCLAVE_IMAGE_KEYS at
the vendor's folder instead. The test bundle is tiny: one small .deb in its own apt repository
(debs/, with debs/packages.txt naming it), a policies/ file and the model set with signed manifests:
enclave-fixture and enclave-fixture-gguf, the GGUF the image's llama-server serves once it is activated.
The good stick is a raw disk with an MBR and one ext4 partition made with `mkfs.ext4 -d`; the junk stick is
formatted whole, FAT32 with no partition table (as some sticks come from the shop), filled with mtools's
`mcopy`. Neither needs a mount.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from appliance.bundles import vendor
from appliance.bundles.layout import PRODUCT, ReleaseInfo
from image import debs, fixture, sign
from image.errors import ToolFailed

KEY_NAMES = ("root-1", "root-2", "root-3", "targets-1", "targets-2", "targets-3", "release")
HARDWARE_CLASS = "cpu-only"
PROBE_PACKAGE = "enclave-stick-probe"
SECTOR = 512


def vendor_keys(keys: Path) -> Path:
    """The bundle vendor's keys and root chain under keys/bundle-vendor (created once, then reused)."""
    base = keys / "bundle-vendor"
    private, roots = base / "keys", base / "roots"
    if not (roots / "1.root.json").exists():
        for name in KEY_NAMES:
            vendor.generate_key(private, name)
        pub = {name: vendor.load_public_key(private / f"{name}.pub.json") for name in KEY_NAMES}
        root = vendor.make_root(
            root_keys=[pub[f"root-{i}"] for i in (1, 2, 3)],
            targets_keys=[pub[f"targets-{i}"] for i in (1, 2, 3)],
            release_key=pub["release"],
            root_signers=[vendor.load_signer(private / "root-1.key"), vendor.load_signer(private / "root-2.key")],
        )
        vendor.write_metadata(roots / "1.root.json", root)
    return base


def trust_root(keys: Path) -> bytes:
    """The first root the image trusts (the newest in the chain is reached through the bundles)."""
    return (vendor_keys(keys) / "roots" / "1.root.json").read_bytes()


def make_deb(out_dir: Path, name: str, version: str) -> Path:
    """A tiny architecture-independent package that installs one file naming itself."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / name
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "DEBIAN" / "control").write_text(
            f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Enclave <vendor@enclave.invalid>\n"
            "Section: misc\nPriority: optional\n"
            "Description: Enclave update-bundle probe\n"
            " proves that a package arrived on a USB stick and was installed.\n",
            encoding="utf-8",
        )
        share = tree / "usr" / "share" / "enclave"
        share.mkdir(parents=True)
        (share / f"{name}.txt").write_text(f"{name} {version} from an update bundle\n", encoding="utf-8")
        out_dir.mkdir(parents=True, exist_ok=True)
        deb = out_dir / f"{name}_{version}_all.deb"
        proc = subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(deb)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ToolFailed(f"dpkg-deb --build failed: {proc.stderr.strip()}")
    return deb


def release_tree(
    tree: Path, *, release: str, packages: list[str], debs_dir: Path, model_key: Path, gguf: Path | None = None
) -> Path:
    """A release's files: debs/ (apt repository + packages.txt), policies/, models/<name>/<version>/:
    enclave-fixture, and with `gguf` enclave-fixture-gguf, the model the image's llama-server serves once
    the release is activated (decision 0505)."""
    debs.make_repository(debs_dir, tree / "debs")
    (tree / "debs" / "packages.txt").write_text("".join(f"{name}\n" for name in packages), encoding="utf-8")
    policies = tree / "policies"
    policies.mkdir(parents=True)
    (policies / "release.yaml").write_text(f"# shipped by update bundle {release}\nrelease: {release}\n")
    data = f"fixture weights of {release}\n".encode() * 64
    key = sign.load_or_create_key(model_key)
    model_dir = tree / "models" / fixture.MODEL / release
    fixture.write_signed_model(model_dir, fixture.MODEL, {"weights.bin": data}, key, release)
    if gguf is not None:
        fixture.write_gguf_model(tree / "models", key, gguf, version=release)
    return tree


def make_bundle(tree: Path, out_dir: Path, *, keys: Path, release: str, sequence: int) -> Path:
    """ENCLAVE-<release>/ built and signed (2 of 3 targets keys, the release key) like the vendor does."""
    base = vendor_keys(keys)
    info = ReleaseInfo(
        PRODUCT, release, sequence, "stable", (HARDWARE_CLASS,), datetime.now(UTC).replace(microsecond=0)
    )
    bundle = vendor.build_bundle(tree, out_dir, release=info, roots_dir=base / "roots")
    vendor.sign_bundle(
        bundle,
        targets_signers=[vendor.load_signer(base / "keys" / f"targets-{i}.key") for i in (1, 2)],
        release_signer=vendor.load_signer(base / "keys" / "release.key"),
    )
    return bundle


def _size_mib(content: Path, minimum: int) -> int:
    """A file system's size for `content`: twice its bytes plus 8 MiB of room, at least `minimum` MiB."""
    used = sum(p.stat().st_size for p in content.rglob("*") if p.is_file())
    return max(minimum, int(used / (1 << 20) * 2) + 8)


def make_stick(content: Path, image: Path, label: str = "ENCLAVEUSB") -> Path:
    """A raw USB disk: MBR, one ext4 partition holding the files of `content`."""
    part_mib = _size_mib(content, 16)
    with tempfile.TemporaryDirectory(dir=image.parent) as tmp:
        part = Path(tmp) / "part.img"
        debs.run_tool(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                label,
                "-E",
                "root_owner=0:0",
                "-d",
                str(content),
                str(part),
                f"{part_mib}M",
            ],
            what="mkfs.ext4 -d (USB stick)",
        )
        start, length = 2048, part_mib * 2048
        disk = Path(tmp) / "stick.raw"
        with disk.open("wb") as handle:
            handle.truncate((start + length) * SECTOR)
        proc = subprocess.run(
            ["sfdisk", "-q", str(disk)],
            input=f"label: dos\nstart={start}, size={length}, type=83\n",
            text=True,
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ToolFailed(f"sfdisk failed: {proc.stderr.strip()}")
        with disk.open("r+b") as out, part.open("rb") as src:
            out.seek(start * SECTOR)
            shutil.copyfileobj(src, out, 4 << 20)
        disk.replace(image)
    return image


def make_fat_stick(content: Path, image: Path, label: str = "PHOTOS") -> Path:
    """A raw USB disk formatted whole (no partition table) with FAT32, holding the files of `content`."""
    size_mib = _size_mib(content, 64)  # FAT32 needs at least 65,525 clusters
    partial = image.with_suffix(".partial")
    with partial.open("wb") as handle:
        handle.truncate(size_mib << 20)
    debs.run_tool(["mkfs.vfat", "-F", "32", "-n", label, str(partial)], what="mkfs.vfat (USB stick)")
    for entry in sorted(content.iterdir()):
        debs.run_tool(["mcopy", "-s", "-Q", "-i", str(partial), str(entry), "::/"], what="mcopy (USB stick)")
    partial.replace(image)
    return image


def _readable(tree: Path) -> None:
    for path in tree.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    tree.chmod(0o755)


def boot_test_sticks(work: Path, keys: Path) -> dict[str, Path]:
    """The boot test's sticks: `good` holds ENCLAVE-<broken> (names a package its repository lacks) and
    ENCLAVE-<good> (the probe .deb); `junk` holds an ENCLAVE-* folder that is not a bundle."""
    work.mkdir(parents=True, exist_ok=True)
    model_key = keys / "models-ed25519.pem"
    pool = work / "pool"
    make_deb(pool, PROBE_PACKAGE, "1.0-1")
    media = work / "media-good"
    shutil.rmtree(media, ignore_errors=True)
    media.mkdir()
    trees = work / "trees"
    shutil.rmtree(trees, ignore_errors=True)
    broken = release_tree(
        trees / "broken",
        release="2026Q4-broken",
        packages=[PROBE_PACKAGE, "enclave-not-in-this-bundle"],
        debs_dir=pool,
        model_key=model_key,
        gguf=fixture.GGUF_FILE,
    )
    good = release_tree(
        trees / "good",
        release="2026Q4",
        packages=[PROBE_PACKAGE],
        debs_dir=pool,
        model_key=model_key,
        gguf=fixture.GGUF_FILE,
    )
    make_bundle(broken, media, keys=keys, release="2026Q4-broken", sequence=2)
    make_bundle(good, media, keys=keys, release="2026Q4", sequence=3)
    _readable(media)
    junk = work / "media-junk"
    shutil.rmtree(junk, ignore_errors=True)
    (junk / "ENCLAVE-holiday-photos").mkdir(parents=True)
    (junk / "ENCLAVE-holiday-photos" / "IMG_0001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a bundle")
    _readable(junk)
    return {
        "good": make_stick(media, work / "stick-good.raw"),
        "junk": make_fat_stick(junk, work / "stick-junk.raw", label="PHOTOS"),
    }
