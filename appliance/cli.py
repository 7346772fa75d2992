"""enclavectl: the admin and vendor command line.

Each area registers its own sub-commands from a module listed in AREAS, exposing
`register(subparsers: argparse._SubParsersAction) -> None`; each sub-command sets `func(args) -> int`.
Exit codes: 0 success, 1 the check failed (e.g. a broken audit chain), 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

AREAS = (
    "appliance.audit_cli",
    "appliance.bundles.cli",
    "appliance.engines.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enclavectl", description="Enclave appliance administration")
    subparsers = parser.add_subparsers(dest="area", required=True, metavar="AREA")
    for module_name in AREAS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
