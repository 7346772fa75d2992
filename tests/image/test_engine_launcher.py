"""The image's engine launcher (provisioning/roles/engines/files/enclave-engine exec NAME, the ExecStart of
enclave-engine@NAME) run for real on the host: the instance's environment rendered from the engines role's
template for the single-box inventory's llama instance, enclave-model-verify choosing the model folder,
and the real llama-server started on it. Before any bundle is activated the engine serves the model
store's version; once the bundles' models pointer exists it serves the activated release's copy, or does
not start at all when that copy is missing or does not verify (decision 0505). The follower half
(enclave-engine follow, which needs systemd) is exercised in the VM boot test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jinja2
import pytest
import yaml

from image import fixture, sign
from tests.fixtures.engine import FIXTURE_GGUF, LLAMA_SERVER, _free_port, require_llama_server
from tests.fixtures.processes import wait_for

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "provisioning" / "roles"
LAUNCHER = ROLES / "engines" / "files" / "enclave-engine"
VERIFY = ROLES / "model_store" / "files" / "enclave-model-verify"
INVENTORY = REPO / "provisioning" / "inventories" / "single-box" / "group_vars" / "all.yml"


class Node:
    """A node's layout in a temporary folder: engines, the model store, the bundles' pointers."""

    def __init__(self, root: Path) -> None:
        require_llama_server()
        self.root = root
        key = sign.load_or_create_key(root / "models.pem")
        self.key_pub = root / "models.pub"
        self.key_pub.write_bytes(sign.public_pem(key))
        self.store = root / "models"
        fixture.write_gguf_model(self.store, key, FIXTURE_GGUF)
        (self.store / fixture.GGUF_MODEL / "current").symlink_to(fixture.VERSION)
        self.releases = root / "bundles" / "releases"
        self.pointer = root / "bundles" / "current" / "models"
        self.release_models = self.releases / "2026Q4" / "files" / "models"
        fixture.write_gguf_model(self.release_models, key, FIXTURE_GGUF, version="2026Q4")
        engines = root / "engines"
        (engines / "llamacpp" / "bin").mkdir(parents=True)
        (engines / "llamacpp" / "bin" / "llama-server").symlink_to(LLAMA_SERVER)
        self.etc = root / "etc"
        self.etc.mkdir()
        self.port = _free_port()
        (instance,) = yaml.safe_load(INVENTORY.read_text())["engines_instances"]
        template = jinja2.Template((ROLES / "engines/templates/etc/enclave/engines/instance.env.j2").read_text())
        env = template.render(
            ansible_managed="test",
            item={**instance, "port": self.port},
            engines_root=str(engines),
            engines_model_root=str(self.store),
            engines_model_key=str(self.key_pub),
            engines_release_models=str(self.pointer),
        )
        (self.etc / f"{instance['name']}.env").write_text(env)
        self.name = instance["name"]

    def activate(self) -> None:
        self.pointer.parent.mkdir(parents=True, exist_ok=True)
        self.pointer.symlink_to("../releases/2026Q4/files/models")

    def launch(self) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "ENCLAVE_ENGINES_DIR": str(self.etc),
            "ENCLAVE_MODEL_VERIFY": f"{sys.executable} {VERIFY}",
        }
        return subprocess.Popen(
            [sys.executable, str(LAUNCHER), "exec", self.name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def _served(node: Node, proc: subprocess.Popen[str]) -> Path:
    base = f"http://127.0.0.1:{node.port}"

    def healthy() -> bool:
        assert proc.poll() is None, proc.communicate()
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=120, what="llama-server started by enclave-engine exec")
    return Path(httpx.get(f"{base}/props", timeout=5).json()["model_path"])


def test_before_any_bundle_the_engine_serves_the_store_version(node: Node, running: list) -> None:
    proc = node.launch()
    running.append(proc)
    served = _served(node, proc)
    assert served == node.store / fixture.GGUF_MODEL / fixture.VERSION / "model.gguf"
    assert served.resolve() == served, "the engine is given the resolved folder, never a pointer"


def test_once_a_bundle_is_activated_the_engine_serves_its_copy(node: Node, running: list) -> None:
    node.activate()
    proc = node.launch()
    running.append(proc)
    served = _served(node, proc)
    assert served == (node.release_models / fixture.GGUF_MODEL / "2026Q4" / "model.gguf").resolve()
    # what the update health gate compares: the served file lies under the activated models pointer
    assert served.is_relative_to(node.pointer.resolve())


def _refused(node: Node) -> str:
    """Activate the release, run the launcher; it must exit 1 without starting an engine: its stderr."""
    node.activate()
    proc = node.launch()
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    return err


def test_a_release_without_the_model_starts_no_engine(node: Node) -> None:
    shutil.rmtree(node.release_models / fixture.GGUF_MODEL)
    err = _refused(node)
    assert "MODEL_NOT_IN_RELEASE" in err, err
    assert "llama: not started" in err
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{node.port}/health", timeout=2)


def test_a_tampered_release_copy_starts_no_engine(node: Node) -> None:
    gguf = node.release_models / fixture.GGUF_MODEL / "2026Q4" / "model.gguf"
    data = bytearray(gguf.read_bytes())
    data[len(data) // 2] ^= 0x01
    gguf.write_bytes(bytes(data))
    err = _refused(node)
    assert "MODEL_STORE_HASH_MISMATCH" in err, err
    assert "enclave-fixture-gguf/2026Q4/model.gguf" in err


def test_a_release_with_two_versions_of_the_model_starts_no_engine(node: Node) -> None:
    shutil.copytree(
        node.release_models / fixture.GGUF_MODEL / "2026Q4", node.release_models / fixture.GGUF_MODEL / "2026Q3"
    )
    err = _refused(node)
    assert "MODEL_RELEASE_AMBIGUOUS" in err, err


def test_the_followers_quick_selection_resolves_without_reading_the_weights(node: Node) -> None:
    """enclave-engine follow polls with --quick (cheap, every pointer move); the engine's own start does
    the full check: a tampered copy is still named by --quick, and refused without it."""
    gguf = node.release_models / fixture.GGUF_MODEL / "2026Q4" / "model.gguf"
    gguf.write_bytes(gguf.read_bytes()[:-1])
    node.activate()
    select = [sys.executable, str(VERIFY), "--select", fixture.GGUF_MODEL, "--root", str(node.store)]
    select += ["--key", str(node.key_pub), "--release-models", str(node.pointer)]
    quick = subprocess.run([*select, "--quick"], capture_output=True, text=True, check=False)
    assert quick.returncode == 0, quick.stderr
    assert Path(quick.stdout.strip()) == gguf.parent.resolve()
    full = subprocess.run(select, capture_output=True, text=True, check=False)
    assert full.returncode == 1
    assert "MODEL_STORE_SIZE_MISMATCH" in full.stderr
