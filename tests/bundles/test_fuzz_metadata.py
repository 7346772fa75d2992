"""Property-based fuzzing of what a stick can hold: whatever it is, the appliance either accepts a bundle
that is genuinely acceptable or refuses it with a BundleError whose code errors.py defines, and a refusal
changes nothing on the appliance (state.json's record of the last outcome aside).

Every example works on a copy of one good bundle (2026Q4, #2) against one live appliance (2026Q3, #1,
activated; put back as it was whenever an example changed it), made once per module with the vendor's real
keys, through the real UpdateManager:
- the signed part of targets/snapshot/timestamp.json or of a new 2.root.json mutated structurally and then
  signed again with the legitimate keys (the roles above re-pinned), so the mutation passes the signature
  checks and reaches python-tuf's parsing and ours; odd release names and signed target paths;
- what no key covers: raw damage to the bytes of a metadata file (truncation, bit flips, encodings,
  nesting, giant numbers), unsigned fields, forged signatures, and names on the stick that are not UTF-8
  or hold control characters;
- a bundle that passes verification is imported, checked again as the root-side applier checks it,
  activated, and must not break the verification of the next good bundle (2026Q5, #3).

A refusal's message must also say what happened in text a person and the console's database can take (no
NUL, no lone surrogate, no control characters): the console stores it in PostgreSQL (ImportJob.error_message,
the audit event's jsonb), which refuses NUL and lone surrogates.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, currently_in_test_context, event, given
from hypothesis import strategies as st
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata
from tuf.api.serialization.json import JSONSerializer

from appliance.bundles import errors, vendor
from appliance.bundles.errors import BundleError
from appliance.bundles.manager import UpdateManager
from appliance.bundles.rootside import private_copy
from appliance.bundles.verify import VerifiedBundle
from tests.bundles.conftest import IDENTITY, PAYLOAD, Appliance, VendorKit, _make_kit, healthy
from tests.fixtures.fuzzing import fuzz

CODES = {
    cls.code
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, BundleError) and cls is not BundleError
}


ROLES = ("timestamp", "snapshot", "targets")
ABOVE = {"targets": ("snapshot", "timestamp"), "snapshot": ("timestamp",), "timestamp": ()}
SAFE_COMPONENT = re.compile(r"[A-Za-z0-9._+@=-]{1,255}")
RELEASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


# --- the module's vendor, bundle and live appliance -----------------------------------------------
@dataclass
class Env:
    base: Path
    kit: VendorKit
    bundle: Path  # the good bundle, never modified
    next_bundle: Path  # a good 2026Q5 (#3): after a fuzzed bundle was activated, the next one must still verify
    state_template: Path
    appliance: Appliance
    signed: dict[str, dict[str, Any]]  # role -> the good bundle's metadata as JSON (and "root": 1.root.json)
    signers: dict[str, Signer]
    template_view: dict[str, Any]
    root2: bytes  # a genuine 2.root.json (the same keys), signed by two keys of root 1

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis prints it with every example
        printer.text(f"Env({self.base})")

    @property
    def manager(self) -> UpdateManager:
        return self.appliance.manager()

    def reset(self) -> dict[str, Any]:
        """Give the next example the live appliance as it was made (after an accepted import, say)."""
        if view(self.appliance.state_dir) != self.template_view:
            shutil.rmtree(self.appliance.state_dir)
            shutil.copytree(self.state_template, self.appliance.state_dir, symlinks=True)
        return self.template_view

    @contextmanager
    def stick(self) -> Iterator[Path]:
        """A fresh copy of the good bundle, removed afterwards."""
        work = Path(tempfile.mkdtemp(dir=self.base, prefix="ex-"))
        try:
            bundle = work / self.bundle.name
            shutil.copytree(self.bundle, bundle)
            yield bundle
        finally:
            shutil.rmtree(work)


def view(state_dir: Path) -> dict[str, Any]:
    """Everything an import may change, byte for byte; state.json's record of the last outcome left out."""
    root = state_dir / "bundles"
    files: dict[str, Any] = {}
    for item in sorted(root.rglob("*")) if root.exists() else []:
        rel = str(item.relative_to(root))
        if rel in ("lock", "state.json"):
            continue
        st_ = item.lstat()
        if item.is_symlink():
            files[rel] = ("link", os.readlink(item))
        elif item.is_dir():
            files[rel] = ("dir", st_.st_mode)
        else:
            files[rel] = ("file", st_.st_mode, hashlib.sha256(item.read_bytes()).hexdigest())
    state = json.loads((root / "state.json").read_bytes()) if (root / "state.json").exists() else {}
    state.pop("last", None)
    return {"files": files, "state": state}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    base = tmp_path_factory.mktemp("fuzz")
    kit = _make_kit(base / "vendor")
    shipped = base / "image" / "1.root.json"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes((kit.roots_dir / "1.root.json").read_bytes())
    template = Appliance(base / "state-template", shipped)
    manager = template.manager()
    manager.import_bundle(kit.build(base / "q3", PAYLOAD, "2026Q3", 1))
    manager.activate(healthy)
    bundle = kit.build(base / "q4", PAYLOAD, "2026Q4", 2)
    next_bundle = kit.build(base / "q5", PAYLOAD, "2026Q5", 3)
    live = Appliance(base / "state", shipped)
    shutil.copytree(template.state_dir, live.state_dir, symlinks=True)
    signed = {role: json.loads((bundle / "metadata" / f"{role}.json").read_bytes()) for role in ROLES}
    signed["root"] = json.loads((kit.roots_dir / "1.root.json").read_bytes())
    names = ("targets-1", "targets-2", "release", "root-1", "root-2")
    return Env(
        base=base,
        kit=kit,
        bundle=bundle,
        next_bundle=next_bundle,
        state_template=template.state_dir,
        appliance=live,
        signed=signed,
        signers={name: kit.signer(name) for name in names},
        template_view=view(template.state_dir),
        root2=_root2(kit),
    )


