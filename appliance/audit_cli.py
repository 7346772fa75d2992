"""`enclavectl audit ...`: verify the trail (in the database, or an export offline), export it, seal now."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm

from appliance.auditchain import ChainVerifier, Report, load_public_key
from appliance.auditexport import read_export


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = subparsers.add_parser("audit", help="audit trail: verify, export, seal")
    commands = audit.add_subparsers(dest="command", required=True, metavar="COMMAND")

    verify = commands.add_parser("verify", help="check the hash chain and the signed checkpoints")
    verify.add_argument("--export", type=Path, help="verify an exported directory instead of the database")
    verify.add_argument("--public-key", type=Path, help="the appliance's audit public key (with --export)")
    verify.set_defaults(func=_verify)

    export = commands.add_parser("export", help="export the trail (JSONL + checkpoints) into an empty directory")
    export.add_argument("directory", type=Path)
    export.set_defaults(func=_export)

    seal = commands.add_parser("seal", help="seal pending events now (celery beat does this every few seconds)")
    seal.set_defaults(func=_seal)


def _print_report(report: Report) -> int:
    print(report.summary())
    for finding in report.findings:
        where = f"seq {finding.seq}" if finding.seq is not None else f"event {finding.event_id}"
        print(f"  {finding.code:28} {where:>14}  {finding.message}")
    return 0 if report.intact else 1


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mgmt.settings")
    import django

    django.setup()


def _verify(args: Any) -> int:
    if args.export is not None:
        if args.public_key is None:
            print(
                "enclavectl: --export needs --public-key (the key you trust, not the copy in the export)",
                file=sys.stderr,
            )
            return 2
        try:
            checkpoints, rows = read_export(args.export)
            report = ChainVerifier(load_public_key(args.public_key), checkpoints).verify(rows, complete=True)
        except (OSError, ValueError, KeyError, TypeError, UnsupportedAlgorithm, RecursionError) as exc:
            print(f"enclavectl: audit.export_unreadable: {exc}", file=sys.stderr)
            return 2
        return _print_report(report)
    _django()
    from mgmt.audit.verify import verify_database

    return _print_report(verify_database())


def _export(args: Any) -> int:
    _django()
    from django.db import transaction

    from mgmt.audit.services import record_event
    from mgmt.audit.verify import export_trail

    try:
        events, checkpoints = export_trail(args.directory)
    except (OSError, FileExistsError) as exc:
        print(f"enclavectl: audit.export_failed: {exc}", file=sys.stderr)
        return 2
    with transaction.atomic():
        record_event(
            "audit.export",
            actor_label="enclavectl",
            data={"events": events, "directory": str(args.directory)},
        )
    print(f"exported {events} events and {checkpoints} checkpoints to {args.directory}")
    return 0


def _seal(args: Any) -> int:
    _django()
    from mgmt.audit.seal import seal_pending

    result = seal_pending()
    print(f"sealed {result.sealed} events; chain length {result.last_seq}")
    return 0
