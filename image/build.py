"""`make image`: closure -> local repository -> root file system (network off) -> provisioning
(site.yml, twice: the second run must change nothing) -> bootable disk -> SHA-256 and signature.

Caches under build/image/cache are keyed by the hash of what they were made from, so a second build in
the same run (or on the same CI machine) only redoes what changed. Times of each stage go to
build/image/out/build-times.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from image import debs, disk, fixture, sign, stick, wheels
from image.errors import ConfigInvalid, EngineMissing, ImageError, ProvisionFailed, ProvisionNotIdempotent
from image.hashes import atomic_write, sha256_file, write_manifest

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "image"
IMAGE_NAME = "enclave.raw"
# The engine of the CPU image and the model it serves (mk/llama.mk: make llama-server fixture-gguf).
LLAMA_SERVER = Path(os.environ.get("ENCLAVE_IMAGE_LLAMA_SERVER", REPO / "build" / "llama.cpp" / "bin" / "llama-server"))
FIXTURE_GGUF = fixture.GGUF_FILE


class Timer:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.cached: list[str] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        print(f"image: {name} ...", flush=True)
        started = time.monotonic()
        yield
        self.stages[name] = round(time.monotonic() - started, 1)
        print(f"image: {name} done in {self.stages[name]} s", flush=True)


def _key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def closure(build: Path, timer: Timer) -> tuple[Path, Path, list[str]]:
    """The local apt repository and the wheelhouse, from cache when their inputs did not change."""
    packages = debs.read_package_list(HERE / "packages.txt")
    mmdebstrap = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True, check=True).stdout
    repo = build / "cache" / f"debs-{_key((HERE / 'packages.txt').read_bytes(), mmdebstrap.encode())}"
    with timer.stage("closure-debs"):
        if (repo / debs.LOCK_NAME).exists():
            timer.cached.append("closure-debs")
        else:
            with tempfile.TemporaryDirectory(dir=build) as tmp:
                debs.download_closure(packages, Path(tmp) / "debs")
                debs.make_repository(Path(tmp) / "debs", Path(tmp) / "repo")
                (Path(tmp) / "repo").replace(repo)
        debs.verify_repository(repo, packages)
    lock = HERE / "requirements.lock"
    house = build / "cache" / f"wheels-{_key(lock.read_bytes())}"
    with timer.stage("closure-wheels"):
        if (house / wheels.LOCK_NAME).exists():
            timer.cached.append("closure-wheels")
        else:
            wheels.build_wheelhouse(lock, house)
        wheels.verify_wheelhouse(house)
    return repo, house, packages


def rootfs(build: Path, repo: Path, packages: list[str], timer: Timer) -> Path:
    tarball = build / "cache" / f"rootfs-{_key((repo / debs.LOCK_NAME).read_bytes(), ' '.join(packages).encode())}.tar"
    with timer.stage("rootfs"):
        if tarball.exists():
            timer.cached.append("rootfs")
        else:
            debs.build_rootfs(repo, packages, tarball)
    return tarball


def in_chroot(root: Path, argv: list[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv inside `root` with networking off (a new, empty network namespace) and /proc, /sys and
    /dev mounted in a private mount namespace (gone when the command ends)."""
    script = (
        'set -e; mount --make-rprivate /; mount -t proc proc "$R/proc"; mount -t sysfs sys "$R/sys"; '
        'mount --rbind /dev "$R/dev"; exec chroot "$R" "$@"'
    )
    full_env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "R": str(root),
        **(env or {}),
    }
    return subprocess.run(
        ["unshare", "--net", "--mount", "--fork", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        check=False,
        env=full_env,
    )


def stage_software(root: Path, house: Path, project_wheel_dir: Path, model_key_path: Path) -> None:
    """Copy what the playbook installs from into the tree: wheelhouse (with the Enclave wheel),
    provisioning, policies, the fixture weights, the vendor's model key and bundle trust root."""
    opt = root / "opt" / "enclave"
    target = opt / "wheelhouse"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(house, target)
    for wheel in project_wheel_dir.glob("*.whl"):
        shutil.copy2(wheel, target / wheel.name)
    write_manifest(target / wheels.LOCK_NAME, {w.name: sha256_file(w) for w in target.glob("*.whl")})
    wheels.verify_wheelhouse(target)
    atomic_write(target / "requirements.txt", wheels.requirements_with_hashes(target).encode())
    for name in ("provisioning", "policies"):
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name,
                opt / name,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__", ".ansible"),
            )
    model_key = sign.load_or_create_key(model_key_path)
    fixture.write_fixture_model(root / "var" / "lib" / "enclave" / "models", model_key)
    stage_engine(root, model_key)
    atomic_write(root / "etc" / "enclave" / "trust" / "models-ed25519.pub", sign.public_pem(model_key))
    # The update bundles' trust root (TUF 1.root.json of the vendor's keys; image/stick.py).
    atomic_write(root / "etc" / "enclave" / "trust" / "bundle-root.json", stick.trust_root(model_key_path.parent))
    for public in (root / "etc" / "enclave" / "trust").iterdir():
        public.chmod(0o644)  # public keys and the TUF root: the services (user enclave) read them
    # Unique per box, made at first boot: SSH host keys and the machine id.
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc" / "machine-id").write_text("", encoding="utf-8")
    # Air-gapped: no apt source at all (the build's local repository was a path on the build host).
    (root / "etc" / "apt" / "sources.list").write_text(
        "# Enclave is air-gapped: packages arrive only in signed update bundles (apply-bundle.yml).\n",
        encoding="utf-8",
    )
    (root / "etc" / "fstab").write_text("UUID=@ROOT_UUID@ / ext4 errors=remount-ro 0 1\n", encoding="utf-8")