def _root2(kit: VendorKit) -> bytes:
    signers = [kit.signer("root-1"), kit.signer("root-2")]
    rotated = vendor.rotate_root(
        Metadata.from_file(str(kit.roots_dir / "1.root.json")),  # type: ignore[arg-type]
        root_keys=[kit.public[f"root-{i}"] for i in (1, 2, 3)],
        targets_keys=[kit.public[f"targets-{i}"] for i in (1, 2, 3)],
        release_key=kit.public["release"],
        old_signers=signers,
        new_signers=signers,
    )
    return rotated.to_bytes(JSONSerializer(compact=False))


# --- signing what the fuzzer made -------------------------------------------------------------------
def _signatures(signed: Any, signers: list[Signer]) -> list[dict[str, str]] | None:
    """Sign the canonical form of `signed` as python-tuf checks it; None where it has none (a float)."""
    try:
        payload = encode_canonical(signed).encode()
    except Exception:
        return None
    return [{"keyid": s.public_key.keyid, "sig": s.sign(payload).signature} for s in signers]


def _dump(metadata: dict[str, Any]) -> bytes:
    return json.dumps(metadata, indent=1).encode()


def _pin(meta: Any, data: bytes, version: Any) -> None:
    """Point a role's entry for the role below at `data` (when the entry is still a dict)."""
    if isinstance(meta, dict):
        meta["length"] = len(data)
        meta["hashes"] = {"sha256": hashlib.sha256(data).hexdigest()}
        if isinstance(version, int) and not isinstance(version, bool) and version > 0:
            meta["version"] = version


def seal(env: Env, bundle: Path, role: str, metadata: dict[str, Any], *, resign: bool = True) -> None:
    """Write `role` signed again by its legitimate keys (unless not `resign`: as it is), then re-pin and
    re-sign the roles above it."""
    keys = {"targets": ["targets-1", "targets-2"], "snapshot": ["release"], "timestamp": ["release"]}
    docs = {r: copy.deepcopy(env.signed[r]) for r in ROLES}
    docs[role] = metadata
    for current in (role, *ABOVE[role]):
        doc = docs[current]
        if current != role:
            below = {"snapshot": "targets", "timestamp": "snapshot"}[current]
            below_bytes = (bundle / "metadata" / f"{below}.json").read_bytes()
            below_signed = docs[below].get("signed") if isinstance(docs[below], dict) else None
            version = below_signed.get("version") if isinstance(below_signed, dict) else None
            meta = doc["signed"]["meta"].get(f"{below}.json")
            _pin(meta, below_bytes, version)
        if isinstance(doc, dict) and "signed" in doc and (resign or current != role):
            sigs = _signatures(doc["signed"], [env.signers[k] for k in keys[current]])
            if sigs is not None:
                doc["signatures"] = sigs
        (bundle / "metadata" / f"{current}.json").write_bytes(_dump(doc))


