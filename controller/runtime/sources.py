"""Where the controller learns which rollouts exist: policy files or the cluster.

A source gives a snapshot: every valid rollout by key. An invalid policy is
reported (with its path and reasons) and left out, so it never moves traffic.
A rollout that still exists but whose latest spec is invalid is listed in
`invalid` instead: it is not ended, and the change is ignored until the spec is
fixed (as if a validating webhook had refused it); the controller ticks the
rollout on its last committed policy, toward the baseline only (a rollback still
happens, nothing advances).
A rollout that is gone from the snapshot (and not in `invalid`) is treated like
a deleted ModelRollout: its route is restored and the rollout ends.

The directory source has to infer "deleted" from files, and files are edited by
people and editors that write in place, so it is deliberately slow to conclude
that a rollout is gone:

- a file that cannot be read, is empty, is not UTF-8 text, is larger than
  `MAX_FILE_BYTES`, or holds an invalid policy leaves the rollouts it held as
  they are: their keys are listed in `invalid` (from the last good read, or from
  the file's `metadata` if it still parses as YAML);
- a missing or unreadable directory leaves every rollout it held as it is;
- a rollout whose file (or document) vanished counts as deleted only once it has
  been gone for `grace` seconds (`DEFAULT_GRACE`, or twice the sync period in
  `canaryctl run`); until then it is in `invalid`, so an editor that deletes and
  rewrites a file, or a `mv` away and back, ends nothing;
- a file that comes back valid (same key) resumes the rollout where it stood.

Each distinct problem is logged once, when it appears, and once more when it
clears, not at every sync; `on_problem` is told the same (the controller records
it in the store, where `canaryctl status` shows it).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from controller.errors import Problem, Severity
from controller.policy import ModelRollout, check_files
from controller.policy.loader import MAX_FILE_BYTES, policy_files

log = logging.getLogger(__name__)

#: how long a vanished policy file must stay gone before its rollout counts as deleted
DEFAULT_GRACE = 10.0
#: what a rollout whose policy cannot be read is: ticked on its last valid policy
HELD = "the rollout is held (nothing moves toward the candidate; a rollback still can)"

__all__ = ["DEFAULT_GRACE", "MAX_FILE_BYTES", "DirectorySource", "RolloutSource", "Snapshot"]

#: told `(key, why)` when a rollout is held because of its source, `(key, None)` when it is not
ProblemHandler = Callable[[str, str | None], None]


@dataclass(frozen=True)
class Snapshot:
    rollouts: Mapping[str, ModelRollout]
    problems: tuple[Problem, ...] = field(default_factory=tuple)
    #: False while the source has not completed its first full read
    synced: bool = True
    #: keys of rollouts that exist but whose latest spec is invalid: not ended, ticked on
    #: their last committed policy toward the baseline only (see the controller)
    invalid: frozenset[str] = frozenset()


class RolloutSource(Protocol):
    def snapshot(self) -> Snapshot: ...


@dataclass(frozen=True)
class _Read:
    """One file as read now: its valid rollouts, its errors, and the keys it names."""

    rollouts: tuple[ModelRollout, ...]
    errors: tuple[Problem, ...]
    named: frozenset[str]


class DirectorySource:
    """Policies from the *.yaml / *.yml files below a directory (running without a cluster).

    `clock` is monotonic seconds (injected by tests). Not thread-safe: the
    controller calls `snapshot` from its one sync job.
    """

    def __init__(
        self,
        directory: Path,
        *,
        grace: float = DEFAULT_GRACE,
        on_problem: ProblemHandler | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.grace = grace
        self.on_problem = on_problem
        self.clock = clock
        #: every rollout known to exist, and the file its last good policy came from
        self._known: dict[str, Path] = {}
        #: when a known rollout was first found missing from its file
        self._gone_since: dict[str, float] = {}
        #: what was last said about each rollout, and about files whose rollouts are unknown
        self._said: dict[str, str] = {}
        self._said_files: dict[str, str] = {}
        self._synced = False

    def snapshot(self) -> Snapshot:
        unreadable = self._unreadable_directory()
        if unreadable is not None:
            return self._hold_everything(unreadable)
        if self._said_files.get("") is not None:
            log.info("the policy directory %s is readable again", self.directory)
            del self._said_files[""]
        now = self.clock()
        reads = {path: _read(path) for path in policy_files([self.directory])}
        problems: list[Problem] = [p for r in reads.values() for p in r.errors]

        rollouts: dict[str, ModelRollout] = {}
        origin: dict[str, Path] = {}
        for path, found in reads.items():
            for rollout in found.rollouts:
                key = rollout.key
                if key in rollouts:
                    message = f"a second policy for {key}; the one in {origin[key]} is used"
                    problems.append(Problem(message, "", str(path)))
                    continue
                rollouts[key], origin[key] = rollout, path

        held: dict[str, str] = {}  # key -> why it is held
        for path, found in reads.items():
            if not found.errors:
                continue
            keys = found.named | {k for k, p in self._known.items() if p == path}
            why = f"{path} is invalid, so {HELD}: " + "; ".join(_brief(p) for p in found.errors)
            for key in keys - rollouts.keys():
                held.setdefault(key, why)
                self._known.setdefault(key, path)  # named only: deleting the file ends it too
            if not keys:
                self._say_file(str(path), why)
        for key, path in self._known.items():
            if key in rollouts or key in held:
                self._gone_since.pop(key, None)
                continue
            since = self._gone_since.setdefault(key, now)
            if now - since < self.grace:
                gone = "no longer holds it" if path.exists() else "is gone"
                held[key] = (
                    f"{path} {gone}; the rollout ends if it is still gone after {self.grace:g} s"
                )
        for key in list(self._known):
            if key not in rollouts and key not in held:
                log.warning(
                    "%s: its policy file has been gone for %g s or more: the rollout ends",
                    key,
                    self.grace,
                    extra={"rollout": key},
                )
                del self._known[key]
                self._gone_since.pop(key, None)
                self._tell(key, None, quiet=True)

        for key in rollouts:
            self._known[key] = origin[key]
            self._tell(key, None)
        for key, why in held.items():
            self._tell(key, why)
        for file in set(self._said_files) - {str(p) for p in reads if reads[p].errors}:
            if file not in ("", "<unsynced>"):
                del self._said_files[file]
        # Before a first read that names every file's rollouts, a stored rollout missing
        # from the snapshot may only be in a file that cannot be read: conclude nothing.
        if not self._synced:
            self._synced = all(r.named or not r.errors for r in reads.values())
            if not self._synced:
                self._say_file(
                    "<unsynced>",
                    f"not synced: a policy file in {self.directory} cannot be read as YAML;"
                    " no rollout is treated as deleted until it can",
                )
        return Snapshot(rollouts, tuple(problems), self._synced, frozenset(held))

    # --- the directory itself -------------------------------------------------------------

    def _unreadable_directory(self) -> str | None:
        try:
            with os.scandir(self.directory):
                return None
        except OSError as exc:
            return f"the policy directory {self.directory} cannot be read ({exc.strerror or exc})"

    def _hold_everything(self, why: str) -> Snapshot:
        """A directory that is missing or unreadable says nothing about its rollouts:
        every one is left as it is (a vanished file's grace period does not run)."""
        self._say_file("", why)
        for key in self._known:
            self._tell(key, f"{why}; {HELD}")
        invalid = frozenset(self._known)
        return Snapshot({}, (Problem(why),), self._synced, invalid)

    # --- saying things once ---------------------------------------------------------------

    def _tell(self, key: str, why: str | None, *, quiet: bool = False) -> None:
        before = self._said.get(key)
        if before == why:
            return
        if why is None:
            del self._said[key]
            if not quiet:
                log.info("%s: its policy is valid again", key, extra={"rollout": key})
        else:
            self._said[key] = why
            log.warning("%s: %s", key, why, extra={"rollout": key})
        if self.on_problem is None or (before is None and why is None):
            return
        try:
            self.on_problem(key, why)
        except Exception as exc:  # recording it must never stop the controller's sync
            log.warning("could not record the source problem of %s: %s", key, exc)

    def _say_file(self, file: str, why: str) -> None:
        if self._said_files.get(file) != why:
            self._said_files[file] = why
            log.warning("policy problem: %s", why)


def _read(path: Path) -> _Read:
    """Read one file; never raises (an unreadable file is an error of that file)."""
    loaded, problems = check_files([path])
    errors = tuple(p for p in problems if p.severity is Severity.ERROR)
    named = frozenset(_names(path)) if errors else frozenset()
    return _Read(tuple(p.rollout for p in loaded), errors, named)


def _names(path: Path) -> set[str]:
    """The `namespace/name` of each document of a file that is invalid but still YAML,
    so the rollouts it names are held even when this process never read it good."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return set()
        docs: list[Any] = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return set()
    keys: set[str] = set()
    for doc in docs:
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("name"), str):
            namespace = meta.get("namespace")
            keys.add(f"{namespace if isinstance(namespace, str) else 'default'}/{meta['name']}")
    return keys


def _brief(problem: Problem) -> str:
    """A problem without its file name (the message names the file once)."""
    where = f"line {problem.line}: " if problem.line is not None else ""
    field = f"{problem.path}: " if problem.path else ""
    return f"{where}{field}{problem.message}"
