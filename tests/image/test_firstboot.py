"""The first-boot program (provisioning/roles/enclave_app/files/enclave-firstboot), run for real in a
scratch root. A power cut is a SIGKILL right after a step (ENCLAVE_FIRSTBOOT_KILL_AFTER)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

FIRSTBOOT = Path(__file__).resolve().parents[2] / "provisioning/roles/enclave_app/files/enclave-firstboot"
KEY_STEPS = "secret-key,tls"


def _run(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FIRSTBOOT)],
        env={**os.environ, "ENCLAVE_FIRSTBOOT_ROOT": str(root), "ENCLAVE_FIRSTBOOT_STEPS": KEY_STEPS, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_first_boot_makes_the_ca_the_server_certificate_and_the_secret_key(tmp_path: Path) -> None:
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "first boot complete" in proc.stdout
    ca = x509.load_pem_x509_certificate((tmp_path / "etc/enclave/tls/ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((tmp_path / "etc/enclave/tls/server.crt").read_bytes())
    assert ca.subject.rfc4514_string().startswith("CN=Enclave Appliance CA")
    assert server.issuer == ca.subject
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    server.verify_directly_issued_by(ca)
    assert oct((tmp_path / "etc/enclave/tls/ca.key").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "etc/enclave/secret_key").stat().st_mode & 0o777) == "0o640"
    assert len((tmp_path / "etc/enclave/secret_key").read_bytes()) >= 64
    assert (tmp_path / "var/lib/enclave/firstboot.done").exists()


def test_a_power_cut_after_the_ca_resumes_without_redoing_it(tmp_path: Path) -> None:
    cut = _run(tmp_path, ENCLAVE_FIRSTBOOT_KILL_AFTER="tls")
    assert cut.returncode == -signal.SIGKILL
    assert not (tmp_path / "var/lib/enclave/firstboot.done").exists()
    leftovers = [p.name for p in tmp_path.rglob(".*") if p.is_file()]
    assert leftovers == [], "no temporary file may survive a cut"
    ca_before = (tmp_path / "etc/enclave/tls/ca.crt").read_bytes()
    secret_before = (tmp_path / "etc/enclave/secret_key").read_bytes()

    again = _run(tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "appliance CA created" not in again.stdout
    assert (tmp_path / "etc/enclave/tls/ca.crt").read_bytes() == ca_before
    assert (tmp_path / "etc/enclave/secret_key").read_bytes() == secret_before
    assert (tmp_path / "var/lib/enclave/firstboot.done").exists()


def test_a_second_run_changes_nothing(tmp_path: Path) -> None:
    assert _run(tmp_path).returncode == 0
    before = _files(tmp_path)
    assert _run(tmp_path).returncode == 0
    assert _files(tmp_path) == before


def test_a_failing_step_is_named_and_leaves_no_marker(tmp_path: Path) -> None:
    (tmp_path / "etc/enclave").mkdir(parents=True)
    (tmp_path / "etc/enclave/tls").write_text("a file where the TLS folder must be")
    proc = _run(tmp_path)
    assert proc.returncode == 1
    assert "FIRSTBOOT_STEP_FAILED: step 'tls'" in proc.stdout
    assert not (tmp_path / "var/lib/enclave/firstboot.done").exists()