# --- the property -------------------------------------------------------------------------------------
def assert_clean(error: BundleError) -> None:
    assert type(error) is not BundleError and error.code in CODES, f"unexpected code {error.code}: {error}"
    # The console keeps the message in PostgreSQL text and jsonb: no NUL, no lone surrogate; and a person
    # reads it in a terminal: no control characters.
    assert error.message.isprintable(), f"{error.code}: the message is not printable text: {error.message!r}"
    error.message.encode("utf-8")
    assert not error.message.rstrip().endswith(":"), f"{error.code}: the message does not say what happened"


def assert_acceptable(bundle: VerifiedBundle) -> None:
    """What an accepted bundle must be, checked independently of the verifier's own rules."""
    release = bundle.release
    assert RELEASE_NAME.fullmatch(release.release), release.release
    assert (release.product, release.channel) == ("enclave", "stable")
    assert "cpu-dev" in release.hardware
    assert all(isinstance(h, str) and h.isprintable() for h in release.hardware), release.hardware
    assert type(release.sequence) is int and release.sequence > 1
    assert json.loads(bundle.metadata["targets"])["signed"]["version"] == release.sequence
    assert release.issued.tzinfo is not None
    assert release.issued <= datetime.now(UTC) + timedelta(days=366), release.issued
    for entry in bundle.targets:
        parts = entry.path.split("/")
        assert len(entry.path) <= 1024 and len(parts) <= 32, entry.path
        for part in parts:
            assert SAFE_COMPONENT.fullmatch(part) and part not in (".", "..") and not part.endswith("."), entry.path
        assert type(entry.length) is int and entry.length >= 0, entry
        assert isinstance(entry.sha256, str) and re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry


def check(env: Env, bundle: Path) -> str:
    """Verify, then import: a clean refusal that changes nothing, or an acceptable bundle. Returns the code
    (or "imported"); `pytest --hypothesis-show-statistics` lists how often each outcome was reached."""
    outcome = _check(env, bundle)
    if currently_in_test_context():
        event(outcome)
    return outcome


def _check(env: Env, bundle: Path) -> str:
    before = env.reset()
    manager = env.manager
    verified: VerifiedBundle | None = None
    refused: BundleError | None = None
    try:
        verified = manager.verify(bundle)
    except BundleError as error:
        refused = error
    if refused is not None:
        assert_clean(refused)
        with pytest.raises(BundleError) as caught:
            manager.import_bundle(bundle)
        assert caught.value.code == refused.code, (refused, caught.value)
        # verify() writes nothing, and import_bundle() only records the refusal in state.json's "last".
        assert view(env.appliance.state_dir) == before, f"a refused import ({refused.code}) changed the appliance"
        assert manager.read_state()["last"]["code"] == refused.code
        return refused.code
    assert verified is not None
    assert_acceptable(verified)
    try:
        manager.import_bundle(bundle)
    except BundleError as error:
        # Staging failed after verification (a target's content differs from its signed hash, say): the
        # verified objects it copied stay for a resume; nothing else changes.
        assert_clean(error)
        after = view(env.appliance.state_dir)
        assert after["state"] == before["state"]
        assert {k: v for k, v in after["files"].items() if not k.startswith("objects/")} == {
            k: v for k, v in before["files"].items() if not k.startswith("objects/")
        }
        for name, entry in after["files"].items():
            if name.startswith("objects/") and name not in before["files"]:
                assert entry[2] == name.removeprefix("objects/"), f"unverified object {name}"
        return error.code
    assert manager.read_state()["phase"] == "staged"
    # What the root-side applier checks again from the shipped root alone (the release's kept metadata).
    work = Path(tempfile.mkdtemp(dir=env.base, prefix="apply-"))
    try:
        private_copy(manager.releases / verified.release.release, work, env.appliance.shipped_root, IDENTITY)
    except BundleError as error:
        assert_clean(error)
    finally:
        shutil.rmtree(work)
    # Once trusted, what the bundle carried must not break the next import's verification.
    try:
        manager.activate(lambda pointers: None)
        manager.verify(env.next_bundle)
    except BundleError as error:
        assert_clean(error)
    return "imported"


