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
# The first word of a command line -> the one module that registers it. A command names its area first, so
# only that module is imported (`enclavectl bundle import` does not pay for the engines' and audit's imports,
# about half a second on a busy 2-core box); anything else (--help, a typo) loads every area.
AREA_OF_COMMAND = {
    "audit": "appliance.audit_cli",
    "bundle": "appliance.bundles.cli",
    "hardware": "appliance.engines.cli",
    "engine": "appliance.engines.cli",
}


def build_parser(modules: Sequence[str] = AREAS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enclavectl", description="Enclave appliance administration")
    subparsers = parser.add_subparsers(dest="area", required=True, metavar="AREA")
    for module_name in modules:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    module = AREA_OF_COMMAND.get(words[0]) if words else None
    parser = build_parser((module,) if module else AREAS)
    args = parser.parse_args(words)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
