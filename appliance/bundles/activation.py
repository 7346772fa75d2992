"""Releases on disk and the pointers that select the live one.

releases/<release>/files/<target path>   hard links to the verified objects (no second copy)
releases/<release>/venv                  the application venv, built offline from files/wheels
releases/<release>/metadata/             the signed metadata (and root chain) it was verified with
current/{models,venv,policies}           symlinks, each flipped atomically (os.replace)

A component the bundle does not carry keeps pointing where it pointed before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from appliance.bundles.errors import VenvBuildFailed
from appliance.bundles.fsio import atomic_write, fsync_dir, replace_symlink
from appliance.bundles.layout import shown
from appliance.bundles.staging import ObjectStore
from appliance.bundles.verify import TargetEntry

__all__ = [
    "COMPONENTS",
    "VenvBuilder",
    "assemble_release",
    "build_venv_from_wheelhouse",
    "flip_pointers",
    "read_pointers",
    "release_pointers",
]

COMPONENTS = ("models", "venv", "policies")
VenvBuilder = Callable[[Path, Mapping[str, str], Path], None]


def build_venv_from_wheelhouse(wheels_dir: Path, hashes: Mapping[str, str], venv_dir: Path) -> None:
    """A fresh venv with exactly the bundle's wheels: offline, binary only, every wheel hash-pinned
    (the hashes are the ones the signed metadata gave, already checked while staging)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True, capture_output=True)
    lines = [f"{wheels_dir / name} --hash=sha256:{sha}" for name, sha in sorted(hashes.items())]
    requirements = venv_dir / "bundle-requirements.txt"
    atomic_write(requirements, ("\n".join(lines) + "\n").encode())
    subprocess.run(
        [
            str(venv_dir / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--require-hashes",
            "-r",
            str(requirements),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )


def assemble_release(
    releases: Path,
    name: str,
    store: ObjectStore,
    entries: Iterable[TargetEntry],
    venv_builder: VenvBuilder,
    metadata: Mapping[str, bytes] | None = None,
) -> Path:
    """Build releases/<name> from staged objects (hard links), then its venv; rename into place last.
    `metadata`: file name -> bytes of the signed metadata the release keeps in metadata/."""
    final = releases / name
    building = releases / f".{name}.building"
    shutil.rmtree(building, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)
    for file_name, data in (metadata or {}).items():
        atomic_write(building / "metadata" / file_name, data, mode=0o444)
    files = building / "files"
    wheels: dict[str, str] = {}
    for entry in entries:
        dest = files / entry.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(store.object_path(entry.sha256), dest)
        if entry.path.startswith("wheels/") and entry.path.endswith(".whl") and entry.path.count("/") == 1:
            wheels[entry.path.split("/", 1)[1]] = entry.sha256
    if wheels:
        try:
            venv_builder(files / "wheels", wheels, building / "venv")
        except (OSError, subprocess.CalledProcessError) as exc:
            shutil.rmtree(building, ignore_errors=True)
            raise VenvBuildFailed(f"the wheels of release {name} do not install: {_last_words(exc)}") from exc
    releases.mkdir(parents=True, exist_ok=True)
    os.rename(building, final)
    fsync_dir(releases)
    return final


def _last_words(exc: OSError | subprocess.CalledProcessError) -> str:
    """What pip (or venv) said last, as one line a person and the console's database can take."""
    output = (exc.stderr or exc.stdout) if isinstance(exc, subprocess.CalledProcessError) else None
    text = output.decode(errors="replace") if isinstance(output, bytes) else str(output or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return shown(lines[-1][-400:]) if lines else str(exc)


def release_pointers(release_dir: Path, pointers_dir: Path, previous: Mapping[str, str]) -> dict[str, str]:
    """The pointer values for a release: its own components, the previous ones for what it lacks."""
    result = dict(previous)
    candidates = {
        "models": release_dir / "files" / "models",
        "policies": release_dir / "files" / "policies",
        "venv": release_dir / "venv",
    }
    for name, path in candidates.items():
        if path.is_dir():
            result[name] = os.path.relpath(path, pointers_dir)
    return result


def read_pointers(pointers_dir: Path) -> dict[str, str]:
    result = {}
    for name in COMPONENTS:
        link = pointers_dir / name
        if link.is_symlink():
            result[name] = os.readlink(link)
    return result


def flip_pointers(
    pointers_dir: Path, wanted: Mapping[str, str], after_each: Callable[[str], None] | None = None
) -> None:
    """Make every pointer match `wanted` (a missing name means no pointer), one atomic flip each."""
    pointers_dir.mkdir(parents=True, exist_ok=True)
    for name in COMPONENTS:
        link = pointers_dir / name
        target = wanted.get(name)
        if target is None:
            if link.is_symlink():
                link.unlink()
                fsync_dir(pointers_dir)
        elif not link.is_symlink() or os.readlink(link) != target:
            replace_symlink(link, target)
        if after_each:
            after_each(name)
