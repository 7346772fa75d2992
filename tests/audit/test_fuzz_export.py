"""Property-based fuzzing of an audit export as the auditor's tool meets it: hostile input on a stick.

One real export (events sealed in three runs, so three signed checkpoints, one event with odd unicode) is
made once per module through the real sealer and `export_trail` on PostgreSQL, inside a transaction that is
rolled back afterwards. Each example mutates a copy of it (JSON records of the wrong shape or type, raw
damage to the bytes, lines dropped, repeated or reordered, a forged chain re-hashed after an edit, a public
key of the wrong kind) and runs the real `enclavectl audit verify --export` in-process. The answer must be:
- exit 1 with the chain broken and every finding a stable `audit.*` code, or
- exit 2 with `audit.export_unreadable` on stderr,
- exit 0 only when the mutation provably changes nothing (`_acceptable`, rules independent of the verifier:
  the same JSON values, checkpoints a subset still anchoring both ends, or what a retention purge leaves);
never an exception out of `main`, never "intact" with another exit code, never a control character that an
attacker could use to repaint the auditor's terminal.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519
from hypothesis import given
from hypothesis import strategies as st

from appliance import cli
from appliance.auditchain import EVENT_FIELDS, chain_hash
from tests.fixtures.fuzzing import fuzz

# The export is made on the test database (pytest-django creates it only for a module that asks for it).
pytestmark = pytest.mark.django_db

FINDING_LINE = re.compile(r"  audit\.[a-z_]+ +\S.*")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True, repr=False)
class Export:
    events: bytes
    checkpoints: bytes
    key: bytes  # the trusted public key (PEM)
    other_keys: tuple[bytes, ...]  # PEMs of other kinds, and another Ed25519 key


@pytest.fixture(scope="module")
def export(django_db_setup, django_db_blocker, tmp_path_factory: pytest.TempPathFactory) -> Export:
    from django.db import transaction
    from django.test import override_settings

    from mgmt.audit.seal import seal_pending
    from mgmt.audit.services import record_event
    from mgmt.audit.verify import export_trail

    class _Rollback(Exception):
        pass

    base = tmp_path_factory.mktemp("audit-fuzz")
    key_path = base / "keys" / "audit-ed25519.pem"
    with (
        django_db_blocker.unblock(),
        override_settings(AUDIT_KEY_PATH=key_path),
        contextlib.suppress(_Rollback),
        transaction.atomic(),
    ):
        for run in range(3):
            for i in range(4):
                record_event(
                    "test.event",
                    actor_label=f"user{i}",
                    data={"n": run * 10 + i, "text": "naïve – ü \u2028 😀", "ratio": 0.1 * i, "big": 2**70},
                )
            seal_pending(grace_seconds=0)
        export_trail(base / "export")
        raise _Rollback  # leave the shared test database as it was
    directory = base / "export"
    others = [
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(),
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        ed448.Ed448PrivateKey.generate().public_key(),
        x25519.X25519PrivateKey.generate().public_key(),
        ed25519.Ed25519PrivateKey.generate().public_key(),
    ]
    pems = [k.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo) for k in others]
    private = key_path.read_bytes()
    der = serialization.load_pem_public_key((directory / "public-key.pem").read_bytes()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    unknown_oid = der.replace(bytes([0x2B, 0x65, 0x70]), bytes([0x2B, 0x65, 0x7F]))  # 1.3.101.127
    pems.append(b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(unknown_oid) + b"-----END PUBLIC KEY-----\n")
    pems.append(private)  # the private key where the public one belongs
    return Export(
        events=(directory / "events.jsonl").read_bytes(),
        checkpoints=(directory / "checkpoints.jsonl").read_bytes(),
        key=(directory / "public-key.pem").read_bytes(),
        other_keys=tuple(pems),
    )


# --- the oracle: rules independent of the verifier ------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def _meaning(raw: bytes) -> list[str] | None:
    """Each non-blank line's JSON value, re-encoded with types kept apart (1, 1.0 and true differ)."""
    out = []
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            value = json.loads(line.decode("utf-8"), object_pairs_hook=_no_duplicates)
            out.append(json.dumps(value, sort_keys=True))
        except (ValueError, RecursionError):
            return None
    return out