# --- what the fuzzer draws from -----------------------------------------------------------------------
ODD_TEXT = [
    "", " ", ".", "..", "/", "//", "\\", "\x00", "\n", "\t", "\x7f", "\x1b[2J", "\u202e", "\ud800", "\udcff",
    "é", "ﬁ", "٣", "A" * 300, "2026Q4\n", "cpu-dev\x00", "cpu-dev\n", "null", "0", "-1", "1e400", "Z",
]  # fmt: skip
TEXT = st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=12))
ODD_INTS = [0, -1, 1, 2, 3, 2**31, 2**63, 2**64 + 1, 10**40, -(10**40)]
INTS = st.one_of(st.sampled_from(ODD_INTS), st.integers(), st.builds(lambda: 10**4200))  # JSON's limit: 4300 digits
SCALARS = st.one_of(st.none(), st.booleans(), INTS, st.floats(), TEXT)
VALUES = st.recursive(
    SCALARS, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3), max_leaves=6
)
EXPIRES = st.one_of(
    st.sampled_from(
        [
            "2099-01-01T00:00:00Z", "2099-01-01T00:00:00", "2099-01-01T00:00:00+00:00", "2099-01-01T00:00:00.5Z",
            "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2099-02-30T00:00:00Z", "2099-01-01 00:00:00Z",
            "٢٠٩٩-01-01T00:00:00Z", "2099-1-1T0:0:0Z", "",
        ]
    ),
    VALUES,
)  # fmt: skip
ISSUED = st.one_of(
    st.sampled_from(
        [
            "2026-01-01", "2026-01-01T00:00:00", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00+00:00",
            "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59", "2026-13-01T00:00:00Z", "Z", "ZZ",
            "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00.123456789Z", "20260101T000000Z",
        ]
    ),
    VALUES,
)  # fmt: skip
RELEASES = st.one_of(
    st.sampled_from(["2026Q4\n", "2026Q4 ", "a" * 64, "a" * 65, "-x", ".x", "x/y", "..", "factory image", "2026Q3"]),
    VALUES,
)
HARDWARE = st.one_of(st.lists(st.one_of(st.just("cpu-dev"), TEXT), max_size=4), VALUES)
RELEASE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "product": st.one_of(st.just("enclave"), VALUES),
    "release": RELEASES,
    "sequence": st.one_of(st.sampled_from([2, True, "2", 2.0, 3]), INTS, VALUES),
    "channel": st.one_of(st.just("stable"), VALUES),
    "hardware": HARDWARE,
    "issued": ISSUED,
    "extra": VALUES,
}
ALGORITHMS = st.sampled_from(
    ["sha256", "sha512", "SHA256", "md5", "blake2b", "blake2b-256", "shake_128", "sha3_256", "", "sha256 "]
)


def hash_values(real: str) -> st.SearchStrategy[Any]:
    odd = [real, real.upper(), real[:-1], real + "0", "0" * 64, "g" * 64, " " * 64, "٠" * 64, real[::-1], ""]
    return st.one_of(st.sampled_from(odd), TEXT, VALUES)


def hashes(real: str) -> st.SearchStrategy[Any]:
    sha256 = st.fixed_dictionaries({"sha256": hash_values(real)}, optional={"sha512": hash_values(real)})
    return st.one_of(sha256, st.dictionaries(ALGORITHMS, hash_values(real), max_size=3), VALUES)


def lengths(real: int) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from([real, real - 1, real + 1, 0, True, False, float(real)]), INTS, VALUES)


