"""Activation: health gate with automatic rollback, the venv built from the bundle's wheels, misuse."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

from appliance.bundles.errors import BundleError
from tests.bundles.conftest import PAYLOAD, Appliance, VendorKit, healthy


def test_failed_health_check_rolls_back_to_the_previous_release(
    tmp_path: Path, kit: VendorKit, appliance: Appliance
) -> None:
    manager = appliance.manager()
    manager.import_bundle(kit.build(tmp_path, PAYLOAD, "2026Q3", 1))
    manager.activate(healthy)
    trust_before = manager.trust_file.read_bytes()
    manager.import_bundle(kit.build(tmp_path, {**PAYLOAD, "policies/retention.yaml": b"new\n"}, "2026Q4", 2))
    seen: list[bytes] = []

    def smoke_inference_fails(pointers: Path) -> None:
        seen.append((pointers / "policies" / "retention.yaml").read_bytes())
        raise RuntimeError("engine did not answer the smoke prompt")

    with pytest.raises(BundleError) as caught:
        manager.activate(smoke_inference_fails)
    assert caught.value.code == "bundle.health_check_failed"
    assert seen == [b"new\n"]  # the gate ran against the new release
    assert (manager.pointers / "policies" / "retention.yaml").read_bytes() == PAYLOAD["policies/retention.yaml"]
    assert manager.trust_file.read_bytes() == trust_before
    state = manager.read_state()
    assert state["phase"] == "staged"
    assert state["current"]["release"] == "2026Q3"
    assert state["last"]["code"] == "bundle.health_check_failed"
    manager.activate(healthy)  # fixed engines: the staged release activates without a re-import
    assert manager.read_state()["current"]["release"] == "2026Q4"


def test_steps_out_of_order_are_refused(tmp_path: Path, kit: VendorKit, appliance: Appliance) -> None:
    manager = appliance.manager()
    with pytest.raises(BundleError) as caught:
        manager.activate(healthy)
    assert caught.value.code == "bundle.bad_state"
    with pytest.raises(BundleError) as caught:
        manager.rollback()
    assert caught.value.code == "bundle.no_previous_release"


def test_second_operation_is_refused_while_one_runs(tmp_path: Path, kit: VendorKit, appliance: Appliance) -> None:
    bundle = kit.build(tmp_path, PAYLOAD, "2026Q3", 1)
    codes: list[str] = []

    def meanwhile(phase: str) -> None:
        if phase == "verified":
            try:
                appliance.manager().import_bundle(bundle)
            except BundleError as error:
                codes.append(error.code)

    appliance.manager(on_phase=meanwhile).import_bundle(bundle)
    assert codes == ["bundle.busy"]


def _wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel, made here (no index can be reached)."""
    name, version = "enclave_fixture_pkg", "1.0"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    files = {
        f"{name}/__init__.py": b"ANSWER = 42\n",
        f"{name}-{version}.dist-info/METADATA": metadata.encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.mark.slow
def test_application_venv_is_built_offline_from_the_bundle_wheels(
    tmp_path: Path, kit: VendorKit, appliance: Appliance
) -> None:
    wheel = _wheel(tmp_path)
    payload = {**PAYLOAD, f"wheels/{wheel.name}": wheel.read_bytes()}
    manager = appliance.manager()
    manager.import_bundle(kit.build(tmp_path, payload, "2026Q4", 1))
    manager.activate(healthy)
    python = manager.pointers / "venv" / "bin" / "python"
    done = subprocess.run(
        [str(python), "-c", "import enclave_fixture_pkg; print(enclave_fixture_pkg.ANSWER)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "42"