def _public_raw(pem: bytes) -> bytes | None:
    try:
        key = serialization.load_pem_public_key(pem)
    except Exception:
        return None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return None
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _acceptable(original: Export, events: bytes, checkpoints: bytes, key: bytes) -> bool:
    """May verify say "intact"? Only if every event line means what an original line means, contiguously
    (a slice: a retention purge leaves a tail, and an export cannot prove what came after its last signed
    checkpoint), the checkpoints are original ones, none beyond the slice, with the slice's last row and the
    anchor before its first row among them."""
    if _public_raw(key) is None or _public_raw(key) != _public_raw(original.key):
        return False
    new_events, old_events = _meaning(events), _meaning(original.events)
    new_cps, old_cps = _meaning(checkpoints), _meaning(original.checkpoints)
    if new_events is None or new_cps is None or old_events is None or old_cps is None:
        return False
    if len(set(new_cps)) != len(new_cps) or not set(new_cps) <= set(old_cps):
        return False
    cp_seqs = {json.loads(cp)["seq"] for cp in new_cps}
    if not new_events:
        return not new_cps  # an empty export: all an auditor can tell is that it is empty
    n = len(new_events)
    starts = [i for i in range(len(old_events) - n + 1) if old_events[i : i + n] == new_events]
    for i in starts:
        first, last = i + 1, i + n  # seqs in the original start at 1 and have no gaps
        if max(cp_seqs, default=0) == last and (first == 1 or first - 1 in cp_seqs):
            return True
    return False


# --- running the real tool ------------------------------------------------------------------------------


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="audit-fuzz-") as name:
        yield Path(name)


def _verify(original: Export, events: bytes, checkpoints: bytes, key: bytes | None = None) -> tuple[int, str, str]:
    key = original.key if key is None else key
    with _scratch() as scratch:
        directory = scratch / "export"
        directory.mkdir()
        (directory / "events.jsonl").write_bytes(events)
        (directory / "checkpoints.jsonl").write_bytes(checkpoints)
        (directory / "public-key.pem").write_bytes(original.key)
        (scratch / "trusted.pem").write_bytes(key)
        out, err = io.StringIO(), io.StringIO()
        argv = ["audit", "verify", "--export", str(directory), "--public-key", str(scratch / "trusted.pem")]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)  # any exception out of main is a bug
    stdout, stderr = out.getvalue(), err.getvalue().replace(str(scratch), "SCRATCH")
    assert not CONTROL.search(stdout) and not CONTROL.search(stderr), (stdout, stderr)
    if code == 0:
        assert _acceptable(original, events, checkpoints, key), f"tampered export reported intact: {stdout}"
        assert " chain intact" in stdout and not stderr
    elif code == 1:
        lines = stdout.splitlines()
        assert "CHAIN BROKEN" in lines[0] and "intact" not in stdout, stdout
        assert len(lines) > 1 and all(FINDING_LINE.fullmatch(line) for line in lines[1:]), stdout
    else:
        assert code == 2, code
        assert stdout == "" and stderr.startswith("enclavectl: audit.export_unreadable: "), (stdout, stderr)
    return code, stdout, stderr


def _lines(raw: bytes) -> list[bytes]:
    return raw.splitlines(keepends=True)


def test_the_untouched_export_is_intact(export):
    code, stdout, _ = _verify(export, export.events, export.checkpoints)
    assert code == 0 and stdout.startswith("12 events, chain intact"), stdout


def test_a_key_given_twice_is_unreadable(export):
    """Was intact: Python keeps the last "actor", a reader that keeps the first sees "mallory"."""
    events = export.events.replace(b'"actor": "user2"', b'"actor": "mallory", "actor": "user2"', 1)
    code, _, stderr = _verify(export, events, export.checkpoints)
    assert code == 2 and "same key twice" in stderr


@pytest.mark.parametrize(("line", "seq"), [(0, True), (1, 2.0), (1, "2")])
def test_a_seq_that_only_equals_the_number_is_unreadable(export, line, seq):
    """`true` and `2.0` compare equal to 1 and 2 in Python: they were verified as intact."""
    lines = _lines(export.events)
    record = json.loads(lines[line])
    record["seq"] = seq
    lines[line] = json.dumps(record).encode() + b"\n"
    code, _, stderr = _verify(export, b"".join(lines), export.checkpoints)
    assert code == 2 and "seq must be a positive integer" in stderr


def test_an_event_id_that_is_not_a_number_is_unreadable(export):
    """Was printed raw in the finding: escape sequences could repaint the auditor's terminal as "intact"."""
    lines = _lines(export.events)
    record = json.loads(lines[6])
    record["event"]["id"] = "\x1b[2J\x1b[H12 events, chain intact"
    lines[6] = json.dumps(record).encode() + b"\n"
    code, stdout, stderr = _verify(export, b"".join(lines), export.checkpoints)
    assert code == 2 and "event id must be an integer" in stderr and stdout == ""