def mutate(data: st.DataObject, node: Any) -> Any:
    """One structural change somewhere inside a JSON value: replace, delete or add at a drawn place."""
    if isinstance(node, dict) and node:
        op = data.draw(st.sampled_from(["descend", "descend", "delete", "add", "replace"]))
        node = dict(node)
        if op == "add":
            node[data.draw(TEXT)] = data.draw(VALUES)
            return node
        if op != "replace":
            key = data.draw(st.sampled_from(sorted(node)))
            if op == "delete":
                del node[key]
            else:
                node[key] = mutate(data, node[key])
            return node
    if isinstance(node, list) and node:
        op = data.draw(st.sampled_from(["descend", "delete", "add", "replace"]))
        node = list(node)
        if op == "add":
            node.insert(data.draw(st.integers(0, len(node))), data.draw(VALUES))
            return node
        if op != "replace":
            index = data.draw(st.integers(0, len(node) - 1))
            if op == "delete":
                del node[index]
            else:
                node[index] = mutate(data, node[index])
            return node
    return data.draw(VALUES)


def common_fields(data: st.DataObject, signed: dict[str, Any]) -> None:
    field = data.draw(st.sampled_from(["version", "expires", "spec_version", "_type"]))
    if data.draw(st.booleans()):
        signed.pop(field, None)
    elif field == "version":
        signed[field] = data.draw(st.one_of(INTS, st.booleans(), VALUES))
    elif field == "expires":
        signed[field] = data.draw(EXPIRES)
    else:
        signed[field] = data.draw(st.one_of(st.sampled_from(["1.0.31", "2.0.0", "1", "1.0.0.0", "targets"]), TEXT))


def meta_entry(data: st.DataObject, entry: dict[str, Any]) -> None:
    """A role's pin of the role below it: version, length, hashes."""
    field = data.draw(st.sampled_from(["version", "length", "hashes", "extra"]))
    if data.draw(st.integers(0, 4)) == 0:
        entry.pop(field, None)
    elif field == "version":
        entry[field] = data.draw(st.one_of(INTS, st.booleans(), VALUES))
    elif field == "length":
        entry[field] = data.draw(lengths(int(entry.get("length", 1))))
    elif field == "hashes":
        entry[field] = data.draw(hashes(str(entry.get("hashes", {}).get("sha256", "0" * 64))))
    else:
        entry[data.draw(TEXT)] = data.draw(VALUES)


def target_entry(data: st.DataObject, bundle: Path, signed: dict[str, Any]) -> None:
    """One signed target's length, hashes or custom fields; now and then the file on the stick follows."""
    path = data.draw(st.sampled_from(sorted(signed["targets"])))
    info = signed["targets"][path]
    field = data.draw(st.sampled_from(["length", "hashes", "custom", "whole", "resize"]))
    if field == "length":
        info["length"] = data.draw(lengths(info["length"]))
    elif field == "hashes":
        info["hashes"] = data.draw(hashes(info["hashes"]["sha256"]))
    elif field == "custom":
        info[data.draw(st.sampled_from(["custom", "path", "x"]))] = data.draw(VALUES)
    elif field == "whole":
        signed["targets"][path] = data.draw(VALUES)
    else:  # a file of 0-2 bytes, signed with a length of another JSON type that compares equal
        content = data.draw(st.one_of(st.sampled_from([b"", b"x"]), st.binary(max_size=2)))
        (bundle / "targets" / path).write_bytes(content)
        info["hashes"] = {"sha256": hashlib.sha256(content).hexdigest()}
        info["length"] = data.draw(st.sampled_from([len(content), bool(len(content)), float(len(content))]))


# --- signed mutations -----------------------------------------------------------------------------------
@fuzz(160)
@given(data=st.data())
def test_resigned_targets_is_accepted_or_refused_cleanly(env: Env, data: st.DataObject) -> None:
    with env.stick() as bundle:
        doc = copy.deepcopy(env.signed["targets"])
        signed = doc["signed"]
        kind = data.draw(st.sampled_from(["release", "release", "target", "target", "common", "anywhere"]))
        if kind == "release":
            field = data.draw(st.sampled_from(sorted(RELEASE_FIELDS)))
            if data.draw(st.integers(0, 5)) == 0:
                signed["x-enclave"].pop(field, None)
            else:
                signed["x-enclave"][field] = data.draw(RELEASE_FIELDS[field])
        elif kind == "target":
            target_entry(data, bundle, signed)
        elif kind == "common":
            common_fields(data, signed)
        else:
            doc["signed"] = mutate(data, signed)
        seal(env, bundle, "targets", doc)
        check(env, bundle)


