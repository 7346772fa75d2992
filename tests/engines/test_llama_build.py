"""`make llama-server` (mk/llama.mk): the pinned sdist is checked before anything is built from it, and a
second run rebuilds nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.fixtures.engine import LLAMA_SERVER, REPO, require_llama_server

SDIST_NAME = "llama_cpp_python-0.3.36.tar.gz"


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_an_sdist_with_another_digest_stops_the_build_and_names_the_file(tmp_path: Path) -> None:
    sdist = tmp_path / "downloads" / SDIST_NAME
    sdist.parent.mkdir()
    sdist.write_bytes(b"not the llama-cpp-python sdist\n")
    out = tmp_path / "llama.cpp"
    result = make("llama-server", f"LLAMA_CPP_SDIST={sdist}", f"LLAMA_CPP_DIR={out}")
    assert result.returncode != 0
    assert f"SHA-256 MISMATCH for {sdist}" in result.stderr
    assert "LLAMA_CPP_SDIST_SHA256 in mk/llama.mk" in result.stderr
    # Nothing was extracted or built from it, and the next run fetches it again instead of trusting it.
    assert not (out / "src").exists()
    assert not (out / "bin").exists()
    assert not sdist.exists()
    assert (tmp_path / "downloads" / f"{SDIST_NAME}.rejected").read_bytes() == b"not the llama-cpp-python sdist\n"


def test_a_second_make_rebuilds_nothing() -> None:
    require_llama_server()
    before = LLAMA_SERVER.stat()
    result = make("llama-server")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # no cmake, no compiler, no copy
    after = LLAMA_SERVER.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
