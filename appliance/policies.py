"""Policy documents: YAML files in the active policy directory, each validated by its JSON Schema.

A policy that does not validate is refused with a PolicyError naming the file and the problem; the
appliance never runs on a half-understood policy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

__all__ = ["PolicyError", "load_policy"]


class PolicyError(Exception):
    code = "policy.invalid"


def load_policy(policy_dir: Path, name: str) -> dict[str, Any]:
    document_path = policy_dir / f"{name}.yaml"
    schema_path = policy_dir / "schemas" / f"{name}.schema.json"
    try:
        document = yaml.safe_load(document_path.read_text(encoding="utf-8"))
        schema = json.loads(schema_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PolicyError(f"policy {name!r}: {exc.filename} is missing") from exc
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise PolicyError(f"policy {name!r}: cannot be parsed: {exc}") from exc
    errors = sorted(Draft202012Validator(schema).iter_errors(document), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(top level)"
        raise PolicyError(f"policy {name!r} at {where}: {errors[0].message}")
    result: dict[str, Any] = document
    return result