@fuzz(100)
@given(data=st.data())
def test_resigned_snapshot_or_timestamp_is_accepted_or_refused_cleanly(env: Env, data: st.DataObject) -> None:
    with env.stick() as bundle:
        role = data.draw(st.sampled_from(["snapshot", "timestamp"]))
        doc = copy.deepcopy(env.signed[role])
        signed = doc["signed"]
        below = "targets.json" if role == "snapshot" else "snapshot.json"
        kind = data.draw(st.sampled_from(["meta", "meta", "more", "common", "anywhere"]))
        if kind == "more":  # an entry for a file the bundle does not have: once trusted, later ones must list it
            entry = {"version": data.draw(st.one_of(st.integers(1, 3), INTS, st.booleans()))}
            signed["meta"][data.draw(TEXT)] = entry
        elif kind == "meta":
            if data.draw(st.integers(0, 5)) == 0:
                signed["meta"] = {data.draw(st.sampled_from([below, "root.json", "", "../targets.json"])): {}}
            else:
                meta_entry(data, signed["meta"][below])
        elif kind == "common":
            common_fields(data, signed)
        else:
            doc["signed"] = mutate(data, signed)
        seal(env, bundle, role, doc)
        check(env, bundle)


@fuzz(70)
@given(data=st.data())
def test_resigned_new_root_is_accepted_or_refused_cleanly(env: Env, data: st.DataObject) -> None:
    """A 2.root.json that root-1 and root-2 (a threshold of both the old and, unless mutated, the new root)
    sign: thresholds, key lists, key types, versions and expiry of a new root."""
    with env.stick() as bundle:
        doc = copy.deepcopy(env.signed["root"])
        signed = doc["signed"]
        signed["version"] = 2
        kind = data.draw(st.sampled_from(["threshold", "keyids", "key", "common", "anywhere"]))
        role = data.draw(st.sampled_from(["root", "targets", "snapshot", "timestamp"]))
        if kind == "threshold":
            signed["roles"][role]["threshold"] = data.draw(st.one_of(st.sampled_from([0, -1, 4, True]), INTS, VALUES))
        elif kind == "keyids":
            signed["roles"][role]["keyids"] = mutate(data, signed["roles"][role]["keyids"])
        elif kind == "key":
            keyid = data.draw(st.sampled_from(sorted(signed["keys"])))
            signed["keys"][keyid] = mutate(data, signed["keys"][keyid])
        elif kind == "common":
            common_fields(data, signed)
        else:
            doc["signed"] = mutate(data, signed)
        sigs = _signatures(doc["signed"], [env.signers["root-1"], env.signers["root-2"]])
        doc["signatures"] = sigs if sigs is not None else doc["signatures"]
        (bundle / "metadata" / "2.root.json").write_bytes(_dump(doc))
        check(env, bundle)


RELEASE_NAMES = st.one_of(
    st.sampled_from(["2026Q4\n", "2026Q4\r", "2026Q4 ", " 2026Q4", "2026Q4\x00", "2026Q4\t", "2026Q4\u2028"]),
    st.tuples(st.sampled_from(["2026Q4", "a" * 63]), TEXT).map("".join),
    st.text(max_size=70),
)


@fuzz(40)
@given(name=RELEASE_NAMES)
def test_odd_release_name_is_refused_cleanly(env: Env, name: str) -> None:
    """The release name becomes a folder under releases/: nothing but a plain name may pass."""
    with env.stick() as bundle:
        doc = copy.deepcopy(env.signed["targets"])
        doc["signed"]["x-enclave"]["release"] = name
        seal(env, bundle, "targets", doc)
        check(env, bundle)


KEYIDS = st.one_of(st.sampled_from(["\x00", "\udcff", "\x1b[2J", "\u202e" + "a" * 20, "a\nb"]), TEXT, VALUES)