def stage_engine(root: Path, model_key: Ed25519PrivateKey) -> None:
    """llama-server as the tarball the engines role unpacks (llamacpp/bin/llama-server), and the GGUF
    fixture signed into the model store as enclave-fixture-gguf/1 (decision 0502)."""
    for path, target in ((LLAMA_SERVER, "make llama-server"), (FIXTURE_GGUF, "make fixture-gguf")):
        if not path.is_file():
            raise EngineMissing(f"{path} is missing: run `{target}` (a prerequisite of make image)")
    sources = root / "opt" / "enclave" / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    partial = sources / ".llama.cpp-bin.tar.gz.partial"

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o755
        info.mtime = 0
        return info

    with tarfile.open(partial, "w:gz") as tar:
        tar.add(LLAMA_SERVER, arcname="llamacpp/bin/llama-server", filter=as_root)
    partial.replace(sources / "llama.cpp-bin.tar.gz")
    fixture.write_gguf_model(root / "var" / "lib" / "enclave" / "models", model_key, FIXTURE_GGUF)


_RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def run_playbook(root: Path, extra: list[str] | None = None) -> tuple[int, str]:
    """Apply site.yml inside the tree; return (changed count, output)."""
    proc = in_chroot(
        root,
        [
            "/opt/enclave/venv/bin/ansible-playbook",
            "-i",
            "/opt/enclave/provisioning/inventories/single-box/hosts.yml",
            "/opt/enclave/provisioning/site.yml",
            "-e",
            "enclave_image_build=true",
            *(extra or []),
        ],
        env={
            "ANSIBLE_CONFIG": "/opt/enclave/provisioning/ansible.cfg",
            "ANSIBLE_HOME": "/root/.ansible",
        },
    )
    output = proc.stdout + proc.stderr
    recap = _RECAP.findall(output)
    if proc.returncode != 0 or not recap:
        tail = "\n".join(output.splitlines()[-40:])
        raise ProvisionFailed(f"site.yml failed inside the image (exit {proc.returncode}):\n{tail}")
    return sum(int(r[2]) for r in recap), output


def changed_tasks(output: str) -> list[str]:
    names, task = [], ""
    for line in output.splitlines():
        if line.startswith("TASK [") or line.startswith("RUNNING HANDLER ["):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:"):
            names.append(task)
    return names


