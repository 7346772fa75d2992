"""`enclavectl bundle ...`: the vendor's keygen/root/build/sign and the appliance's verify/import/
activate/rollback/status.

Appliance settings come from the environment: ENCLAVE_STATE_DIR (default ./var), ENCLAVE_BUNDLE_TRUST_ROOT
(the root shipped in the image), ENCLAVE_HARDWARE_CLASS (default cpu-dev), ENCLAVE_CHANNEL (default stable).
Exit codes: 0 done, 1 the bundle or the step was refused (the code is printed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata

from appliance.bundles import vendor
from appliance.bundles.errors import AuditUnavailable, BundleError, HealthCheckFailed
from appliance.bundles.layout import PRODUCT, ReleaseInfo
from appliance.bundles.manager import UpdateConfig, UpdateManager
from appliance.bundles.progress import ProgressBar
from appliance.bundles.provision import Provisioner, command_provisioner
from appliance.bundles.staging import Progress, check_targets
from appliance.bundles.verify import ApplianceIdentity

__all__ = ["register"]

# Fault injection for the crash tests: the process stops itself (SIGSTOP) when it reaches this phase,
# so that a test can SIGKILL it exactly at a phase boundary. Unset in production.
FAULT_ENV = "ENCLAVE_BUNDLE_FAULT_STOP_AT"
HEALTH_CMD_HELP = (
    "shell command that must exit 0 after the flip ($ENCLAVE_POINTERS); default: the console's gate "
    "(engines healthy on the new model, a smoke inference), or with --no-audit: every pointer resolves"
)
NO_AUDIT_HELP = "do not record the step in the console's audit trail (only where there is no console database)"


def _config() -> UpdateConfig:
    state_dir = Path(os.environ.get("ENCLAVE_STATE_DIR", "var"))
    root = Path(os.environ.get("ENCLAVE_BUNDLE_TRUST_ROOT", state_dir / "bundle-trust-root.json"))
    return UpdateConfig(state_dir=state_dir, shipped_root=root, identity=ApplianceIdentity.from_env())


def _phase_hook(phase: str) -> None:
    if os.environ.get(FAULT_ENV) == phase:
        os.kill(os.getpid(), signal.SIGSTOP)


def _provisioner() -> Provisioner | None:
    """ENCLAVE_UPDATES_APPLY_COMMAND applies a bundle's debs/ at activation; unset, the step is skipped."""
    command = shlex.split(os.environ.get("ENCLAVE_UPDATES_APPLY_COMMAND", ""))
    return command_provisioner(command) if command else None


def _manager() -> UpdateManager:
    return UpdateManager(_config(), on_phase=_phase_hook, provisioner=_provisioner())


def _health_gate(command: str | None, audited: bool = False) -> Any:
    """--health-cmd if given; else the console's own gate where its settings are loaded (the audited
    path: engines healthy on the new model + a smoke inference); else every pointer must resolve."""
    if command is None and audited:
        from mgmt.updates.health import engine_health_gate

        return engine_health_gate

    def pointers_resolve(pointers: Path) -> None:
        """Built-in gate (when no --health-cmd): every pointer resolves to a directory."""
        for link in pointers.iterdir():
            if not link.resolve().is_dir():
                raise HealthCheckFailed(f"{link.name} points at {os.readlink(link)}, which does not exist")

    def run_command(pointers: Path) -> None:
        assert command is not None
        done = subprocess.run(  # noqa: S602 - the admin's own health command
            command,
            shell=True,
            capture_output=True,
            text=True,
            env={**os.environ, "ENCLAVE_POINTERS": str(pointers)},
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-400:]
            raise HealthCheckFailed(f"health command exited {done.returncode}: {tail}")

    return run_command if command else pointers_resolve


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=1, default=str))
    else:
        print(text)


# --- vendor ---------------------------------------------------------------------------------------
def _keygen(args: argparse.Namespace) -> int:
    for name in args.names:
        key = vendor.generate_key(Path(args.dir), name)
        print(f"{name}: {key.keyid}")
    return 0


def _root(args: argparse.Namespace) -> int:
    pubs = {k: [vendor.load_public_key(Path(p)) for p in getattr(args, k)] for k in ("root_key", "targets_key")}
    release_key = vendor.load_public_key(Path(args.release_key))
    signers = [vendor.load_signer(Path(p)) for p in args.sign]
    if args.previous:
        previous = Metadata.from_file(args.previous)
        md = vendor.rotate_root(
            previous,  # type: ignore[arg-type]
            root_keys=pubs["root_key"],
            targets_keys=pubs["targets_key"],
            release_key=release_key,
            old_signers=[vendor.load_signer(Path(p)) for p in args.sign_old],
            new_signers=signers,
        )
    else:
        md = vendor.make_root(
            root_keys=pubs["root_key"],
            targets_keys=pubs["targets_key"],
            release_key=release_key,
            root_signers=signers,
        )
    out = Path(args.out) / f"{md.signed.version}.root.json"
    vendor.write_metadata(out, md)
    print(out)
    return 0


