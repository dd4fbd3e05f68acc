"""A store that cannot be read is a 503 that says why; what a store holds is shown as text;
a running rollout's pages refresh by themselves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.api.server import BackgroundServer
from controller.dashboard import DashboardServer, create_app, open_store
from controller.demo import demo_rollout
from controller.errors import PermanentError
from controller.store.memory import MemoryStore
from controller.store.records import (
    AnalysisRecord,
    ManualCommand,
    OutboxMessage,
    RouteActionRecord,
    StoredRollout,
    TickWrite,
    TransitionRecord,
)
from controller.store.sql import SqlStore, migrate
from tests.dashboard.pages import Document, fetch

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


@contextmanager
def serving(database: str) -> Iterator[str]:
    opened = open_store(database)
    server = DashboardServer(opened, port=0)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        opened.store.close()


def _unreadable(answer_body: str) -> str:
    doc = Document(answer_body)
    assert doc.one("section", "error").attrs["data-status"] == "503"
    return doc.one("p", "reason").content


def test_a_missing_store_is_a_503_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "canary-demo.db"
    with serving(str(missing)) as url:
        for path in ("/", "/rollouts/llm/support-bot-v7"):
            answer = fetch(url + path)
            assert answer.status == 503
            assert _unreadable(answer.body) == f"no store at {missing}"
            assert "canaryctl demo" in Document(answer.body).one("p", "hint").content
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_database_is_a_503_with_the_databases_reason(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a SQLite database, not at all" * 100)
    with serving(str(garbage)) as url:
        answer = fetch(url + "/")
    assert answer.status == 503
    assert "file is not a database" in _unreadable(answer.body)
    assert "Traceback" not in answer.body


def test_an_empty_database_is_a_503_that_says_it_is_no_store(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    with serving(f"sqlite:///{tmp_path / 'empty.db'}") as url:
        answer = fetch(url + "/")
    assert answer.status == 503
    assert _unreadable(answer.body).endswith("is not a canary-controller store (it has no tables)")
    assert (tmp_path / "empty.db").stat().st_size == 0


def test_a_store_that_appears_later_is_shown_without_a_restart(tmp_path: Path) -> None:
    database = tmp_path / "later.db"
    with serving(str(database)) as url:
        assert fetch(url + "/").status == 503
        migrate(f"sqlite:///{database}")
        answer = fetch(url + "/")
    assert answer.status == 200
    assert "No rollouts in the store yet." in answer.body


def test_what_can_never_be_a_store_is_refused_at_once() -> None:
    with pytest.raises(PermanentError, match="in-memory database, which holds no store"):
        open_store("sqlite://")


def _hostile_store(store: SqlStore | MemoryStore, *, phase: str = "RolledBack") -> str:
    policy = demo_rollout().model_dump(mode="json", by_alias=True)
    policy["spec"]["cohorts"][0]["name"] = HOSTILE  # no longer a valid policy: shown anyway
    key = "llm/support-bot-v7"
    state = {"phase": phase, "tick": 1, "reason": f"rolled back: {HOSTILE}"}
    row = StoredRollout(
        key=key,
        namespace="llm",
        name="support-bot-v7",
        generation=1,
        candidate_version=HOSTILE,
        phase=phase,
        step=-1,
        policy=policy,
        state=state,
        created_at=T0,
        updated_at=T0,
    )
    evidence = {
        "reason": f"broke {HOSTILE}",
        "critical": True,
        "decidedBy": "max",
        "checks": [
            {
                "limit": "max",
                "threshold": 0.1,
                "verdict": "fail",
                "statement": HOSTILE,
                "method": HOSTILE,
                "reason": HOSTILE,
            }
        ],
    }
    store.commit(
        TickWrite(
            rollout=row,
            expected_revision=None,
            transitions=(
                TransitionRecord(
                    T0, "Pending", phase, -1, -1, HOSTILE, actor=HOSTILE, cause=HOSTILE
                ),
            ),
            analyses=tuple(
                AnalysisRecord(
                    at=T0 + timedelta(seconds=30 * tick),
                    tick=tick,
                    metric=metric,
                    cohort=HOSTILE,
                    verdict="fail",
                    query=f'sum(x{{cohort="{HOSTILE}"}})',
                    baseline_value=0.05,
                    candidate_value=0.2,
                    baseline_samples=1000,
                    candidate_samples=1000,
                    evidence=evidence,
                )
                for tick in (1, 2)
                for metric in ("refusal-rate", HOSTILE)
            ),
            route_actions=(
                RouteActionRecord(T0, HOSTILE, {"weight": 0}, error=HOSTILE, reason=HOSTILE),
            ),
            messages=(
                OutboxMessage(HOSTILE, HOSTILE, {}, T0, status="failed", last_error=HOSTILE),
            ),
        )
    )
    store.add_command(key, ManualCommand(T0, HOSTILE, HOSTILE, reason=HOSTILE))
    return key


def test_everything_from_a_policy_or_a_person_is_shown_as_text(tmp_path: Path) -> None:
    database = tmp_path / "hostile.db"
    migrate(f"sqlite:///{database}")
    store = SqlStore(f"sqlite:///{database}")
    try:
        key = _hostile_store(store)
    finally:
        store.close()
    with serving(str(database)) as url:
        pages = [fetch(url + p) for p in ("/", f"/rollouts/{key}", f"/rollouts/{key}?look=1")]
    for answer in pages:
        assert answer.status == 200
        assert HOSTILE not in answer.body
        assert "<script>" not in answer.body.replace(
            '<script src="/static/dashboard.js" defer>', ""
        )
        assert ESCAPED in answer.body
    doc = Document(pages[1].body)
    cells = doc.find("td", "cell")
    assert {c.attrs["data-cohort"] for c in cells} == {HOSTILE}  # attributes decode to the text
    assert {c.attrs["data-metric"] for c in cells} == {"refusal-rate", HOSTILE}
    assert HOSTILE in doc.one("section", "audit").content  # shown, as text


class _Running(BackgroundServer):
    def __init__(self, store: MemoryStore, now: datetime) -> None:
        super().__init__(
            create_app(store, source="memory", clock=lambda: now, refresh_seconds=3),
            host="127.0.0.1",
            port=0,
            name="dashboard-test",
            serves="the dashboard",
        )


def test_a_running_rollout_refreshes_by_itself_and_an_earlier_look_does_not() -> None:
    store = MemoryStore()
    key = _hostile_store(store, phase="Shadowing")
    with _Running(store, T0 + timedelta(minutes=3)) as server:
        for path in ("/", f"/rollouts/{key}"):
            doc = Document(fetch(server.url + path).body)
            [body] = doc.find("body")
            assert body.attrs["data-refresh"] == "3"
            assert "refreshes every 3 s" in doc.one("span", id="live").content
            # without scripts, the page still reloads itself (less often)
            assert doc.one("meta", http_equiv="refresh").attrs["content"] == "6"
        earlier = Document(fetch(f"{server.url}/rollouts/{key}?look=1").body)
        [body] = earlier.find("body")
        assert "data-refresh" not in body.attrs  # a look in the past does not change


def test_a_record_this_code_cannot_read_is_a_500_page_and_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    key = _hostile_store(store, phase="Shadowing")
    row = store.get(key)
    assert row is not None
    store.commit(
        TickWrite(
            rollout=replace(row, state={**row.state, "tick": 3}),
            expected_revision=row.revision,
            analyses=(AnalysisRecord(T0, 3, "refusal-rate", "mobile", "no-such-verdict"),),
        )
    )
    with _Running(store, T0) as server:
        answer = fetch(f"{server.url}/rollouts/{key}")
    assert answer.status == 500
    assert Document(answer.body).one("section", "error").attrs["data-status"] == "500"
    assert "Traceback" not in answer.body
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records)
