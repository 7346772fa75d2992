"""Pack a root file system tree into a bootable, partitioned raw disk image.

Layout (MBR): partition 1, FAT32 "ENCLAVEBOOT" (128 MiB, active) holding SYSLINUX, the kernel, the
initrd and syslinux.cfg; partition 2, ext4 "enclave-root" made from the tree with `mkfs.ext4 -d`.
SYSLINUX's MBR code goes into the first 440 bytes. No loop device or mount is needed: mtools and
`syslinux --install` work on the FAT image file (see docs/decisions/0500-bootloader.md).
"""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from pathlib import Path

from image.debs import run_tool
from image.errors import ToolFailed

SECTOR = 512
BOOT_MIB = 128
MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")
KERNEL_ARGS = "ro console=tty0 console=ttyS0,115200 net.ifnames=1"


def _kernel(root: Path) -> tuple[Path, Path]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ToolFailed(f"no kernel in {root}/boot: linux-image-amd64 must be in image/packages.txt")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{version}"
    if not initrd.is_file():
        raise ToolFailed(f"no initrd for kernel {version} in {root}/boot")
    return kernels[-1], initrd


def _du_mib(root: Path) -> int:
    out = subprocess.run(["du", "-sm", "--apparent-size", str(root)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def pack(root: Path, image: Path) -> str:
    """Write `image` (replaced atomically) from the tree at `root`; return the root file system UUID.

    The tree's /etc/fstab must mount `UUID=@ROOT_UUID@` at /: the placeholder is filled in here."""
    root_uuid = str(uuid.uuid4())
    fstab = root / "etc" / "fstab"
    fstab.write_text(fstab.read_text(encoding="utf-8").replace("@ROOT_UUID@", root_uuid), encoding="utf-8")
    kernel, initrd = _kernel(root)
    image.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=image.parent) as tmp:
        work = Path(tmp)
        boot_img, root_img, disk = work / "boot.img", work / "root.img", work / "disk.raw"
        cfg = work / "syslinux.cfg"
        cfg.write_text(
            "DEFAULT enclave\nPROMPT 0\nTIMEOUT 0\nLABEL enclave\n  LINUX /vmlinuz\n  INITRD /initrd.img\n"
            f"  APPEND root=UUID={root_uuid} {KERNEL_ARGS}\n",
            encoding="utf-8",
        )
        run_tool(
            ["mkfs.vfat", "-C", "-F", "32", "-n", "ENCLAVEBOOT", str(boot_img), str(BOOT_MIB * 1024)],
            what="mkfs.vfat",
        )
        for src, name in ((kernel, "vmlinuz"), (initrd, "initrd.img"), (cfg, "syslinux.cfg")):
            run_tool(["mcopy", "-i", str(boot_img), str(src), f"::{name}"], what=f"mcopy {name}")
        run_tool(["syslinux", "--install", str(boot_img)], what="syslinux --install")
        root_mib = _du_mib(root) * 13 // 10 + 256
        run_tool(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-U",
                root_uuid,
                "-L",
                "enclave-root",
                "-d",
                str(root),
                str(root_img),
                f"{root_mib}M",
            ],
            what="mkfs.ext4 -d (root file system)",
        )
        boot_start, boot_len = 2048, BOOT_MIB * 2048
        root_start, root_len = boot_start + boot_len, root_mib * 2048
        with disk.open("wb") as handle:
            handle.truncate((root_start + root_len + 2048) * SECTOR)
        table = (
            f"label: dos\nstart={boot_start}, size={boot_len}, type=c, bootable\n"
            f"start={root_start}, size={root_len}, type=83\n"
        )
        proc = subprocess.run(["sfdisk", "-q", str(disk)], input=table, text=True, capture_output=True, check=False)
        if proc.returncode != 0:
            raise ToolFailed(f"sfdisk failed: {proc.stderr.strip()}")
        with disk.open("r+b") as out:
            out.write(MBR_BIN.read_bytes()[:440])
        for part, start in ((boot_img, boot_start), (root_img, root_start)):
            run_tool(
                [
                    "dd",
                    f"if={part}",
                    f"of={disk}",
                    "bs=4M",
                    f"seek={start * SECTOR}",
                    "oflag=seek_bytes",
                    "conv=notrunc,sparse,fsync",
                    "iflag=fullblock",
                    "status=none",
                ],
                what=f"dd {part.name} into the disk image",
            )
        disk.replace(image)
    return root_uuid
