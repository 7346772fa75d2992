"""The audit export's format, read strictly: an export travels on a stick to an auditor's machine, so it is
hostile input, and a record the verifier accepts must mean exactly one thing.

DIR/events.jsonl       one {"seq": n, "hash": hex, "event": {...EVENT_FIELDS}} per line, in seq order
DIR/checkpoints.jsonl  one Checkpoint.as_dict() per line
DIR/public-key.pem     a copy for convenience; verify with the key you trust, not this copy
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance.auditchain import EVENT_FIELDS, Checkpoint, SealedRow

__all__ = ["read_export"]

# Anything not exactly the format is a ValueError naming the file and line.
_HASH_HEX = re.compile(r"[0-9a-f]{64}")
_RECORD_KEYS = frozenset({"seq", "hash", "event"})
_EVENT_KEYS = frozenset(EVENT_FIELDS)
_CHECKPOINT_TYPES: dict[str, type] = {
    "seq": int,
    "event_id": int,
    "hash": str,
    "signed_at": str,
    "key_id": str,
    "signature": str,
}


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):  # readers disagree on which duplicate wins: refuse the ambiguity
        raise ValueError("an object has the same key twice")
    return value


_decode = json.JSONDecoder(object_pairs_hook=_unique_keys).decode


def _lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) for each non-blank line of `path`, read as UTF-8 and split on LF only."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                yield number, _decode(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise ValueError(f"{where}: not UTF-8 text") from None
            except RecursionError:
                raise ValueError(f"{where}: JSON nested too deeply") from None
            except ValueError as exc:
                raise ValueError(f"{where}: not a valid JSON record ({exc})") from None


def _is_int(value: object) -> bool:
    return type(value) is int  # not bool, not float


def _checkpoint(where: str, record: Any) -> Checkpoint:
    if not isinstance(record, dict) or record.keys() != _CHECKPOINT_TYPES.keys():
        raise ValueError(f"{where}: a checkpoint is an object with exactly the keys {', '.join(_CHECKPOINT_TYPES)}")
    for name, kind in _CHECKPOINT_TYPES.items():
        if type(record[name]) is not kind:
            raise ValueError(f"{where}: checkpoint field {name} must be of type {kind.__name__}")
    if record["seq"] < 1 or not _HASH_HEX.fullmatch(record["hash"]):
        raise ValueError(f"{where}: checkpoint seq must be positive and hash 64 lowercase hex digits")
    return Checkpoint(**record)


def _sealed_row(where: str, record: Any) -> SealedRow:
    if not isinstance(record, dict) or record.keys() != _RECORD_KEYS:
        raise ValueError(f"{where}: a sealed row is an object with exactly the keys seq, hash and event")
    seq, stored, event = record["seq"], record["hash"], record["event"]
    if not _is_int(seq) or seq < 1:
        raise ValueError(f"{where}: seq must be a positive integer")
    if not isinstance(stored, str) or not _HASH_HEX.fullmatch(stored):
        raise ValueError(f"{where}: hash must be 64 lowercase hex digits")
    if event is None:
        return seq, None, stored
    if not isinstance(event, dict) or event.keys() != _EVENT_KEYS:
        fields = ", ".join(EVENT_FIELDS)
        raise ValueError(f"{where}: the event must be null or an object with exactly the fields {fields}")
    if not _is_int(event["id"]):  # reports name it: never echo text from the stick to a terminal
        raise ValueError(f"{where}: the event id must be an integer")
    return seq, [event[name] for name in EVENT_FIELDS], stored


def read_export(directory: Path) -> tuple[list[Checkpoint], Iterator[SealedRow]]:
    """Parse an export strictly: ValueError (naming file and line) for anything not exactly the format."""
    checkpoints: dict[int, Checkpoint] = {}
    for number, record in _lines(directory / "checkpoints.jsonl"):
        checkpoint = _checkpoint(f"checkpoints.jsonl line {number}", record)
        if checkpoint.seq in checkpoints:
            raise ValueError(f"checkpoints.jsonl line {number}: a second checkpoint for seq {checkpoint.seq}")
        checkpoints[checkpoint.seq] = checkpoint

    def rows() -> Iterator[SealedRow]:
        for number, record in _lines(directory / "events.jsonl"):
            yield _sealed_row(f"events.jsonl line {number}", record)

    return list(checkpoints.values()), rows()
