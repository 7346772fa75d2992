"""A power cut during the first boot: qemu is killed (SIGKILL, the guest's unflushed writes are lost, as
on a real power cut) right after the first boot made the appliance CA. The next boot must finish the
first boot without redoing what was complete, and the box must serve HTTPS and power down cleanly.
Runs its own VM, after test_boot's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from image import vm
from tests.image.vm.conftest import BOOT_TIMEOUT


@pytest.fixture(scope="module")
def cut_machine(image: Path, accel: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[vm.VM]:
    work = tmp_path_factory.mktemp("power-cut")
    guest = vm.VM(image=image, work=work, accel=accel, cache="writeback")
    try:
        yield guest
    finally:
        guest.kill()


def test_a_power_cut_during_first_boot_is_finished_at_the_next_boot(cut_machine: vm.VM) -> None:
    cut_machine.start()
    cut_machine.wait_for_console("enclave-firstboot: appliance CA created", timeout=BOOT_TIMEOUT)
    cut_machine.kill()
    first = cut_machine.console_text()
    assert "enclave-firstboot: first boot complete" not in first

    cut_machine.start(fresh_disk=False)
    cut_machine.wait_https("/healthz", timeout=BOOT_TIMEOUT)
    cut_machine.wait_for_console("enclave-firstboot: first boot complete", timeout=BOOT_TIMEOUT)
    second = cut_machine.console_text()
    assert "enclave-firstboot: appliance CA created" not in second, "the CA made before the cut is kept"
    assert "FIRSTBOOT_STEP_FAILED" not in second
    assert second.count("enclave-firstboot: one-time password:") == 1
    _, _, meta = cut_machine.https_get("/healthz")
    cert = x509.load_der_x509_certificate(meta["der"])  # type: ignore[arg-type]
    assert cert.issuer.rfc4514_string().startswith("CN=Enclave Appliance CA")
    assert cut_machine.power_down(timeout=300) == 0
