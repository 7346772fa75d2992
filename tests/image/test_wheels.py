"""The wheelhouse: its manifest, the hashed requirements, and real pip refusing a tampered wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from image import wheels
from image.errors import LockStale, WheelHashMismatch, WheelMissing
from image.hashes import sha256_file, write_manifest


def _wheel(tmp_path: Path, name: str = "enclavetestpkg", version: str = "1.0") -> Path:
    src = tmp_path / f"src-{name}"
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text("VALUE = 42\n")
    (src / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n'
    )
    out = tmp_path / "house"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob(f"{name}-*.whl"))


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def house(built_wheel: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "house"
    folder.mkdir()
    wheel = folder / built_wheel.name
    wheel.write_bytes(built_wheel.read_bytes())
    write_manifest(folder / wheels.LOCK_NAME, {wheel.name: sha256_file(wheel)})
    return folder


def test_a_good_wheelhouse_passes_and_pip_installs_it_with_hashes(house: Path, tmp_path: Path) -> None:
    wheels.verify_wheelhouse(house)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(wheels.requirements_with_hashes(house))
    assert reqs.read_text().startswith("enclavetestpkg==1.0 --hash=sha256:")
    target = tmp_path / "target"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--find-links",
            str(house),
            "--require-hashes",
            "--target",
            str(target),
            "-r",
            str(reqs),
        ],
        check=True,
        capture_output=True,
    )
    assert (target / "enclavetestpkg" / "__init__.py").exists()


def test_a_tampered_wheel_is_named_and_pip_refuses_it_too(house: Path, tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(wheels.requirements_with_hashes(house))
    wheel = next(house.glob("*.whl"))
    with wheel.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(WheelHashMismatch) as err:
        wheels.verify_wheelhouse(house)
    assert err.value.code == "IMAGE_WHEEL_HASH_MISMATCH"
    assert wheel.name in str(err.value)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            str(house),
            "--require-hashes",
            "--target",
            str(tmp_path / "target"),
            "-r",
            str(reqs),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "DO NOT MATCH THE HASHES" in proc.stdout + proc.stderr
    assert not (tmp_path / "target" / "enclavetestpkg").exists()


def test_a_missing_wheel_is_named(house: Path) -> None:
    wheel = next(house.glob("*.whl"))
    wheel.unlink()
    with pytest.raises(WheelMissing) as err:
        wheels.verify_wheelhouse(house)
    assert wheel.name in str(err.value)


def test_an_unlisted_wheel_is_refused(house: Path, tmp_path: Path) -> None:
    (house / "intruder-1.0-py3-none-any.whl").write_bytes(b"not in the lock")
    with pytest.raises(WheelHashMismatch) as err:
        wheels.verify_wheelhouse(house)
    assert "intruder-1.0-py3-none-any.whl" in str(err.value)


def test_a_lock_that_misses_a_project_dependency_is_stale(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "proj").mkdir(parents=True)
    (project / "proj" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "enclave"\nversion = "0.0.1"\ndependencies = ["Django>=5.2", "newthing>=1"]\n'
        '[tool.setuptools]\npackages = ["proj"]\n'
    )
    wheel = wheels.build_project_wheel(project, tmp_path / "out")
    lock = tmp_path / "requirements.lock"
    lock.write_text("django==5.2.1 --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(LockStale) as err:
        wheels.check_project_needs(wheel, lock)
    assert err.value.code == "IMAGE_LOCK_STALE"
    assert "'newthing'" in str(err.value)
    lock.write_text(lock.read_text() + "newthing==1.0 --hash=sha256:" + "1" * 64 + "\n")
    wheels.check_project_needs(wheel, lock)


def test_the_committed_lock_pins_every_project_dependency(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    wheel = wheels.build_project_wheel(repo, tmp_path / "out")
    wheels.check_project_needs(wheel, repo / "image" / "requirements.lock")
    assert "ansible-core" in wheels.read_lock(repo / "image" / "requirements.lock")
    # The image installs the console from this wheel: every file of the packages must be in it
    # (templates and static files included), else the console answers 500 on the box.
    tracked = subprocess.run(
        ["git", "ls-files", "mgmt", "appliance"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    with zipfile.ZipFile(wheel) as zf:
        shipped = set(zf.namelist())
    missing = [name for name in tracked if name not in shipped and (repo / name).is_file()]
    assert missing == [], f"files of the console missing from the wheel: {missing[:10]}"
