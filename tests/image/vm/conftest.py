"""One VM per test session, booted from the built image (ENCLAVE_IMAGE) on a qcow2 overlay."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from image import sign, stick, vm

BOOT_TIMEOUT = float(os.environ.get("ENCLAVE_IMAGE_BOOT_TIMEOUT", "900"))


class Listener:
    """A TCP listener on the host that counts every connection it accepts (the guest must reach none)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture(scope="session")
def image() -> Path:
    path = Path(os.environ["ENCLAVE_IMAGE"]).resolve()
    assert path.is_file(), f"{path} is missing: run make image"
    sign.verify_image(path, path.with_name(path.name + ".pub.pem").read_bytes())
    return path


@pytest.fixture(scope="session")
def listener() -> Iterator[Listener]:
    listening = Listener()
    yield listening
    listening.close()


@pytest.fixture(scope="session")
def accel(image: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """KVM only where a short boot probe shows it works (not on the CI machines: TCG)."""
    chosen = "kvm" if vm.kvm_boots(image, tmp_path_factory.mktemp("kvm-probe")) else "tcg"
    print(f"\nimage-test: accelerator {chosen}")
    return chosen


@pytest.fixture(scope="session")
def sticks(image: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """USB sticks for the guest (image/stick.py), signed with the vendor keys whose root the image ships."""
    keys = Path(os.environ.get("ENCLAVE_IMAGE_KEYS", image.parent.parent / "keys"))
    return stick.boot_test_sticks(tmp_path_factory.mktemp("sticks"), keys)


@pytest.fixture(scope="session")
def machine(
    image: Path, accel: str, listener: Listener, sticks: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[vm.VM]:
    work = tmp_path_factory.mktemp("vm")
    guest = vm.VM(
        image=image,
        work=work,
        accel=accel,
        # From the guest, 10.0.2.2 is the host in QEMU's user network: the listener's port, named to the
        # guest's air-gap self-check through the firmware config.
        fw_cfg={"opt/enclave/egress-probe": f"10.0.2.2:{listener.port}"},
        forwards={80: vm.free_port(), 8001: vm.free_port()},
        usb=[sticks["good"], sticks["junk"]],
    )
    guest.start()
    try:
        guest.wait_https("/healthz", timeout=BOOT_TIMEOUT)
        yield guest
    finally:
        guest.kill()
        log = Path(os.environ.get("ENCLAVE_IMAGE_TEST_LOGS", "build/image/out")) / "image-test-serial.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(guest.console_text())
