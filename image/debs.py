"""The Debian side of the closure: resolve the package set once from the registry, keep it as a local
apt repository with a lock of SHA-256 sums, and check that repository before anything is built from it.

Layout of a repository directory:
  pool/main/*.deb, dists/<suite>/{Release, main/binary-amd64/Packages}, packages.lock.json
packages.lock.json maps `pool/main/<file>.deb` to its SHA-256; package names come from the Packages index.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from image.errors import ClosureMissingPackage, PackageHashMismatch, ToolFailed
from image.hashes import read_manifest, sha256_file, verify_files, write_manifest

SUITE = "bookworm"
LOCK_NAME = "packages.lock.json"


def read_package_list(path: Path) -> list[str]:
    """Package names from a list file: one a line, `#` comments and blank lines ignored."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def run_tool(argv: list[str], *, what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise ToolFailed(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def download_closure(packages: list[str], dest: Path) -> None:
    """Let mmdebstrap resolve the full closure of `packages` (plus the essential set) against the
    registry configured on this host and leave every .deb it would install in `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    run_tool(
        [
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            "--skip=download/empty",
            "--skip=essential/unlink",
            '--aptopt=Acquire::Languages "none"',
            '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
            f"--customize-hook=sync-out /var/cache/apt/archives {dest}",
            SUITE,
            "/dev/null",
        ],
        what="mmdebstrap (resolving the package closure)",
    )


def make_repository(debs: Path, repo: Path) -> None:
    """Turn a folder of .debs into an apt repository with a Packages index, a Release file and a lock."""
    pool = repo / "pool" / "main"
    binary = repo / "dists" / SUITE / "main" / "binary-amd64"
    pool.mkdir(parents=True, exist_ok=True)
    binary.mkdir(parents=True, exist_ok=True)
    lock: dict[str, str] = {}
    for deb in sorted(debs.glob("*.deb")):
        shutil.copy2(deb, pool / deb.name)
        lock[f"pool/main/{deb.name}"] = sha256_file(pool / deb.name)
    packages = run_tool(["apt-ftparchive", "packages", "pool"], what="apt-ftparchive packages", cwd=repo)
    (binary / "Packages").write_text(packages, encoding="utf-8")
    release = run_tool(
        [
            "apt-ftparchive",
            f"-oAPT::FTPArchive::Release::Suite={SUITE}",
            f"-oAPT::FTPArchive::Release::Codename={SUITE}",
            "-oAPT::FTPArchive::Release::Architectures=amd64",
            "-oAPT::FTPArchive::Release::Components=main",
            "release",
            f"dists/{SUITE}",
        ],
        what="apt-ftparchive release",
        cwd=repo,
    )
    (repo / "dists" / SUITE / "Release").write_text(release, encoding="utf-8")
    write_manifest(repo / LOCK_NAME, lock)


def index_packages(repo: Path) -> dict[str, str]:
    """Package name -> pool file, read from the repository's Packages index."""
    index = repo / "dists" / SUITE / "main" / "binary-amd64" / "Packages"
    names: dict[str, str] = {}
    name = ""
    for line in index.read_text(encoding="utf-8").splitlines():
        if line.startswith("Package: "):
            name = line.split(": ", 1)[1]
        elif line.startswith("Filename: "):
            names[name] = line.split(": ", 1)[1].removeprefix("./")
    return names


def verify_repository(repo: Path, required: list[str]) -> None:
    """Before building from `repo`: every required package is indexed, every indexed file is in the
    lock, and every locked file is present with its SHA-256. Raises naming the first bad package."""
    lock = read_manifest(repo / LOCK_NAME)
    index = index_packages(repo)
    for name in required:
        if name not in index:
            raise ClosureMissingPackage(
                f"package {name!r} is not in the local repository {repo}: add it to image/packages.txt "
                "and rebuild the closure (make image-closure)"
            )
    for name, filename in sorted(index.items()):
        if filename not in lock:
            raise ClosureMissingPackage(f"package {name!r} ({filename}) is indexed but not in {LOCK_NAME}")
    verify_files(repo, lock, missing=ClosureMissingPackage, mismatch=PackageHashMismatch, what="package file")


def build_rootfs(repo: Path, packages: list[str], tarball: Path) -> None:
    """Build the root file system from the local repository alone, with networking off (a fresh
    network namespace has only a down loopback), into `tarball` (replaced atomically)."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp:
        out = Path(tmp) / "rootfs.tar"
        run_tool(
            [
                "unshare",
                "--net",
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                '--aptopt=Acquire::Languages "none"',
                "--format=tar",
                SUITE,
                str(out),
                f"deb [trusted=yes] copy://{repo.resolve()} {SUITE} main",
            ],
            what="mmdebstrap (root file system from the local repository, network off)",
        )
        out.replace(tarball)