def _build(args: argparse.Namespace) -> int:
    release = ReleaseInfo(
        product=args.product,
        release=args.release,
        sequence=args.sequence,
        channel=args.channel,
        hardware=tuple(args.hardware),
        issued=datetime.now(UTC).replace(microsecond=0),
    )
    bundle = vendor.build_bundle(
        Path(args.source),
        Path(args.out),
        release=release,
        roots_dir=Path(args.roots),
        expires_days=args.expires_days,
        link=args.link,
    )
    print(bundle)
    return 0


def _sign(args: argparse.Namespace) -> int:
    vendor.sign_bundle(
        Path(args.bundle),
        targets_signers=[vendor.load_signer(Path(p)) for p in args.key],
        release_signer=vendor.load_signer(Path(args.release_key)),
        expires_days=args.expires_days,
    )
    print(f"signed {args.bundle}")
    return 0


# --- appliance ------------------------------------------------------------------------------------
def _verify(args: argparse.Namespace) -> int:
    bundle = _manager().verify(Path(args.bundle))
    if args.deep:
        bar = ProgressBar() if not args.json else None
        check_targets(bundle.bundle_dir, bundle.targets, bar)
        if bar:
            bar(Progress(bundle.total_bytes, bundle.total_bytes, "checked"), final=True)
    summary = {
        "release": bundle.release.to_custom(),
        "files": len(bundle.targets),
        "bytes": bundle.total_bytes,
        "digests": bundle.digests,
        "signers": bundle.signers,
    }
    text = (
        f"OK: release {bundle.release.release} (#{bundle.release.sequence}), {len(bundle.targets)} files, "
        f"{bundle.total_bytes / 1e6:.1f} MB, signed by {len(bundle.signers['targets'])} targets keys"
    )
    _print(args, summary, text)
    return 0


def _audit_ready(args: argparse.Namespace) -> None:
    """Appliance steps are audited in the console's trail; refuse to start if that cannot happen."""
    if args.no_audit:
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mgmt.settings")
    try:
        import django

        django.setup()
        from django.db import connection

        connection.ensure_connection()
    except Exception as exc:
        raise AuditUnavailable(f"the audit trail cannot be reached ({exc}); nothing was done") from exc


def _audit(args: argparse.Namespace, action: str, outcome: str, data: dict[str, Any]) -> None:
    if args.no_audit:
        return
    import getpass

    from django.db import transaction

    from mgmt.audit.services import record_event

    with transaction.atomic():
        record_event(
            action,
            actor_label=f"enclavectl:{getpass.getuser()}",
            outcome=outcome,
            target_type="bundle",
            target_id=str(
                data.get("release", {}).get("release", "")
                if isinstance(data.get("release"), dict)
                else data.get("release", "")
            )[:128],
            data=data,
        )


def _import(args: argparse.Namespace) -> int:
    args.audit_action = "bundle.import"
    manager = _manager()
    bar = ProgressBar() if not args.json else None

    def progress(p: Progress) -> None:
        if bar:
            bar(p)

    job = manager.import_bundle(Path(args.bundle), progress)
    _audit(args, "bundle.import", "ok", {k: job[k] for k in ("release", "digests", "signers", "total_bytes")})
    if bar:
        bar(Progress(job["total_bytes"], job["total_bytes"], "done"), final=True)
    _print(args, job["release"], f"staged release {job['release']['release']}")
    if args.activate:
        return _activate(args)
    return 0


