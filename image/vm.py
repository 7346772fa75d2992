"""Boot the appliance image under qemu: a KVM boot probe (TCG when it fails, as on the CI machines),
user networking with `restrict=on` (the guest has no way out) and port forwards to 443 and 22,
the serial console captured to a file, and a clean ACPI power-down through QMP.

The image itself is never written: each VM runs on a qcow2 overlay backed by it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

QEMU = "qemu-system-x86_64"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _qemu_argv(disk: Path, accel: str, serial: Path, extra: list[str], cache: str = "unsafe") -> list[str]:
    cpu = ["-cpu", "host"] if accel == "kvm" else ["-cpu", "max"]
    return [
        QEMU,
        "-accel",
        accel,
        *cpu,
        "-m",
        "3072",
        "-smp",
        "2",
        "-no-reboot",
        "-drive",
        f"file={disk},format=qcow2,if=virtio,cache={cache}",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{serial}",
        *extra,
    ]


def overlay(image: Path, path: Path) -> Path:
    """A copy-on-write overlay over the raw image (the image stays as it was)."""
    path.unlink(missing_ok=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.resolve()), str(path)],
        check=True,
    )
    return path


def kvm_boots(image: Path, work: Path, timeout: float = 20.0) -> bool:
    """Short boot probe: does a KVM guest get as far as the kernel's first line on the serial port?"""
    if not Path("/dev/kvm").exists():
        return False
    serial = work / "kvm-probe.log"
    serial.write_text("")
    disk = overlay(image, work / "kvm-probe.qcow2")
    proc = subprocess.Popen(
        _qemu_argv(disk, "kvm", serial, ["-nic", "none"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if "Linux version" in serial.read_text(errors="replace"):
                return True
            time.sleep(0.5)
        return False
    finally:
        proc.kill()
        proc.wait()
        disk.unlink(missing_ok=True)


@dataclass
class VM:
    image: Path
    work: Path
    accel: str = "tcg"
    fw_cfg: dict[str, str] = field(default_factory=dict)
    forwards: dict[int, int] = field(default_factory=dict)  # guest port -> host port
    # "unsafe" ignores the guest's flushes (fast); "writeback" honours them, so that killing qemu is a
    # power cut that loses only what the guest had not yet flushed.
    cache: str = "unsafe"
    # Raw disk images attached as USB sticks (read-only usb-storage devices on an xHCI controller).
    usb: list[Path] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    @property
    def serial(self) -> Path:
        return self.work / "serial.log"

    @property
    def qmp_path(self) -> Path:
        return self.work / "qmp.sock"

    def start(self, *, fresh_disk: bool = True) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        disk = self.work / "disk.qcow2"
        if fresh_disk or not disk.exists():
            overlay(self.image, disk)
        self.serial.write_text("")
        self.qmp_path.unlink(missing_ok=True)
        for guest in (443, 22):
            self.forwards.setdefault(guest, free_port())
        fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in self.forwards.items())
        extra = [
            "-nic",
            f"user,model=virtio-net-pci,restrict=on,{fwd}",
            "-qmp",
            f"unix:{self.qmp_path},server=on,wait=off",
        ]
        for name, value in self.fw_cfg.items():
            extra += ["-fw_cfg", f"name={name},string={value}"]
        if self.usb:
            extra += ["-device", "qemu-xhci,id=xhci"]
        for number, stick in enumerate(self.usb):
            extra += [
                "-drive",
                f"if=none,id=stick{number},file={stick.resolve()},format=raw,readonly=on",
                "-device",
                f"usb-storage,bus=xhci.0,drive=stick{number}",
            ]
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            _qemu_argv(disk, self.accel, self.serial, extra, self.cache),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def console_text(self) -> str:
        return self.serial.read_text(errors="replace")

    def wait_for_console(self, needle: str, timeout: float) -> float:
        """Seconds since start when `needle` appeared on the serial console; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.console_text():
                return time.monotonic() - self.started_at
            self._check_alive()
            time.sleep(0.5)
        raise TimeoutError(f"{needle!r} did not appear on the serial console in {timeout} s")

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise RuntimeError(f"qemu exited with {self.proc.returncode}: {err[-2000:]}")

    def https_request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, http.client.HTTPMessage, bytes, bytes]:
        """One HTTPS request through the forward as `enclave.local`; returns status, headers, body and the
        server certificate (DER). The certificate is not verified here: the tests check who issued it."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", self.forwards[443], timeout=timeout, context=ctx)
        try:
            conn.request(method, path, body=body, headers={"Host": "enclave.local", **(headers or {})})
            response = conn.getresponse()
            der = conn.sock.getpeercert(binary_form=True) or b""
            return response.status, response.headers, response.read(), der
        finally:
            conn.close()

    def https_get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes, dict[str, object]]:
        status, headers, body, der = self.https_request("GET", path, timeout=timeout)
        head = "\n".join(f"{k}: {v}" for k, v in headers.items())
        return status, body, {"der": der, "head": head}

    def wait_https(self, path: str, timeout: float, ok: tuple[int, ...] = (200,)) -> float:
        """Seconds since start when GET `path` first answered with a status in `ok`."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, _, _ = self.https_get(path, timeout=5)
                if status in ok:
                    return time.monotonic() - self.started_at
                last = f"status {status}"
            except (OSError, ValueError, http.client.HTTPException) as exc:
                last = repr(exc)
            time.sleep(1)
        raise TimeoutError(f"https {path} did not answer {ok} in {timeout} s (last: {last})")

    def qmp(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(self.qmp_path))
            reader = sock.makefile("rb")
            reader.readline()  # greeting
            for cmd in ("qmp_capabilities", command):
                sock.sendall(json.dumps({"execute": cmd}).encode() + b"\n")
                while True:
                    reply = json.loads(reader.readline())
                    if "return" in reply or "error" in reply:
                        break

    def power_down(self, timeout: float = 300.0) -> int:
        """ACPI power button, then wait for qemu to exit on its own; returns its exit code."""
        assert self.proc is not None
        self.qmp("system_powerdown")
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            self.qmp_path.unlink()
