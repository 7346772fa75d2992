"""provisioning/: the inventories' variables are validated by each role's meta/argument_specs.yml before
any task runs. These run the real ansible-playbook in check mode with a tag that selects no task, so only
the (always-tagged) validations run: a bad variable fails naming itself, and nothing changes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROVISIONING = Path(__file__).resolve().parents[2] / "provisioning"
PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def _inventory(tmp_path: Path, host_vars: str | None) -> Path:
    inv = tmp_path / "inventory"
    shutil.copytree(PROVISIONING / "inventories" / "single-box", inv)
    if host_vars is not None:
        (inv / "host_vars").mkdir()
        (inv / "host_vars" / "enclave.yml").write_text("---\n" + host_vars)
    return inv / "hosts.yml"


def _validate(inventory: Path, *extra: str, playbook: str = "site.yml") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLAYBOOK, "-i", str(inventory), playbook, "--check", "--tags", "enclave-validate-only", *extra],
        cwd=PROVISIONING,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(PROVISIONING / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )


def _validation_message(output: str) -> str:
    """The error itself (the output also dumps the whole argument spec, which names every variable)."""
    marker = "Validation of arguments failed:"
    assert marker in output, output[-3000:]
    return output.split(marker, 1)[1].split("Origin:", 1)[0]


def test_the_single_box_inventory_validates(tmp_path: Path) -> None:
    proc = _validate(_inventory(tmp_path, None))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "changed=0" in proc.stdout
    assert "failed=0" in proc.stdout


@pytest.mark.parametrize(
    ("host_vars", "named"),
    [
        ("nginx_https_port: four-four-three\n", "nginx_https_port"),
        ("firewall_lan_tcp_ports: [https]\n", "firewall_lan_tcp_ports"),
        ("redis_appendfsync: sometimes\n", "redis_appendfsync"),
        ("base_network_dhcp: maybe\n", "base_network_dhcp"),
        ("enclave_app_allowed_hosts: 42\nenclave_app_console_port: [8001]\n", "enclave_app_console_port"),
    ],
)
def test_a_variable_of_the_wrong_type_fails_naming_it(tmp_path: Path, host_vars: str, named: str) -> None:
    proc = _validate(_inventory(tmp_path, host_vars))
    assert proc.returncode != 0
    assert named in _validation_message(proc.stdout)
    assert "changed=0" in proc.stdout


def test_an_engine_instance_without_a_port_is_refused(tmp_path: Path) -> None:
    proc = _validate(_inventory(tmp_path, "engines_instances:\n  - {name: e1, engine: vllm-cpu, model: m}\n"))
    assert proc.returncode != 0
    message = _validation_message(proc.stdout)
    assert "port" in message
    assert "engines_instances" in message


def test_the_cluster_inventory_validates_as_far_as_its_hosts_are_reachable() -> None:
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-inventory"),
            "-i",
            "inventories/cluster/hosts.yml",
            "--graph",
        ],
        cwd=PROVISIONING,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "@console:" in proc.stdout
    assert "|--console-1" in proc.stdout
    assert "@inference:" in proc.stdout
    assert "|--gpu-2" in proc.stdout


def test_applying_a_bundle_requires_the_staged_bundle(tmp_path: Path) -> None:
    proc = _validate(_inventory(tmp_path, None), playbook="apply-bundle.yml")
    assert proc.returncode != 0
    assert "BUNDLE_DIR_MISSING" in proc.stdout


def test_applying_a_bundle_without_its_apt_repository_is_refused(tmp_path: Path) -> None:
    """Runs bundle_apt for real (not in check mode) against an empty staged bundle: it must stop at its
    first check, before it writes any apt source."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    inventory = _inventory(tmp_path, None)
    proc = subprocess.run(
        [
            PLAYBOOK,
            "-i",
            str(inventory),
            "apply-bundle.yml",
            "-e",
            f"bundle_dir={bundle}",
            "--limit",
            "enclave",
            "--tags",
            "always,bundle-apt-check",
        ],
        cwd=PROVISIONING,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(PROVISIONING / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )
    assert proc.returncode != 0
    assert "BUNDLE_APT_NO_REPOSITORY" in proc.stdout
    assert not Path("/etc/apt/sources.list.d/enclave-bundle.sources").exists()


def test_applying_a_bundle_that_names_a_package_its_repository_lacks_is_refused(tmp_path: Path) -> None:
    """A real bundle tree (image/stick.py: one .deb in the bundle's own apt repository) whose packages.txt
    also names a package that repository lacks: bundle_apt stops with its stable code before it writes
    any apt source or calls apt."""
    from image import stick

    pool = tmp_path / "pool"
    names = [stick.PROBE_PACKAGE, "enclave-not-in-this-bundle"]
    stick.make_deb(pool, stick.PROBE_PACKAGE, "1.0-1")
    tree = stick.release_tree(
        tmp_path / "release",
        release="2026Q4-broken",
        packages=names,
        debs_dir=pool,
        model_key=tmp_path / "models-ed25519.pem",
    )
    proc = subprocess.run(
        [
            PLAYBOOK,
            "-i",
            str(_inventory(tmp_path, None)),
            "apply-bundle.yml",
            "-e",
            json.dumps({"bundle_dir": str(tree), "bundle_apt_packages": names}),
            "--limit",
            "enclave",
            "--tags",
            "always,bundle-apt-check",
        ],
        cwd=PROVISIONING,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(PROVISIONING / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )
    assert proc.returncode != 0
    assert "BUNDLE_APT_PACKAGE_MISSING: enclave-not-in-this-bundle" in proc.stdout, proc.stdout[-3000:]
    assert f"BUNDLE_APT_PACKAGE_MISSING: {stick.PROBE_PACKAGE}" not in proc.stdout
    assert not Path("/etc/apt/sources.list.d/enclave-bundle.sources").exists()


def test_the_cluster_inventory_validates_against_every_role_on_every_host() -> None:
    """The cluster inventory is never applied here (no second machine, no GPU); what can be checked is that
    every host's variables pass every role's argument specs, the nvidia role's on the GPU profile included.
    The hosts are reached through a local connection for that; no task other than the validations runs."""
    proc = subprocess.run(
        [
            PLAYBOOK,
            "-i",
            "inventories/cluster/hosts.yml",
            "site.yml",
            "--check",
            "--tags",
            "enclave-validate-only",
            "-e",
            "ansible_connection=local",
        ],
        cwd=PROVISIONING,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(PROVISIONING / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    recap = dict(re.findall(r"^(\S+)\s*: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", proc.stdout, re.M))
    assert recap == {"console-1": "0", "gpu-1": "0", "gpu-2": "0"}, proc.stdout[-3000:]
    nvidia = proc.stdout.split("TASK [nvidia : Validating arguments", 1)[1].split("TASK [", 1)[0]
    assert "ok: [gpu-1]" in nvidia
    assert "ok: [gpu-2]" in nvidia
