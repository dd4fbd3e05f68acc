"""Policy files edited in place under a running `canaryctl run` never abort its rollout.

The live world (real Postgres, Prometheus and exporter, the Gateway API router on
kmock) runs one healthy rollout with the directory source. While it is on its
first step, its file is edited the ways people and editors do: truncated and
written after a pause (a non-atomic save), overwritten with garbage, given a
typo or an invalid value, made larger than the size cap, deleted and written
again, and the whole directory renamed away and back. Throughout, the HTTPRoute
must stay exactly as it was and the rollout must never end; `canaryctl status`
says why it is held; after the fix the rollout goes on to its next step.

A broken file must not disable the rollback either: a candidate that goes bad
while its file is invalid is rolled back on the last valid policy.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.runtime.sources import MAX_FILE_BYTES
from controller.store.sql import SqlStore
from tests.kube import KubeApi
from tests.metrics.servers import ContractExporter
from tests.routing.cases import HTTP_ROUTES
from tests.runtime.live import CANARYCTL, NAMESPACE, policy, start

pytestmark = pytest.mark.long(seconds=75)

KEY = f"{NAMESPACE}/good"


class RouteWatch(threading.Thread):
    """Polls the HTTPRoute and remembers every distinct spec it saw."""

    def __init__(self, kube: KubeApi) -> None:
        super().__init__(daemon=True)
        self.kube = kube
        self.specs: list[Any] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            found = self.kube.server.get(HTTP_ROUTES, NAMESPACE, "good")
            spec = None if found is None else found["spec"]
            if not self.specs or self.specs[-1] != spec:
                self.specs.append(spec)


def _wait(condition: Callable[[], bool], seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: {log.read_text()[-3000:]}"
        time.sleep(0.2)


def _status(world: dict[str, object]) -> dict[str, Any]:
    answer = subprocess.run(
        [CANARYCTL, "status", KEY, "--output", "json", "--database", str(world["url"])],
        capture_output=True,
        check=True,
        timeout=60,
    )
    rows: list[dict[str, Any]] = json.loads(answer.stdout)
    return rows[0]


class Editor:
    """Edits a policy file under the running controller, noting what the store says meanwhile."""

    def __init__(self, world: dict[str, object], store: SqlStore, good: str) -> None:
        self.world = world
        self.store = store
        self.good = good
        self.policies = Path(str(world["env"]["CANARY_POLICY_DIR"]))  # type: ignore[index]
        self.path = self.policies / "good.yaml"
        #: the source problem recorded in the store during each edit
        self.held: list[str] = []
        #: `canaryctl status` while the directory was away
        self.status: dict[str, Any] = {}

    def hold_for(self, seconds: float) -> None:
        """Let the controller see the bad file for `seconds`, reading the recorded problem."""
        time.sleep(seconds / 2)
        found = self.store.source_problem(KEY)
        if found is not None:
            self.held.append(found.problem)
        time.sleep(seconds / 2)

    def truncate_then_write(self) -> None:
        with self.path.open("r+b") as handle:
            handle.truncate(0)
        self.hold_for(6)  # the editor is slow to write
        with self.path.open("r+b") as handle:
            handle.write(self.good.encode())

    def overwrite(self, content: bytes) -> Callable[[], None]:
        def edit() -> None:
            self.path.write_bytes(content)
            self.hold_for(3)
            self.path.write_text(self.good)

        return edit

    def delete_and_rewrite(self) -> None:
        self.path.unlink()
        self.hold_for(4)  # less than the grace period (10 s)
        self.path.write_text(self.good)

    def directory_away_and_back(self) -> None:
        away = self.policies.with_name("policies-away")
        self.policies.rename(away)
        self.hold_for(12)  # longer than the grace period: a missing directory deletes nothing
        self.status = _status(self.world)
        away.rename(self.policies)

    def edits(self) -> dict[str, Callable[[], None]]:
        good = self.good
        return {
            "empty for 6 s (truncate, pause, write)": self.truncate_then_write,
            "binary garbage": self.overwrite(bytes(range(256)) * 16),
            "one-letter typo": self.overwrite(good.replace("  steps:", "  stps:").encode()),
            "invalid value": self.overwrite(good.replace("weight: 50,", "weight: 500,").encode()),
            "larger than the size cap": self.overwrite(good.encode() + b"#" * MAX_FILE_BYTES),
            "deleted and written again": self.delete_and_rewrite,
            "directory renamed away and back": self.directory_away_and_back,
        }


def test_rollouts_survive_every_bad_edit_of_their_file(world: dict[str, object]) -> None:
    log = Path(str(world["log"]))
    store = SqlStore(str(world["url"]))
    # a long first step: nothing may move the route while the file is edited
    editor = Editor(world, store, policy("good", "good").replace("hold: 40s}", "hold: 10m}", 1))
    (editor.policies / "bad.yaml").unlink()  # one healthy rollout: nothing else may end it
    editor.path.write_text(editor.good)
    watch = RouteWatch(world["kube"])  # type: ignore[arg-type]
    edits = editor.edits()
    process = start(world)
    try:
        _wait(
            lambda: (row := store.get(KEY)) is not None and row.state.get("tick", 0) >= 3,
            60,
            "the rollout did not start",
            log,
        )
        row = store.get(KEY)
        assert row is not None and (row.phase, row.step) == ("Progressing", 0)
        watch.start()
        time.sleep(1)
        for edit in edits.values():
            edit()
            time.sleep(1.5)  # a few syncs and ticks with the good file
        row = store.get(KEY)
        assert row is not None and (row.phase, row.step) == ("Progressing", 0), row
        during = list(watch.specs)
        # after the fix the rollout goes on: a valid edit shortens the hold, step 2 follows
        editor.path.write_text(editor.good.replace("hold: 10m}", "hold: 1s}", 1))
        _wait(
            lambda: (row := store.get(KEY)) is not None and row.step >= 1,
            60,
            "the rollout did not go on after the file was fixed",
            log,
        )
        aborted = [t for t in store.transitions(KEY) if t.to_phase != "Progressing"]
    finally:
        watch.stopping.set()
        process.terminate()
        code = process.wait(20)
        store.close()
    assert code == 0, log.read_text()[-3000:]

    print(f"rollouts aborted by a bad edit: {len(aborted)} of {len(edits)} edits")
    assert aborted == []
    assert len(during) == 1, during  # the route did not change while the file was bad
    weights = [ref.get("weight") for rule in during[0]["rules"] for ref in rule["backendRefs"]]
    assert 10 in weights
    assert len(editor.held) == len(edits), editor.held  # the store said why, every time
    assert any("the rollout is held" in why for why in editor.held)
    assert any("cannot be read" in why for why in editor.held)
    assert editor.status["phase"] == "Progressing"
    assert "cannot be read" in editor.status["source_problem"]["problem"]
    assert "or more: the rollout ends" not in log.read_text()


class Worsen(threading.Thread):
    """Makes `good`'s candidate refuse four times as often (on top of `Traffic`)."""

    def __init__(self, exporter: ContractExporter) -> None:
        super().__init__(daemon=True)
        self.exporter = exporter
        self.stopping = threading.Event()

    def run(self) -> None:
        labels = {"model": "good", "version": "v2", "cohort": "all"}
        while not self.stopping.wait(0.2):
            self.exporter.add_counter("llm_refusals", 15, **labels)