# --- structured mutations of one JSON record --------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**63, 2**64 + 1, 10**300, 1.0, -0.0, 1e308, float("inf"), float("nan")]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["", "0" * 64, "A" * 64, "g" * 64, "\x1b[2J", "\ud800", "é", "\u2028", "0x10"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            paths += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            paths += _paths(v, (*prefix, i))
    return paths


def _mutate_record(data: st.DataObject, record: Any) -> Any:
    path = data.draw(st.sampled_from(_paths(record)), label="path")
    op = data.draw(st.sampled_from(["replace", "delete", "add", "wrap"]), label="op")
    if not path:
        return data.draw(VALUES, label="whole record") if op != "wrap" else [record]
    parent = record
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if op == "replace":
        parent[last] = data.draw(VALUES, label="value")
    elif op == "delete":
        del parent[last]
    elif op == "add" and isinstance(parent, dict):
        parent[data.draw(st.sampled_from(["extra", "seq", "Event", ""]))] = data.draw(VALUES, label="added")
    else:
        parent[last] = [parent[last]] if data.draw(st.booleans()) else {"v": parent[last]}
    return record


def _dump(data: st.DataObject, value: Any) -> bytes:
    ascii_only = data.draw(st.booleans(), label="ensure_ascii")
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass") + b"\n"


@fuzz(300)
@given(data=st.data())
def test_a_mutated_event_record_is_refused_or_named(export, data):
    lines = _lines(export.events)
    index = data.draw(st.integers(0, len(lines) - 1), label="line")
    lines[index] = _dump(data, _mutate_record(data, json.loads(lines[index])))
    _verify(export, b"".join(lines), export.checkpoints)


@fuzz(150)
@given(data=st.data())
def test_a_mutated_checkpoint_record_is_refused_or_named(export, data):
    lines = _lines(export.checkpoints)
    index = data.draw(st.integers(0, len(lines) - 1), label="line")
    lines[index] = _dump(data, _mutate_record(data, json.loads(lines[index])))
    _verify(export, export.events, b"".join(lines))


# --- raw damage to the bytes ----------------------------------------------------------------------------

TOKENS = [
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",  # an encoded surrogate: not UTF-8
    b"\x00",
    b"\n",
    b"\r",
    b"\r\n",
    b'"',
    b"\\",
    b"\\ud800",
    b"\\u001b[2J",
    b"[" * 50_000,
    b'{"a":' * 50_000,
    b"9" * 5000,
    b"1e400",
    b"NaN",
    b"-",
    b"\xef\xbb\xbf",  # a BOM
    b"\x1b[2J",
    b"\xe2\x80\xa8",  # U+2028
    b"\xc2\x85",  # U+0085, a line break to str.splitlines
]


def test_a_record_nested_deeper_than_the_recursion_limit_is_unreadable(export):
    """Was a RecursionError traceback out of main."""
    deep = b'{"seq": 1, "hash": "' + b"0" * 64 + b'", "event": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    code, _, stderr = _verify(export, deep + export.events, export.checkpoints)
    assert code == 2 and "nested too deeply" in stderr


@fuzz(250)
@given(data=st.data(), which=st.sampled_from(["events", "checkpoints"]))
def test_raw_damage_is_refused_or_named(export, data, which):
    raw = export.events if which == "events" else export.checkpoints
    pos = data.draw(st.integers(0, len(raw)), label="pos")
    if data.draw(st.booleans(), label="truncate"):
        mutated = raw[:pos]
    else:
        cut = data.draw(st.integers(0, 4), label="cut")
        token = data.draw(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=8)), label="token")
        mutated = raw[:pos] + token + raw[pos + cut :]
    if which == "events":
        _verify(export, mutated, export.checkpoints)
    else:
        _verify(export, export.events, mutated)


# --- whole lines: dropped, repeated, reordered, blank; and a chain forged by re-hashing ---------------------


