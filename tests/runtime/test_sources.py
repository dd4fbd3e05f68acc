"""The directory source never ends a rollout because of a bad edit.

Files are edited in place by people and editors: every way a file can be wrong
for a while (an invalid value, a typo, binary garbage, an oversized or empty
file, a missing directory, a file deleted and written again) must leave the
rollout as it is, listed in `invalid`, said once in the log and to `on_problem`;
only a file that stays gone past the grace period ends its rollout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.runtime.sources import MAX_FILE_BYTES, DirectorySource, Snapshot
from controller.store.memory import MemoryStore
from controller.store.sql import SqlStore, migrate
from tests.databases import postgres_server_url  # noqa: F401  (fixture)
from tests.policy.base import BASE, policy

KEY = "llm/bot-v2"
OTHER = "llm/other"
GRACE = 10.0


@dataclass
class Ticks:
    """A monotonic clock the test moves by hand."""

    at: float = 1000.0

    def __call__(self) -> float:
        return self.at


@dataclass
class Told:
    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def __call__(self, key: str, why: str | None) -> None:
        self.calls.append((key, why))


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "bot.yaml").write_text(BASE)
    (directory / "other.yaml").write_text(BASE.replace("name: bot-v2", "name: other"))
    return directory


def source(directory: Path, ticks: Ticks, told: Told | None = None) -> DirectorySource:
    return DirectorySource(directory, grace=GRACE, clock=ticks, on_problem=told)


def held(snapshot: Snapshot, key: str = KEY) -> bool:
    """Left as it is: not ticked (not in rollouts) and not ended (in invalid)."""
    return key not in snapshot.rollouts and key in snapshot.invalid


BAD_EDITS = {
    "invalid value": policy(("{weight: 50, hold: 10m}", "{weight: 500, hold: 10m}")),
    "one-letter typo": BASE.replace("  steps:", "  stps:"),
    "YAML typo": BASE.replace("spec:\n", "spec\n"),
    "binary garbage": bytes(range(256)) * 64,
    "empty": b"",
    "oversized": b"# padding\n" * (MAX_FILE_BYTES // 10 + 1) + BASE.encode(),
}


@pytest.mark.parametrize("edit", BAD_EDITS.values(), ids=BAD_EDITS.keys())
def test_a_bad_edit_holds_the_rollout_until_the_file_is_good_again(
    policies: Path, edit: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    ticks, told = Ticks(), Told()
    directory = source(policies, ticks, told)
    assert set(directory.snapshot().rollouts) == {KEY, OTHER}
    path = policies / "bot.yaml"
    if isinstance(edit, bytes):
        path.write_bytes(edit)
    else:
        path.write_text(edit)
    caplog.set_level(logging.INFO, "controller.runtime.sources")
    for _ in range(5):  # long past the grace period: a bad file is never a deleted one
        snapshot = directory.snapshot()
        assert held(snapshot), snapshot
        assert set(snapshot.rollouts) == {OTHER}  # the other rollout is untouched
        assert snapshot.synced
        ticks.at += GRACE
    assert [key for key, why in told.calls] == [KEY]  # once, not at every sync
    why = told.calls[0][1]
    assert why is not None and str(path) in why and "the rollout is held" in why
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and KEY in warnings[0].getMessage()

    path.write_text(BASE)  # fixed: the same rollout continues
    snapshot = directory.snapshot()
    assert set(snapshot.rollouts) == {KEY, OTHER} and not snapshot.invalid
    assert told.calls[-1] == (KEY, None)
    directory.snapshot()
    assert len(told.calls) == 2


def test_a_different_problem_is_said_again(policies: Path) -> None:
    ticks, told = Ticks(), Told()
    directory = source(policies, ticks, told)
    directory.snapshot()
    (policies / "bot.yaml").write_text(with_weight(500))
    directory.snapshot()
    directory.snapshot()
    (policies / "bot.yaml").write_text(with_weight(700))
    directory.snapshot()
    assert [why is not None and "500" in why for _, why in told.calls] == [True, False]
    assert len(told.calls) == 2


def with_weight(weight: int) -> str:
    return policy(("{weight: 50, hold: 10m}", f"{{weight: {weight}, hold: 10m}}"))


def test_a_missing_directory_holds_every_rollout(policies: Path) -> None:
    ticks, told = Ticks(), Told()
    directory = source(policies, ticks, told)
    directory.snapshot()
    away = policies.with_name("away")
    policies.rename(away)
    for _ in range(4):
        snapshot = directory.snapshot()
        assert snapshot.synced and not snapshot.rollouts
        assert snapshot.invalid == {KEY, OTHER}
        assert "cannot be read" in snapshot.problems[0].message
        ticks.at += GRACE
    away.rename(policies)
    snapshot = directory.snapshot()
    assert set(snapshot.rollouts) == {KEY, OTHER} and not snapshot.invalid
    assert sorted(k for k, why in told.calls if why) == [KEY, OTHER]
    assert sorted(k for k, why in told.calls if why is None) == [KEY, OTHER]


def test_a_vanished_file_is_deleted_only_after_the_grace_period(policies: Path) -> None:
    ticks, told = Ticks(), Told()
    directory = source(policies, ticks, told)
    directory.snapshot()
    path = policies / "bot.yaml"
    path.unlink()  # an editor's delete-and-rewrite, or `mv` away and back
    snapshot = directory.snapshot()
    assert held(snapshot)
    ticks.at += GRACE - 0.5
    assert held(directory.snapshot())
    path.write_text(BASE)
    ticks.at += 5
    snapshot = directory.snapshot()
    assert KEY in snapshot.rollouts and not snapshot.invalid  # back in time: continues
    assert [why is None for _, why in told.calls] == [False, True]

    path.unlink()  # now for good
    assert held(directory.snapshot())
    ticks.at += GRACE
    snapshot = directory.snapshot()
    assert KEY not in snapshot.rollouts and KEY not in snapshot.invalid  # deleted: it ends
    assert set(snapshot.rollouts) == {OTHER}
    assert told.calls[-1] == (KEY, None)  # nothing held any more


def test_a_rollout_removed_from_a_valid_file_also_waits_for_the_grace_period(
    policies: Path,
) -> None:
    ticks = Ticks()
    directory = source(policies, ticks)
    directory.snapshot()
    (policies / "bot.yaml").write_text(BASE.replace("name: bot-v2", "name: renamed"))
    snapshot = directory.snapshot()
    assert held(snapshot) and "llm/renamed" in snapshot.rollouts
    ticks.at += GRACE
    snapshot = directory.snapshot()
    assert KEY not in snapshot.invalid and KEY not in snapshot.rollouts


def test_an_invalid_file_at_startup_holds_the_rollout_it_names(policies: Path) -> None:
    (policies / "bot.yaml").write_text(with_weight(500))
    snapshot = source(policies, Ticks()).snapshot()
    assert held(snapshot) and snapshot.synced


@pytest.mark.parametrize("garbage", [b"\x00\x01\x02", b"spec: [unclosed"], ids=["binary", "yaml"])
def test_an_unparseable_file_at_startup_keeps_the_source_unsynced(
    policies: Path, garbage: bytes
) -> None:
    """Which rollout it holds is unknown: nothing may be concluded deleted until it parses."""
    (policies / "bot.yaml").write_bytes(garbage)
    directory = source(policies, Ticks())
    snapshot = directory.snapshot()
    assert not snapshot.synced and set(snapshot.rollouts) == {OTHER}
    (policies / "bot.yaml").write_text(BASE)
    assert directory.snapshot().synced


def test_a_missing_directory_at_startup_is_not_synced(tmp_path: Path) -> None:
    snapshot = DirectorySource(tmp_path / "nowhere").snapshot()
    assert not snapshot.synced and not snapshot.rollouts
    assert "cannot be read" in snapshot.problems[0].message


@pytest.mark.parametrize("kind", ["memory", "sql"])
def test_stores_keep_the_problem_until_it_clears(
    kind: str,
    tmp_path: Path,
    postgres_server_url: str,  # noqa: F811
) -> None:
    if kind == "sql":
        migrate(postgres_server_url)
        store: MemoryStore | SqlStore = SqlStore(postgres_server_url)
    else:
        store = MemoryStore()
    key = f"llm/source-problem-{kind}"
    t0, t1 = datetime(2026, 12, 6, 8, tzinfo=UTC), datetime(2026, 12, 6, 9, tzinfo=UTC)
    try:
        store.record_source_problem(key, None, t0)  # clearing nothing is fine
        assert store.source_problem(key) is None
        store.record_source_problem(key, "bot.yaml is invalid", t0)
        store.record_source_problem(key, "bot.yaml is invalid", t1)  # unchanged: same since
        found = store.source_problem(key)
        assert found is not None and (found.problem, found.since) == ("bot.yaml is invalid", t0)
        store.record_source_problem(key, "bot.yaml is empty", t1)
        found = store.source_problem(key)
        assert found is not None and (found.problem, found.since) == ("bot.yaml is empty", t1)
        store.record_source_problem(key, None, t1)
        assert store.source_problem(key) is None
    finally:
        if isinstance(store, SqlStore):
            store.close()


def test_a_file_invalid_since_startup_and_then_deleted_also_gets_the_grace_period(
    policies: Path,
) -> None:
    (policies / "bot.yaml").write_text(with_weight(500))
    ticks = Ticks()
    directory = source(policies, ticks)
    assert held(directory.snapshot())
    (policies / "bot.yaml").unlink()
    assert held(directory.snapshot())
    ticks.at += GRACE
    snapshot = directory.snapshot()
    assert KEY not in snapshot.invalid and KEY not in snapshot.rollouts


def test_an_unsynced_start_is_said_once(policies: Path, caplog: pytest.LogCaptureFixture) -> None:
    (policies / "bot.yaml").write_bytes(b"\x00\x01")
    directory = source(policies, Ticks())
    with caplog.at_level(logging.WARNING, "controller.runtime.sources"):
        for _ in range(3):
            assert not directory.snapshot().synced
    assert sum("not synced" in r.getMessage() for r in caplog.records) == 1