def _candidate_weights(spec: Any) -> set[int]:
    """The weights the route's rules give `good`'s candidate (0 where it is absent)."""
    return {
        sum(ref.get("weight", 1) for ref in rule["backendRefs"] if ref["name"] == "good-v2")
        for rule in spec["rules"]
        if any(ref["name"].startswith("good-") for ref in rule["backendRefs"])
    }


def test_a_candidate_that_goes_bad_while_its_file_is_broken_is_rolled_back(
    world: dict[str, object],
) -> None:
    """The broken file must not disable the rollback: the controller ticks the rollout on
    its last valid policy, holds it at 10 % while the candidate is healthy, and gives
    the route back to the baseline as soon as the candidate goes bad."""
    log = Path(str(world["log"]))
    store = SqlStore(str(world["url"]))
    kube: KubeApi = world["kube"]  # type: ignore[assignment]
    exporter: ContractExporter = world["exporter"]  # type: ignore[assignment]
    editor = Editor(world, store, policy("good", "good").replace("hold: 40s}", "hold: 1s}", 1))
    (editor.policies / "bad.yaml").unlink()
    editor.path.write_text(editor.good.replace("hold: 1s}", "hold: 10m}", 1))
    worse = Worsen(exporter)
    process = start(world)
    try:
        _wait(
            lambda: (row := store.get(KEY)) is not None and row.state.get("tick", 0) >= 3,
            60,
            "the rollout did not start",
            log,
        )
        # broken, and in the same write the first step's hold shortened: only the
        # invalid file stops the advance now
        editor.path.write_text(editor.good.replace("weight: 50,", "weight: 500,"))
        _wait(lambda: store.source_problem(KEY) is not None, 30, "the edit was not seen", log)
        held_at = store.get(KEY)
        assert held_at is not None
        _wait(
            lambda: (
                (row := store.get(KEY)) is not None
                and row.state.get("tick", 0) >= held_at.state.get("tick", 0) + 5
            ),
            60,
            "the rollout was not ticked on its last valid policy",
            log,
        )
        row = store.get(KEY)
        assert row is not None and (row.phase, row.step) == ("Progressing", 0), row
        found = kube.server.get(HTTP_ROUTES, NAMESPACE, "good")
        assert found is not None and _candidate_weights(found["spec"]) == {10}
        worse.start()
        _wait(
            lambda: (row := store.get(KEY)) is not None and row.phase == "RolledBack",
            90,
            "the bad candidate was not rolled back under the broken file",
            log,
        )
        found = kube.server.get(HTTP_ROUTES, NAMESPACE, "good")
        transitions = store.transitions(KEY)
    finally:
        worse.stopping.set()
        process.terminate()
        code = process.wait(20)
        store.close()
    assert code == 0, log.read_text()[-3000:]
    assert found is not None and _candidate_weights(found["spec"]) == {0}
    assert [t.to_step for t in transitions if t.to_phase == "Progressing"] == [0]  # no advance
    assert "latest policy is invalid" in transitions[-1].reason
    assert "ticking it on its last valid policy" in log.read_text()