def _shuffle_lines(data: st.DataObject, raw: bytes, label: str) -> bytes:
    lines = _lines(raw)
    for _ in range(data.draw(st.integers(1, 3), label=f"{label} ops")):
        op = data.draw(st.sampled_from(["drop", "repeat", "swap", "blank", "drop_tail", "drop_head"]), label=label)
        if not lines:
            break
        i = data.draw(st.integers(0, len(lines) - 1))
        j = data.draw(st.integers(0, len(lines) - 1))
        if op == "drop":
            del lines[i]
        elif op == "repeat":
            lines.insert(j, lines[i])
        elif op == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "blank":
            lines.insert(j, data.draw(st.sampled_from([b"\n", b"  \n", b"\t\r\n"])))
        elif op == "drop_tail":
            lines = lines[:i]
        else:
            lines = lines[i:]
    return b"".join(lines)


def test_dropping_the_last_event_is_named(export):
    """Was reported intact: the newest signed checkpoint was simply never reached."""
    code, stdout, _ = _verify(export, b"".join(_lines(export.events)[:-1]), export.checkpoints)
    assert code == 1 and "audit.seal_gap" in stdout


def test_an_export_after_a_retention_purge_still_verifies(export):
    """The whole-trail checks must not refuse what a purge leaves: a head cut at a signed checkpoint."""
    code, stdout, _ = _verify(export, b"".join(_lines(export.events)[4:]), export.checkpoints)
    assert code == 0 and stdout.startswith("8 events, chain intact"), stdout


def test_dropping_every_checkpoint_is_named(export):
    """Was "12 events, chain intact, nothing sealed yet": the chain has no key, only checkpoints do."""
    code, stdout, _ = _verify(export, export.events, b"")
    assert code == 1 and "audit.tail_unsigned" in stdout


@fuzz(200)
@given(data=st.data(), where=st.sampled_from(["events", "checkpoints", "both"]))
def test_lines_dropped_repeated_or_reordered_are_named(export, data, where):
    events = export.events if where == "checkpoints" else _shuffle_lines(data, export.events, "events")
    checkpoints = export.checkpoints if where == "events" else _shuffle_lines(data, export.checkpoints, "cps")
    _verify(export, events, checkpoints)


def _forge(export: Export, index: int, drop_from: int) -> tuple[bytes, bytes]:
    """Edit event `index` and re-hash the chain from there (it has no key), dropping checkpoints from
    seq `drop_from` on: what someone without the audit key can do best."""
    records = [json.loads(line) for line in _lines(export.events)]
    records[index]["event"]["actor"] = "mallory"
    previous = bytes.fromhex(records[index - 1]["hash"]) if index else bytes(32)
    for record in records[index:]:
        previous = chain_hash(previous, [record["event"][name] for name in EVENT_FIELDS])
        record["hash"] = previous.hex()
    checkpoints = [line for line in _lines(export.checkpoints) if json.loads(line)["seq"] < drop_from]
    events = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)
    return events, b"".join(checkpoints)


@fuzz(30)
@given(data=st.data())
def test_a_chain_rehashed_after_an_edit_is_caught(export, data):
    n = len(_lines(export.events))
    index = data.draw(st.integers(0, n - 1), label="edited")
    drop_from = data.draw(st.integers(1, index + 1), label="checkpoints dropped from seq")
    events, checkpoints = _forge(export, index, drop_from)
    code, stdout, _ = _verify(export, events, checkpoints)
    assert code == 1, stdout


# --- the trusted public key -----------------------------------------------------------------------------


@fuzz(40)
@given(data=st.data())
def test_a_public_key_of_the_wrong_kind_or_garbage_is_refused(export, data):
    key = data.draw(
        st.one_of(
            st.sampled_from(export.other_keys),
            st.binary(max_size=64),
            st.builds(lambda cut: export.key[:cut], st.integers(0, len(export.key) - 1)),
            st.builds(lambda b: export.key.replace(b"MCow", b), st.sampled_from([b"MCox", b"!!!!", b"\xff\xfe"])),
        ),
        label="key",
    )
    _verify(export, export.events, export.checkpoints, key)  # 0 only for the same Ed25519 key


def test_a_missing_file_or_directory_is_unreadable(export, tmp_path):
    argv = ["audit", "verify", "--export", str(tmp_path / "nowhere"), "--public-key", str(tmp_path / "k.pem")]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(argv) == 2
    assert "audit.export_unreadable" in err.getvalue()
    for name in ("events.jsonl", "checkpoints.jsonl"):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "events.jsonl").write_bytes(export.events)
        (directory / "checkpoints.jsonl").write_bytes(export.checkpoints)
        (directory / name).unlink()
        (directory / name).mkdir()
        (tmp_path / "k.pem").write_bytes(export.key)
        argv = ["audit", "verify", "--export", str(directory), "--public-key", str(tmp_path / "k.pem")]
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(argv) == 2
