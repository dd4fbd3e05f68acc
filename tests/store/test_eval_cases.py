"""Eval cases in the store: written with their tick, once, kept as written, append-only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from controller.cases import CaseArm, CaseLimit, Direction, EvalCase, Trigger
from controller.errors import PermanentError
from controller.store import StoredRollout, TickWrite
from controller.store.memory import MemoryStore
from controller.store.sql import SqlStore, migrate
from tests.databases import fresh_database, postgres_server_url  # noqa: F401  (fixture)

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
Store = MemoryStore | SqlStore
#: a header value with quotes, braces, a backslash and a newline
ODD = 'say "hi" {there}\\\n'


@pytest.fixture(scope="module")
def postgres_url(postgres_server_url: str) -> str:  # noqa: F811
    migrate(postgres_server_url)
    return postgres_server_url


@pytest.fixture(params=["postgres", "sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'canary.db'}"
        migrate(url)
    sql = SqlStore(url)
    yield sql
    sql.close()


def _rollout(name: str) -> StoredRollout:
    return StoredRollout(
        key=f"llm/{name}",
        namespace="llm",
        name=name,
        generation=1,
        candidate_version="v7",
        phase="RolledBack",
        step=0,
        policy={},
        state={},
        updated_at=T0,
    )


def case(rollout: str, cohort: str, *, at: datetime = T0, traces: int = 2) -> EvalCase:
    return EvalCase(
        id=EvalCase.make_id(rollout, T0, 3, "refusal-rate", cohort),
        created_at=at,
        rollout=rollout,
        model='bot "one"',
        baseline_version="v6",
        candidate_version="v7",
        cohort=cohort,
        match={"header": "x-odd", "value": ODD},
        metric="refusal-rate",
        direction=Direction.HIGHER_IS_WORSE,
        limit=CaseLimit("maxIncrease", 0.02),
        tolerance=0.01,
        baseline=CaseArm(0.05, 1200.0),
        candidate=CaseArm(0.1, 1100.0),
        window_start=at - timedelta(minutes=5),
        window_end=at,
        promql='llm_refusals_total{model="bot \\"one\\""}',
        trigger=Trigger.ROLLBACK,
        trace_ids=tuple(f"{cohort}-{i}" for i in range(traces)),
        trace_ids_reason=None if traces else "no exemplars",
    )


def test_cases_are_kept_exactly_as_written_per_rollout(store: Store) -> None:
    suffix = f"{id(store)}"
    first, second = f"llm/a-{suffix}", f"llm/b-{suffix}"
    written = (case(first, "non-english"), case(first, "mobile", traces=0))
    store.commit(TickWrite(_rollout(f"a-{suffix}"), None, eval_cases=written))
    other = case(second, "mobile", at=T0 + timedelta(minutes=1))
    store.commit(TickWrite(_rollout(f"b-{suffix}"), None, eval_cases=(other,)))
    assert store.eval_cases(first) == sorted(written, key=lambda c: c.id)
    assert store.eval_cases(second) == [other]
    everyone = [c for c in store.eval_cases() if c.rollout in (first, second)]
    assert everyone == [*sorted(written, key=lambda c: c.id), other]


def test_a_case_decided_again_is_recorded_once(store: Store) -> None:
    name = f"again-{id(store)}"
    key = f"llm/{name}"
    once = case(key, "non-english")
    stored = store.commit(TickWrite(_rollout(name), None, eval_cases=(once,)))
    again = replace(once, trace_ids=("later",))  # same tick, same cell: same ID
    store.commit(TickWrite(_rollout(name), stored.revision, eval_cases=(again,)))
    assert store.eval_cases(key) == [once]


def test_an_unknown_rollout_is_a_clear_error(store: Store) -> None:
    with pytest.raises(PermanentError, match="no rollout llm/nope in the store"):
        store.eval_cases("llm/nope")


@pytest.mark.parametrize("verb", ["UPDATE", "DELETE"])
def test_eval_cases_are_append_only_on_both_databases(tmp_path: Path, verb: str) -> None:
    sql = "UPDATE eval_cases SET cohort = 'x'" if verb == "UPDATE" else "DELETE FROM eval_cases"
    with fresh_database() as postgres:
        for url in (postgres, f"sqlite:///{tmp_path / 'cases.db'}"):
            migrate(url)
            store = SqlStore(url)
            store.commit(TickWrite(_rollout("x"), None, eval_cases=(case("llm/x", "c"),)))
            store.close()
            engine = create_engine(url)
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
                connection.execute(text(sql))
            engine.dispose()


def test_the_migration_goes_down_and_up_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'down.db'}"
    migrate(url)
    migrate(url, "0006_slack_actions", downgrade=True)
    engine = create_engine(url)
    assert not inspect(engine).has_table("eval_cases")
    engine.dispose()
    migrate(url)
    store = SqlStore(url)
    store.commit(TickWrite(_rollout("y"), None, eval_cases=(case("llm/y", "c"),)))
    assert [c.cohort for c in store.eval_cases("llm/y")] == ["c"]
    store.close()
