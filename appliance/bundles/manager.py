"""The update state machine: verify -> stage -> activate -> confirm, persisted, single-flight.

state.json (written atomically) records the phase and the job, so that after a crash `recover()`
resumes or rolls back: an interrupted staging keeps its verified objects (a re-import copies only
what is missing); an interrupted activation flips the pointers back to the previous release, unless
the new trust state was already committed, in which case the commit is completed. An fcntl lock
(released by the kernel if the process dies) refuses a second operation while one runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.bundles.activation import (
    VenvBuilder,
    assemble_release,
    build_venv_from_wheelhouse,
    flip_pointers,
    read_pointers,
    release_pointers,
)
from appliance.bundles.errors import BadState, BundleBusy, BundleError, HealthCheckFailed, NoPreviousRelease
from appliance.bundles.fsio import atomic_write, read_bounded
from appliance.bundles.layout import MAX_LENGTHS, ReleaseInfo
from appliance.bundles.provision import Provisioner, skip_provisioning
from appliance.bundles.staging import ObjectStore, Progress
from appliance.bundles.trust import AcceptedRelease, TrustState, load_trust, save_trust
from appliance.bundles.verify import ApplianceIdentity, BundleVerifier, TargetEntry, VerifiedBundle

__all__ = ["FACTORY_RELEASE", "HealthGate", "PhaseHook", "UpdateConfig", "UpdateManager"]

HealthGate = Callable[[Path], None]
PhaseHook = Callable[[str], None]
# What the appliance ran before its first activation: the image's own model store, venv and policies (the
# pointers as they were, usually none). The first activation records it as the previous release, so that
# the first update can be rolled back like any other. No bundle can be named like it (a release name has
# no spaces, layout._RELEASE_RE), and it has no folder under releases/.
FACTORY_RELEASE = "factory image"


@dataclass(frozen=True)
class UpdateConfig:
    state_dir: Path
    shipped_root: Path
    identity: ApplianceIdentity


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _job_from(bundle: VerifiedBundle) -> dict[str, Any]:
    return {
        "bundle_dir": str(bundle.bundle_dir),
        "release": bundle.release.to_custom(),
        "targets": [[t.path, t.length, t.sha256] for t in bundle.targets],
        "metadata": {role: data.decode() for role, data in bundle.metadata.items()},
        "digests": bundle.digests,
        "signers": bundle.signers,
        "total_bytes": bundle.total_bytes,
        "verified_at": _now(),
    }


def _factory(pointers: dict[str, str]) -> dict[str, Any]:
    return {
        "release": FACTORY_RELEASE,
        "sequence": 0,
        "pointers": pointers,
        "digests": {},
        "signers": {},
        "activated_at": None,
        "provisioning": None,
    }


def _entries(job: dict[str, Any]) -> list[TargetEntry]:
    return [TargetEntry(path, length, sha) for path, length, sha in job["targets"]]


class UpdateManager:
    def __init__(
        self,
        config: UpdateConfig,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        venv_builder: VenvBuilder = build_venv_from_wheelhouse,
        on_phase: PhaseHook | None = None,
        provisioner: Provisioner | None = None,
    ) -> None:
        self.config = config
        self.root = config.state_dir / "bundles"
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = ObjectStore(self.root)
        self.releases = self.root / "releases"
        self.pointers = self.root / "current"
        self.state_file = self.root / "state.json"
        self.trust_file = self.root / "trust.json"
        self._clock = clock
        self._venv_builder = venv_builder
        self._on_phase = on_phase or (lambda phase: None)
        self._provisioner = provisioner or skip_provisioning(
            "skipped: no provisioning step is configured on this host, so the bundle's debs/ were not applied"
        )

    # --- persisted state ---------------------------------------------------------------------
    def read_state(self) -> dict[str, Any]:
        if not self.state_file.exists():
            return {"phase": "idle", "job": None, "current": None, "previous": None, "last": None}
        state: dict[str, Any] = json.loads(self.state_file.read_bytes())
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        atomic_write(self.state_file, json.dumps(state, indent=1).encode(), mode=0o600)

    def trust(self) -> TrustState:
        return load_trust(self.trust_file, self.config.shipped_root)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise BundleBusy("an update operation is already running on this appliance") from exc
            yield self._recover()
        finally:
            os.close(fd)

    def busy(self) -> bool:
        """True while some process holds the update lock (an operation is running)."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def _record_failure(self, state: dict[str, Any], error: BundleError, release: str | None) -> None:
        state["last"] = {"outcome": "failed", **error.as_dict(), "release": release, "at": _now()}
        self._write_state(state)

    # --- recovery ----------------------------------------------------------------------------
    def _recover(self) -> dict[str, Any]:
        state = self.read_state()
        phase = state["phase"]
        if phase == "staging":
            self.store.discard_partials()
            release = state["job"]["release"]["release"]
            state["phase"] = "idle"
            state["job"] = None
            state["last"] = {
                "outcome": "interrupted",
                "phase": "staging",
                "at": _now(),
                "release": release,
            }
            self._write_state(state)
        elif phase in ("activating", "activated"):
            job = state["job"]
            accepted = self.trust().accepted
            if accepted is not None and accepted.sequence == job["release"]["sequence"]:
                self._finish_commit(state)
            else:
                flip_pointers(self.pointers, state["flip"]["old"])
                state["phase"] = "staged"
                state.pop("flip", None)
                state["last"] = {
                    "outcome": "rolled_back",
                    "phase": phase,
                    "at": _now(),
                    "release": job["release"]["release"],
                    "message": "activation was interrupted; the previous release was restored",
                }
                self._write_state(state)
        return state

    def recover(self) -> dict[str, Any]:
        with self._locked() as state:
            return state

    # --- verify + stage ----------------------------------------------------------------------
    def verify(self, bundle_dir: Path) -> VerifiedBundle:
        return BundleVerifier(self.trust(), self.config.identity, self._clock).verify(bundle_dir)

    def import_bundle(self, bundle_dir: Path, progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
        """Verify the bundle, then copy its files once into staging and assemble the release."""
        with self._locked() as state:
            if state["phase"] != "idle" and state["phase"] != "staged":
                raise BadState(f"cannot import while the update state is {state['phase']!r}")
            try:
                bundle = self.verify(bundle_dir)
            except BundleError as error:
                self._record_failure(state, error, None)
                raise
            live = {r["release"] for r in (state.get("current"), state.get("previous")) if r}
            if bundle.release.release in live:
                reused = BadState(f"release name {bundle.release.release!r} is already installed here")
                self._record_failure(state, reused, bundle.release.release)
                raise reused
            self._on_phase("verified")
            job = _job_from(bundle)
            state.update(phase="staging", job=job)
            self._write_state(state)
            try:
                self.store.stage(
                    bundle.bundle_dir,
                    bundle.targets,
                    progress,
                    on_object=lambda entry: self._on_phase("staging-object"),
                )
                self._on_phase("copied")
                assemble_release(
                    self.releases,
                    bundle.release.release,
                    self.store,
                    bundle.targets,
                    self._venv_builder,
                    metadata=self._release_metadata(state, bundle),
                )
            except BundleError as error:
                state.update(phase="idle", job=None)  # verified objects stay: a re-import resumes
                self._record_failure(state, error, bundle.release.release)
                raise
            state["phase"] = "staged"
            state["last"] = {"outcome": "staged", "release": bundle.release.release, "at": _now()}
            self._write_state(state)
            self._on_phase("staged")
            return job

    def _release_metadata(self, state: dict[str, Any], bundle: VerifiedBundle) -> dict[str, bytes]:
        """What releases/<name>/metadata/ keeps: the bundle's signed metadata and every root version from
        the shipped one on (the kept releases' chains, then this bundle's), so that the root-side applier
        can verify the release from the shipped root alone."""
        files: dict[str, bytes] = {}
        # Both kept releases: after a rollback the newest roots are with the previous one (trust does not
        # go back with the pointers). The factory image has no folder, so it adds nothing.
        for kept in (state.get("previous"), state.get("current")):
            if kept:
                for path in sorted((self.releases / kept["release"] / "metadata").glob("*.root.json")):
                    files[path.name] = read_bounded(path, MAX_LENGTHS["root"])
        files.update(bundle.metadata_files())
        return files

    # --- activate + confirm ------------------------------------------------------------------
    def activate(self, health_gate: HealthGate, provision: Provisioner | None = None) -> dict[str, Any]:
        """Flip the pointers to the staged release, apply its operating-system packages (`provision`,
        see appliance.bundles.provision), run the health gate, commit or roll back."""
        with self._locked() as state:
            if state["phase"] != "staged":
                raise BadState(f"nothing is staged to activate (state: {state['phase']!r})")
            job = state["job"]
            name = job["release"]["release"]
            old = read_pointers(self.pointers)
            new = release_pointers(self.releases / name, self.pointers, old)
            state.update(phase="activating", flip={"old": old, "new": new})
            self._write_state(state)
            self._on_phase("activating")
            flip_pointers(self.pointers, new, after_each=lambda component: self._on_phase(f"flipped-{component}"))
            state["phase"] = "activated"
            self._write_state(state)
            self._on_phase("activated")
            step = provision or self._provisioner
            try:
                job["provisioning"] = step(self.releases / name / "files")
                self._on_phase("provisioned")
                health_gate(self.pointers)
            except Exception as exc:
                flip_pointers(self.pointers, old)
                state.update(phase="staged")
                state.pop("flip", None)
                job.pop("provisioning", None)
                error = (
                    exc
                    if isinstance(exc, BundleError)
                    else HealthCheckFailed(f"release {name} failed its health check: {exc}")
                )
                self._record_failure(state, error, name)
                raise error from exc
            self._commit_trust(job)
            self._on_phase("trust-committed")
            self._finish_commit(state)
            self._on_phase("confirmed")
            return state

    def _commit_trust(self, job: dict[str, Any]) -> None:
        release = ReleaseInfo.from_custom(job["release"])
        meta = {role: text.encode() for role, text in job["metadata"].items()}
        save_trust(
            self.trust_file,
            TrustState(
                root=meta["root"],
                timestamp=meta["timestamp"],
                snapshot=meta["snapshot"],
                targets=meta["targets"],
                accepted=AcceptedRelease(release.release, release.sequence, release.issued),
            ),
        )

    def _finish_commit(self, state: dict[str, Any]) -> None:
        job = state["job"]
        flip = state.get("flip") or {"old": {}, "new": read_pointers(self.pointers)}
        flip_pointers(self.pointers, flip["new"])
        previous = state.get("current") or _factory(flip["old"])
        state.update(
            phase="idle",
            previous=previous,
            current={
                "release": job["release"]["release"],
                "sequence": job["release"]["sequence"],
                "pointers": flip["new"],
                "digests": job["digests"],
                "signers": job["signers"],
                "activated_at": _now(),
                "provisioning": job.get("provisioning"),
            },
            last={"outcome": "activated", "release": job["release"]["release"], "at": _now()},
            job=None,
        )
        state.pop("flip", None)
        self._write_state(state)
        self._collect_garbage(state)

    # --- rollback ----------------------------------------------------------------------------
    def rollback(self) -> dict[str, Any]:
        """Return to the previous release (N-1); a second rollback returns to N."""
        with self._locked() as state:
            if state["phase"] not in ("idle", "staged"):
                raise BadState(f"cannot roll back while the update state is {state['phase']!r}")
            previous, current = state.get("previous"), state.get("current")
            if previous is None or current is None:
                raise NoPreviousRelease("there is no previous release on this appliance")
            flip_pointers(self.pointers, previous["pointers"])
            state.update(
                current=previous,
                previous=current,
                last={
                    "outcome": "rolled_back",
                    "release": previous["release"],
                    "at": _now(),
                    "message": f"returned from {current['release']} to {previous['release']}",
                },
            )
            self._write_state(state)
            return state

    # --- housekeeping ------------------------------------------------------------------------
    def _collect_garbage(self, state: dict[str, Any]) -> None:
        """Keep the current and previous releases (and their objects); drop the rest."""
        keep = {r["release"] for r in (state.get("current"), state.get("previous")) if r}
        if not self.releases.exists():
            return
        for release_dir in self.releases.iterdir():
            if release_dir.name not in keep:
                shutil.rmtree(release_dir, ignore_errors=True)
        live: set[int] = set()
        for name in keep:
            files = self.releases / name / "files"
            for path in files.rglob("*") if files.exists() else []:
                if path.is_file():
                    live.add(path.stat().st_ino)
        for obj in self.store.objects.iterdir():
            if obj.is_file() and obj.stat().st_ino not in live:
                obj.unlink()
