"""Where the controller learns which rollouts exist: policy files or the cluster.

A source gives a snapshot: every valid rollout by key. An invalid policy is
reported (with its path and reasons) and left out, so it never moves traffic;
a rollout whose file disappears is gone from the snapshot, which the runtime
treats like a deleted ModelRollout. A ModelRollout whose latest spec is invalid
is listed in `invalid` instead: the object still exists, so its rollout is
neither ticked nor ended, and nothing changes until the spec is fixed (as if a
validating webhook had refused the change).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from controller.errors import Problem
from controller.policy import ModelRollout, check_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    rollouts: Mapping[str, ModelRollout]
    problems: tuple[Problem, ...] = field(default_factory=tuple)
    #: False while the source has not completed its first full read
    synced: bool = True
    #: keys of rollouts that exist but whose latest spec is invalid: left alone, not ended
    invalid: frozenset[str] = frozenset()


class RolloutSource(Protocol):
    def snapshot(self) -> Snapshot: ...


class DirectorySource:
    """Policies from the *.yaml / *.yml files of a directory (for running without a cluster)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def snapshot(self) -> Snapshot:
        if not self.directory.is_dir():
            return Snapshot({}, (Problem(f"{self.directory} is not a directory"),))
        policies, problems = check_files([self.directory])
        rollouts: dict[str, ModelRollout] = {}
        for loaded in policies:
            key = loaded.rollout.key
            if key in rollouts:
                problems.append(
                    Problem(f"a second policy for {key}; the first one is used", "", loaded.file)
                )
                continue
            rollouts[key] = loaded.rollout
        for problem in problems:
            log.warning("policy problem: %s", problem)
        return Snapshot(rollouts, tuple(problems))
