"""The local apt repository and its lock, built with the real apt-ftparchive from real (tiny) .debs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from image import debs
from image.errors import ClosureMissingPackage, PackageHashMismatch


def _deb(work: Path, name: str, version: str = "1.0") -> Path:
    tree = work / f"{name}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr" / "share" / name).mkdir(parents=True)
    (tree / "usr" / "share" / name / "README").write_text(f"{name}\n")
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        f"Description: test package {name}\n"
    )
    out = work / "debs" / f"{name}_{version}_all.deb"
    out.parent.mkdir(exist_ok=True)
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for name in ("alpha", "beta", "gamma"):
        _deb(tmp_path, name)
    debs.make_repository(tmp_path / "debs", tmp_path / "repo")
    return tmp_path / "repo"


def test_a_complete_repository_passes(repo: Path) -> None:
    debs.verify_repository(repo, ["alpha", "beta"])
    assert set(debs.index_packages(repo)) == {"alpha", "beta", "gamma"}


def test_a_required_package_missing_from_the_closure_is_named(repo: Path) -> None:
    with pytest.raises(ClosureMissingPackage) as err:
        debs.verify_repository(repo, ["alpha", "nginx"])
    assert err.value.code == "IMAGE_CLOSURE_MISSING_PACKAGE"
    assert "'nginx'" in str(err.value)


def test_a_deleted_package_file_is_named_and_nothing_changes(repo: Path) -> None:
    victim = repo / "pool" / "main" / "beta_1.0_all.deb"
    victim.unlink()
    before = sorted(p.name for p in (repo / "pool" / "main").iterdir())
    with pytest.raises(ClosureMissingPackage) as err:
        debs.verify_repository(repo, ["alpha"])
    assert "beta_1.0_all.deb" in str(err.value)
    assert sorted(p.name for p in (repo / "pool" / "main").iterdir()) == before


def test_an_altered_package_file_is_named(repo: Path) -> None:
    victim = repo / "pool" / "main" / "gamma_1.0_all.deb"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(PackageHashMismatch) as err:
        debs.verify_repository(repo, ["alpha"])
    assert err.value.code == "IMAGE_PACKAGE_HASH_MISMATCH"
    assert "gamma_1.0_all.deb" in str(err.value)


def test_a_package_indexed_but_not_locked_is_refused(repo: Path, tmp_path: Path) -> None:
    extra = _deb(tmp_path, "delta")
    (repo / "pool" / "main" / extra.name).write_bytes(extra.read_bytes())
    index = repo / "dists" / "bookworm" / "main" / "binary-amd64" / "Packages"
    index.write_text(
        subprocess.run(
            ["apt-ftparchive", "packages", "pool"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
    )
    with pytest.raises(ClosureMissingPackage) as err:
        debs.verify_repository(repo, ["alpha"])
    assert "'delta'" in str(err.value)


def test_package_list_ignores_comments(tmp_path: Path) -> None:
    listing = tmp_path / "packages.txt"
    listing.write_text("# comment\nnginx\n\n  redis-server  # cache\n")
    assert debs.read_package_list(listing) == ["nginx", "redis-server"]


def test_the_shipped_package_list_names_what_the_roles_need() -> None:
    names = set(debs.read_package_list(Path(__file__).resolve().parents[2] / "image" / "packages.txt"))
    assert {"linux-image-amd64", "nftables", "postgresql", "redis-server", "nginx", "openssh-server"} <= names