def provision(build: Path, tarball: Path, house: Path, keys: Path, timer: Timer) -> Path:
    root = build / "work" / "root"
    with timer.stage("provision-unpack"):
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(tarball)], check=True)
    with timer.stage("provision-stage"):
        project = wheels.build_project_wheel(REPO, build / "work" / "project-wheel")
        wheels.check_project_needs(project, HERE / "requirements.lock")
        stage_software(root, house, project.parent, keys / "models-ed25519.pem")
        # ansible-core comes from the same hashed wheelhouse: the playbook's own runtime.
        for argv in (
            ["python3", "-m", "venv", "/opt/enclave/venv"],
            [
                "/opt/enclave/venv/bin/pip",
                "install",
                "--no-index",
                "--find-links",
                "/opt/enclave/wheelhouse",
                "--require-hashes",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "-q",
                "-r",
                "/opt/enclave/wheelhouse/requirements.txt",
            ],
        ):
            proc = in_chroot(root, argv)
            if proc.returncode != 0:
                raise ProvisionFailed(f"{' '.join(argv[:3])} failed in the image: {proc.stderr[-2000:]}")
    with timer.stage("provision-first-run"):
        first, output = run_playbook(root)
        atomic_write(build / "out" / "provision-first.log", output.encode())
    with timer.stage("provision-second-run"):
        second, output = run_playbook(root)
        atomic_write(build / "out" / "provision-second.log", output.encode())
        if second != 0:
            raise ProvisionNotIdempotent(
                f"the second run of site.yml changed {second} thing(s): {', '.join(changed_tasks(output))}"
            )
    print(f"image: site.yml changed {first} thing(s) on the first run and 0 on the second", flush=True)
    with timer.stage("check-configs"):
        check_configs(root)
    return root


def _throwaway_tls(crt: Path, key: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "build-time nginx -t only")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(private, hashes.SHA256())
    )
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def check_configs(root: Path) -> None:
    """Run each service's own configuration check in the image. The TLS certificate is made at first
    boot, so nginx is checked with a throwaway one that is removed again."""
    tls = root / "etc" / "enclave" / "tls"
    crt, key = tls / "server.crt", tls / "server.key"
    made = not crt.exists()
    if made:
        _throwaway_tls(crt, key)
    try:
        for argv in (["/usr/sbin/nginx", "-t", "-q"], ["/usr/sbin/nft", "-c", "-f", "/etc/nftables.conf"]):
            proc = in_chroot(root, argv)
            if proc.returncode != 0:
                raise ConfigInvalid(
                    f"{' '.join(argv)} refused the configuration: {(proc.stderr + proc.stdout)[-1500:]}"
                )
    finally:
        if made:
            crt.unlink(missing_ok=True)
            key.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--build-dir", type=Path, default=REPO / "build" / "image")
    parser.add_argument(
        "--base-only",
        action="store_true",
        help="only the closure and the root file system (cached; they need neither llama-server nor the"
        " project's code, so `make test` builds them while llama-server compiles)",
    )
    args = parser.parse_args(argv)
    build: Path = args.build_dir.resolve()
    (build / "cache").mkdir(parents=True, exist_ok=True)
    (build / "out").mkdir(parents=True, exist_ok=True)
    keys = Path(os.environ.get("ENCLAVE_IMAGE_KEYS", build / "keys"))
    timer = Timer()
    started = time.monotonic()
    try:
        repo, house, packages = closure(build, timer)
        tarball = rootfs(build, repo, packages, timer)
        if args.base_only:
            print(f"image: closure and root file system ready in {round(time.monotonic() - started, 1)} s")
            return 0
        root = provision(build, tarball, house, keys, timer)
        image = build / "out" / IMAGE_NAME
        with timer.stage("pack"):
            disk.pack(root, image)
        with timer.stage("sign"):
            key = sign.load_or_create_key(keys / "image-ed25519.pem")
            sign.sign_image(image, key)
            sign.verify_image(image, sign.public_pem(key))
    except ImageError as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1
    total = round(time.monotonic() - started, 1)
    report = {
        "build_seconds": total,
        "image_bytes": image.stat().st_size,
        "stages": timer.stages,
        "stages_from_cache": timer.cached,
    }
    atomic_write(build / "out" / "build-times.json", (json.dumps(report, indent=1) + "\n").encode())
    print(f"image: {image} ({image.stat().st_size} bytes) built in {total} s: {timer.stages}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