@fuzz(50)
@given(
    role=st.sampled_from(["timestamp", "snapshot", "targets", "root"]),
    forged=st.lists(st.fixed_dictionaries({"keyid": KEYIDS, "sig": st.one_of(st.just("00" * 64), TEXT)}), max_size=3),
    keep=st.booleans(),
)
def test_forged_signatures_are_refused_cleanly(env: Env, role: str, forged: list[Any], keep: bool) -> None:
    """Signatures are not covered by any key: a forger may add or substitute any, named as they like (the
    roles above are re-pinned, so the signatures are what is checked)."""
    with env.stick() as bundle:
        doc = json.loads(env.root2) if role == "root" else copy.deepcopy(env.signed[role])
        doc["signatures"] = (doc["signatures"] if keep else []) + forged
        if role == "root":
            (bundle / "metadata" / "2.root.json").write_bytes(_dump(doc))
        else:
            seal(env, bundle, role, doc, resign=False)
        check(env, bundle)


def test_signed_wheel_that_does_not_install_is_refused_cleanly(env: Env) -> None:
    """The venv is built during import with the real pip (a few seconds, so one example): a wheel the vendor
    signed that pip refuses (damaged, or built for another Python) must not leak pip's failure."""
    with env.stick() as bundle:
        doc = copy.deepcopy(env.signed["targets"])
        wheel = "wheels/enclave_extra-1.0-py3-none-any.whl"
        content = b"PK\x03\x04 not really a wheel"
        doc["signed"]["targets"][wheel] = {
            "length": len(content),
            "hashes": {"sha256": hashlib.sha256(content).hexdigest()},
        }
        place(bundle / "targets", wheel, content)
        seal(env, bundle, "targets", doc)
        assert check(env, bundle) == "bundle.venv_build_failed"


# --- signed target paths, with the file on the stick where the file system can hold it ------------------
COMPONENTS = st.one_of(
    st.sampled_from(
        [
            "a", ".", "..", "", " ", "a.", "a ", " a", "a\n", "\n", "x\x00y", "é", "\u202e", "\udcff", "A" * 255,
            "A" * 256, "a:b", "a*b", "~", "-", "@", "=", "+", ".hidden", "a..b", "CON", "a\tb",
        ]
    ),
    st.text(min_size=1, max_size=6),
)  # fmt: skip
PATHS = st.one_of(
    st.tuples(st.lists(COMPONENTS, min_size=1, max_size=4), st.sampled_from(["/", "/", "//", "\\", "/./"])).map(
        lambda parts_sep: parts_sep[1].join(parts_sep[0])
    ),
    st.lists(COMPONENTS, min_size=1, max_size=2).map(lambda parts: "models/" + "/".join(parts)),
    st.sampled_from(["/etc/passwd", "a" * 1025, "/".join(["a"] * 33), "a/" * 31 + "b", "models/tiny/config.json/"]),
)  # fmt: skip


def place(targets_dir: Path, path: str, content: bytes) -> bool:
    """Put `content` at `path` under targets/ if that is a name the file system takes (and stays inside)."""
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return False
    try:
        dest = targets_dir.joinpath(*parts)
        os.fsencode(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content)
    except (OSError, UnicodeError, ValueError):
        return False
    return True


@fuzz(120)
@given(path=PATHS)
def test_odd_signed_target_path_is_refused_cleanly(env: Env, path: str) -> None:
    with env.stick() as bundle:
        doc = copy.deepcopy(env.signed["targets"])
        old = "policies/retention.yaml"
        info = doc["signed"]["targets"].pop(old)
        doc["signed"]["targets"][path] = info
        content = (bundle / "targets" / old).read_bytes()
        (bundle / "targets" / old).unlink()
        if not place(bundle / "targets", path, content):
            (bundle / "targets" / old).write_bytes(content)  # the stick then holds a file the metadata lacks
        seal(env, bundle, "targets", doc)
        check(env, bundle)


# --- raw damage that no key covers --------------------------------------------------------------------
TOKENS = [
    b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"NaN", b"-Infinity", b"1e999", b"9" * 5000,
    b"\\ud800", b"\\u0000", b"[" * 3000, b'{"a":' * 2000, b",", b"}", b'"', b"\r\n", b"true",
]  # fmt: skip
WHOLE = [b"", b"[]", b"{}", b"null", b"0", b"[" * 16_000, b"9" * 16_000, b'"' + b"a" * 100 + b'"']