def _activate(args: argparse.Namespace) -> int:
    args.audit_action = "bundle.activate"
    state = _manager().activate(_health_gate(args.health_cmd, audited=not args.no_audit))
    current = state["current"]
    _audit(args, "bundle.activate", "ok", {k: current[k] for k in ("release", "sequence", "digests", "signers")})
    _print(args, state["current"], f"activated release {state['current']['release']}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    args.audit_action = "bundle.rollback"
    state = _manager().rollback()
    _audit(
        args,
        "bundle.rollback",
        "ok",
        {"release": state["current"]["release"], "from": state["previous"]["release"]},
    )
    _print(args, state["current"], f"rolled back to release {state['current']['release']}")
    return 0


def _status(args: argparse.Namespace) -> int:
    state = _manager().recover()
    if state.get("job"):
        state["job"].pop("metadata", None)
        state["job"].pop("targets", None)
    current = (state.get("current") or {}).get("release", "-")
    previous = (state.get("previous") or {}).get("release", "-")
    last = json.dumps(state.get("last"))
    text = f"phase: {state['phase']}\ncurrent: {current}\nprevious: {previous}\nlast: {last}"
    _print(args, state, text)
    return 0


def _run(func: Any, audited: bool = False) -> Any:
    def wrapper(args: argparse.Namespace) -> int:
        try:
            if audited:
                _audit_ready(args)
            result: int = func(args)
            return result
        except AuditUnavailable as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except BundleError as error:
            if audited and getattr(args, "audit_action", None):
                _audit(args, args.audit_action, "error", {"code": error.code, "message": error.message})
            if getattr(args, "json", False):
                print(json.dumps({"error": error.as_dict()}))
            print(f"\nerror: {error}", file=sys.stderr)
            return 1

    return wrapper


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bundle = subparsers.add_parser("bundle", help="signed update bundles: build, sign, verify, import, activate")
    sub = bundle.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("keygen", help="vendor: create Ed25519 key pairs (NAME.key, NAME.pub.json)")
    p.add_argument("--dir", required=True)
    p.add_argument("names", nargs="+")
    p.set_defaults(func=_run(_keygen))

    p = sub.add_parser("root", help="vendor: write the first root, or the next one (--previous) for a rotation")
    p.add_argument("--out", required=True, help="the roots directory")
    p.add_argument("--root-key", action="append", required=True, help="public key file (three of them)")
    p.add_argument("--targets-key", action="append", required=True, help="public key file (three of them)")
    p.add_argument("--release-key", required=True, help="public key for snapshot + timestamp")
    p.add_argument("--sign", action="append", required=True, help="private root key of the new root (two)")
    p.add_argument("--previous", help="the current N.root.json, for a rotation to N+1")
    p.add_argument("--sign-old", action="append", default=[], help="private root key of the previous root")
    p.set_defaults(func=_run(_root))

    p = sub.add_parser("build", help="vendor: lay out ENCLAVE-<release>/ from a release tree, hash every file")
    p.add_argument("source")
    p.add_argument("--out", required=True)
    p.add_argument("--release", required=True, help="e.g. 2026Q4")
    p.add_argument("--sequence", type=int, required=True, help="release counter, strictly increasing")
    p.add_argument("--roots", required=True, help="directory with the root chain 1.root.json ... N.root.json")
    p.add_argument("--product", default=PRODUCT)
    p.add_argument("--channel", default="stable")
    p.add_argument("--hardware", action="append", required=True, help="hardware class (repeat)")
    p.add_argument("--expires-days", type=int, default=365)
    p.add_argument("--link", action="store_true", help="hard-link files from SOURCE instead of copying them")
    p.set_defaults(func=_run(_build))

    p = sub.add_parser("sign", help="vendor: add targets signatures, then (re)write snapshot and timestamp")
    p.add_argument("bundle")
    p.add_argument("--key", action="append", default=[], help="private targets key (two of three in all)")
    p.add_argument("--release-key", required=True)
    p.add_argument("--expires-days", type=int, default=365)
    p.set_defaults(func=_run(_sign))

    for name, func, text in (
        ("verify", _verify, "check a bundle's signatures, versions, expiry, binding and files; copy nothing"),
        ("import", _import, "verify, then copy the bundle once into staging (resumes an interrupted import)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("bundle")
        p.add_argument("--json", action="store_true")
        if name == "verify":
            p.add_argument("--deep", action="store_true", help="also read every file and check its SHA-256")
        if name == "import":
            p.add_argument("--activate", action="store_true", help="activate right after staging")
            p.add_argument("--no-audit", action="store_true", help=NO_AUDIT_HELP)
            p.add_argument("--health-cmd", help=HEALTH_CMD_HELP)
        p.set_defaults(func=_run(func, audited=name == "import"))

    p = sub.add_parser("activate", help="flip to the staged release, run the health gate, commit or roll back")
    p.add_argument("--health-cmd", help=HEALTH_CMD_HELP)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-audit", action="store_true", help=NO_AUDIT_HELP)
    p.set_defaults(func=_run(_activate, audited=True))

    p = sub.add_parser("rollback", help="return to the previous release (after the first update: the factory image)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-audit", action="store_true", help=NO_AUDIT_HELP)
    p.set_defaults(func=_run(_rollback, audited=True))

    p = sub.add_parser("status", help="show the update state (and finish recovery after a crash)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(_status))
