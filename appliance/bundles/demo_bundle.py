"""`make demo-bundle`: a signed "2026Q4" bundle for the demo appliance, so `make demo` users can try
the Updates flow. It plays the vendor with demo keys kept under $ENCLAVE_STATE_DIR/demo-vendor/ (never
use them for anything real), installs the matching trust root where the demo console looks for it
(only if none is there yet), and writes the bundle into the demo's watched media directory.

Contents: the repository's policies/ (with the retention default changed, so the activation is
visible), and the fixture model directory given with --model (the demo engine's weights) if any.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from appliance.bundles import vendor
from appliance.bundles.layout import PRODUCT, ReleaseInfo

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[2]
KEY_NAMES = ("root-1", "root-2", "root-3", "targets-1", "targets-2", "targets-3", "release")


def demo_vendor(base: Path) -> Path:
    """Demo keys and root chain, created once and reused so that later demo bundles still verify."""
    keys, roots = base / "keys", base / "roots"
    if not (roots / "1.root.json").exists():
        for name in KEY_NAMES:
            vendor.generate_key(keys, name)
        pub = {name: vendor.load_public_key(keys / f"{name}.pub.json") for name in KEY_NAMES}
        root = vendor.make_root(
            root_keys=[pub[f"root-{i}"] for i in (1, 2, 3)],
            targets_keys=[pub[f"targets-{i}"] for i in (1, 2, 3)],
            release_key=pub["release"],
            root_signers=[vendor.load_signer(keys / "root-1.key"), vendor.load_signer(keys / "root-2.key")],
        )
        vendor.write_metadata(roots / "1.root.json", root)
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=ROOT / "var")
    parser.add_argument("--model", type=Path, help="fixture model directory to ship as models/<name>/")
    parser.add_argument("--release", default="2026Q4")
    parser.add_argument("--sequence", type=int, default=2)
    parser.add_argument("--hardware", default="cpu-dev")
    args = parser.parse_args(argv)

    base = args.state_dir / "demo-vendor"
    keys = demo_vendor(base)
    trust_root = args.state_dir / "bundle-trust-root.json"
    if not trust_root.exists():
        shutil.copyfile(base / "roots" / "1.root.json", trust_root)
    media = args.state_dir / "media"
    target = media / f"ENCLAVE-{args.release}"
    if target.exists():
        shutil.rmtree(target)
    with tempfile.TemporaryDirectory(dir=args.state_dir) as tmp:
        source = Path(tmp) / "release"
        shutil.copytree(ROOT / "policies", source / "policies")
        retention = source / "policies" / "retention.yaml"
        retention.write_text(retention.read_text() + f"# updated by demo bundle {args.release}\n")
        if args.model:
            shutil.copytree(args.model, source / "models" / args.model.name)
        release = ReleaseInfo(
            PRODUCT,
            args.release,
            args.sequence,
            "stable",
            (args.hardware,),
            datetime.now(UTC).replace(microsecond=0),
        )
        bundle = vendor.build_bundle(source, Path(tmp) / "out", release=release, roots_dir=base / "roots")
        vendor.sign_bundle(
            bundle,
            targets_signers=[
                vendor.load_signer(keys / "targets-1.key"),
                vendor.load_signer(keys / "targets-2.key"),
            ],
            release_signer=vendor.load_signer(keys / "release.key"),
        )
        media.mkdir(parents=True, exist_ok=True)
        shutil.move(str(bundle), target)
    print(f"demo bundle: {target}\ntrust root: {trust_root}\nOpen the console's Updates page (appliance admin).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