def damage(data: st.DataObject, raw: bytes) -> bytes:
    op = data.draw(st.sampled_from(["truncate", "flip", "splice", "whole", "encode", "json"]))
    if op == "truncate":
        return raw[: data.draw(st.integers(0, len(raw)))]
    if op == "flip":
        out = bytearray(raw)
        for pos, bit in data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 7)), max_size=4)):
            out[pos] ^= 1 << bit
        return bytes(out)
    if op == "splice":
        pos = data.draw(st.integers(0, len(raw)))
        cut = data.draw(st.integers(0, 8))
        return raw[:pos] + data.draw(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=8))) + raw[pos + cut :]
    if op == "whole":
        return data.draw(st.sampled_from(WHOLE))
    if op == "encode":
        encoding = data.draw(st.sampled_from(["utf-16", "utf-16-be", "utf-32", "utf-8-sig", "latin-1"]))
        return raw.decode().replace('"', '"\u00e9', 1).encode(encoding, "replace")
    # valid JSON, changed outside the signed part: extra fields, odd signatures, duplicated signatures
    doc = json.loads(raw)
    where = data.draw(st.sampled_from(["field", "signatures", "signature", "append", "forge"]))
    if where == "field":
        doc[data.draw(TEXT)] = data.draw(VALUES)
    elif where == "signatures":
        doc["signatures"] = data.draw(VALUES)
    elif where == "signature":
        doc["signatures"][0] = mutate(data, doc["signatures"][0])
    elif where == "append":
        keyid = data.draw(st.one_of(st.sampled_from([doc["signatures"][0]["keyid"]]), TEXT, VALUES))
        doc["signatures"].append({"keyid": keyid, "sig": data.draw(st.one_of(st.just("00" * 64), TEXT, VALUES))})
    else:  # signatures by keys the appliance does not know, named as the forger likes
        keyids = data.draw(st.lists(st.one_of(TEXT, VALUES), min_size=1, max_size=3, unique_by=repr))
        doc["signatures"] = [{"keyid": keyid, "sig": "00" * 64} for keyid in keyids]
    return json.dumps(doc).encode()


@fuzz(220)
@given(data=st.data())
def test_damaged_metadata_bytes_are_refused_cleanly(env: Env, data: st.DataObject) -> None:
    with env.stick() as bundle:
        name = data.draw(
            st.sampled_from(["timestamp.json", "timestamp.json", "snapshot.json", "targets.json", "2.root.json"])
        )
        path = bundle / "metadata" / name
        raw = env.root2 if name == "2.root.json" else path.read_bytes()
        path.write_bytes(damage(data, raw))
        check(env, bundle)


# --- names on the stick --------------------------------------------------------------------------------
NAMES = st.binary(min_size=1, max_size=10).filter(
    lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b"..")
)


@fuzz(60)
@given(
    name=st.one_of(
        st.sampled_from(
            [b"\xff", b"\x1b[31mred", b"a\nb", b"\xe2\x80\xaeexe.txt", b"\r", b"timestamp.json\n", b"9.root.json\n"]
        ),
        NAMES,
    ),
    where=st.sampled_from(["targets", "targets/models", "metadata", "."]),
    kind=st.sampled_from(["file", "directory", "symlink", "fifo"]),
)
def test_odd_names_on_the_stick_are_refused_cleanly(env: Env, name: bytes, where: str, kind: str) -> None:
    with env.stick() as bundle:
        entry = os.path.join(os.fsencode(bundle / where), name)
        assume(not os.path.lexists(entry))  # a new entry, not one of the bundle's own
        if kind == "file":
            Path(os.fsdecode(entry)).write_bytes(b"x")
        elif kind == "directory":
            os.mkdir(entry)
            Path(os.fsdecode(entry), "f").write_bytes(b"x")
        elif kind == "symlink":
            os.symlink(b"/etc/hostname", entry)
        else:
            os.mkfifo(entry)
        assert check(env, bundle) in CODES
