"""The two pages, rendered from the demo's cohort-regression run, read as a client would."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from controller.dashboard.formats import Unit, count, value
from controller.store.records import StoredRollout
from controller.store.sql import SqlStore
from tests.dashboard.conftest import KEY
from tests.dashboard.pages import Document, fetch

PAGE = f"/rollouts/{KEY}"


def test_the_rollouts_page_lists_the_demo_rollout(dashboard: str) -> None:
    answer = fetch(dashboard + "/")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    doc = Document(answer.body)
    row = doc.one("tr", data_rollout=KEY)
    text = row.content
    for expected in ("support-bot", "v6 → v7", "RolledBack", "LimitBroken", "before step 1"):
        assert expected in text
    assert "#support-bot, U024BE7LH" in text  # owners: the channel and who is mentioned
    assert "10m" in text  # age, from the dashboard's clock
    assert doc.one("a", href=PAGE).content == KEY
    worst = [e for e in doc.find("span", "verdict") if e.content == "fail"]
    assert len(worst) == 1  # the worst verdict of the last look


@pytest.mark.parametrize(
    ("query", "listed"),
    [
        pytest.param("namespace=llm", True, id="its-namespace"),
        pytest.param("namespace=other", False, id="another-namespace"),
        pytest.param("phase=RolledBack", True, id="its-phase"),
        pytest.param("phase=Progressing", False, id="another-phase"),
        pytest.param("namespace=llm&phase=RolledBack", True, id="both"),
    ],
)
def test_the_rollouts_can_be_filtered_by_namespace_and_phase(
    dashboard: str, query: str, listed: bool
) -> None:
    answer = fetch(f"{dashboard}/?{query}")
    assert answer.status == 200
    doc = Document(answer.body)
    assert bool(doc.find("tr", data_rollout=KEY)) is listed
    if not listed:
        assert "No rollout matches the filter." in answer.body
    # the filter keeps what was chosen
    for pair in query.split("&"):
        name, chosen = pair.split("=")
        [select] = doc.find("select", name=name)
        assert [o.attrs["value"] for o in doc.find("option") if "selected" in o.attrs].count(
            chosen
        ) == 1, select


def test_the_failed_cell_is_marked_failed_with_its_evidence(
    dashboard: str, demo_db: Path, demo_rollout: StoredRollout
) -> None:
    store = SqlStore(f"sqlite:///{demo_db}")
    try:
        records = store.analyses(KEY)
    finally:
        store.close()
    last = max(r.tick for r in records)
    [failed] = [r for r in records if r.tick == last and r.verdict == "fail"]
    assert (failed.metric, failed.cohort) == ("refusal-rate", "non-english")

    doc = Document(fetch(dashboard + PAGE).body)
    cell = doc.one("td", data_cohort="non-english", data_metric="refusal-rate")
    assert "verdict-fail" in cell.classes
    assert cell.attrs["data-verdict"] == "fail"
    assert value(failed.candidate_value, Unit.PERCENT) in cell.content
    others = [c for c in doc.find("td", "cell") if c is not cell]
    assert len(others) == 15  # 4 metrics × (3 cohorts + overall), one failed
    assert all(c.attrs["data-verdict"] != "fail" for c in others)
    assert f"Verdicts at look {last}" in doc.one("section", "grid").content

    # the evidence: both arms, the limit, tolerance, bound, statistic and the PromQL
    anchor = cell.attrs["data-evidence"]
    assert doc.find("a", href=f"#{anchor}")  # the cell links to its evidence
    evidence = doc.one("details", id=anchor)
    assert "open" in evidence.attrs
    text = evidence.content
    for expected in (
        value(failed.baseline_value, Unit.PERCENT),
        value(failed.candidate_value, Unit.PERCENT),
        count(failed.baseline_samples),
        count(failed.candidate_samples),
        "maxIncrease 2.00%",
        "tolerance",
        "gaussian-sprt",
        "candidate - baseline <= 2.00%",
        failed.evidence["reason"],
        failed.query,
    ):
        assert expected in text, expected
    [maxinc] = [c for c in failed.evidence["checks"] if c["limit"] == "maxIncrease"]
    bound = f"[{value(maxinc['lower'], Unit.PERCENT)}, {value(maxinc['upper'], Unit.PERCENT)}]"
    assert bound in text
    assert value(maxinc["tolerance"], Unit.PERCENT) in text


def test_the_timeline_shows_the_steps_and_every_look(dashboard: str, demo_db: Path) -> None:
    store = SqlStore(f"sqlite:///{demo_db}")
    try:
        ticks = sorted({r.tick for r in store.analyses(KEY)})
    finally:
        store.close()
    doc = Document(fetch(dashboard + PAGE).body)
    steps = doc.find("li", "step")
    assert [s.content.split()[0] for s in steps] == [
        "shadow",
        "step",
        "step",
        "step",
        "step",
        "step",
    ]
    assert "step-ended" in steps[0].classes  # rolled back while shadowing
    assert "mirror 100%" in steps[0].content
    assert all("step-skipped" in s.classes for s in steps[1:])
    assert "non-english 5%" in steps[1].content and "hold 10m" in steps[1].content
    looks = [a.attrs["href"] for a in doc.find("a") if a.attrs.get("href", "").startswith("?look=")]
    assert [f"?look={t}#grid" for t in ticks] == looks[: len(ticks)]
    marks = doc.find("rect", "look")
    assert len(marks) == len(ticks)
    assert "selected" in marks[-1].classes and "verdict-fail" in marks[-1].classes
    labels = doc.one("div", "strip-labels").content
    assert "T+0h00m shadow" in labels and "RolledBack" in labels


def test_an_earlier_look_shows_its_own_grid(dashboard: str, demo_db: Path) -> None:
    store = SqlStore(f"sqlite:///{demo_db}")
    try:
        records = store.analyses(KEY)
    finally:
        store.close()
    first = min(r.tick for r in records)
    [then] = [
        r
        for r in records
        if r.tick == first and (r.metric, r.cohort) == ("refusal-rate", "non-english")
    ]
    answer = fetch(f"{dashboard}{PAGE}?look={first}")
    assert answer.status == 200
    doc = Document(answer.body)
    cell = doc.one("td", data_cohort="non-english", data_metric="refusal-rate")
    assert cell.attrs["data-verdict"] == then.verdict == "inconclusive"
    assert value(then.candidate_value, Unit.PERCENT) in cell.content
    assert f"Verdicts at look {first}" in answer.body
    assert "latest look" in doc.one("nav", "looks").content
    marks = doc.find("rect", "look")
    assert "selected" in marks[0].classes and "selected" not in marks[-1].classes


def test_each_critical_metric_is_charted_per_cohort_from_the_looks(
    dashboard: str, demo_db: Path
) -> None:
    store = SqlStore(f"sqlite:///{demo_db}")
    try:
        records = store.analyses(KEY)
    finally:
        store.close()
    looks = len({r.tick for r in records})
    doc = Document(fetch(dashboard + PAGE).body)
    charts = doc.find("figure", "chart")
    assert {(c.attrs["data-metric"], c.attrs["data-cohort"]) for c in charts} == {
        (r.metric, r.cohort) for r in records
    }
    assert len(charts) == 16
    baselines = doc.find("polyline", "baseline")
    candidates = doc.find("polyline", "candidate")
    assert len(baselines) == len(candidates) == 16
    assert all(len(p.attrs["points"].split()) == looks for p in baselines + candidates)
    # the candidate's points carry the cell's verdict at each look: one failed, at the end
    failed = [c for c in doc.find("circle", "point") if "verdict-fail" in c.classes]
    assert len(failed) == 1
    assert "refusal-rate" in doc.one("section", "charts").content


def test_the_audit_shows_transitions_routes_and_notifications(dashboard: str) -> None:
    doc = Document(fetch(dashboard + PAGE).body)
    audit = doc.one("section", "audit").content
    assert "Pending → Shadowing" in audit
    assert "Shadowing → RolledBack" in audit
    assert "LimitBroken" in audit
    assert "rolled back: refusal-rate in non-english" in audit
    assert "mirror 100%" in audit and "restore to baseline" in audit  # the route writes
    assert "started" in audit and "rolled-back" in audit  # the notifications
    assert "Manual commands" in audit


def test_the_eval_cases_of_the_rollback_are_listed_with_their_trace_ids(
    dashboard: str, demo_db: Path
) -> None:
    store = SqlStore(f"sqlite:///{demo_db}")
    recorded = store.eval_cases(KEY)
    store.close()
    assert recorded  # the demo's rollback records its failing cell
    audit = Document(fetch(dashboard + PAGE).body).one("section", "audit").content
    assert "Eval cases" in audit and "None recorded." not in audit
    for case in recorded:
        assert case.id in audit
        assert f"{len(case.trace_ids)} trace IDs" in audit
    assert "refusal-rate" in audit and "non-english" in audit


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        pytest.param("/rollouts/llm/nope", 404, "no rollout llm/nope in the store", id="rollout"),
        pytest.param(f"{PAGE}?look=999", 404, f"{KEY} has no look 999 (looks ", id="look"),
        pytest.param(f"{PAGE}?look=soon", 400, "look='soon': a look is a whole number", id="tick"),
        pytest.param("/nothing/here", 404, "nothing at /nothing/here", id="path"),
        pytest.param("/static/nope.css", 404, "nothing at /static/nope.css", id="static"),
    ],
)
def test_bad_input_gets_a_page_that_says_why(
    dashboard: str, path: str, status: int, reason: str
) -> None:
    answer = fetch(dashboard + path)
    assert answer.status == status
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    doc = Document(answer.body)
    section = doc.one("section", "error")
    assert section.attrs["data-status"] == str(status)
    assert reason in doc.one("p", "reason").content
    assert "Traceback" not in answer.body


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_nothing_can_be_written(dashboard: str, method: str) -> None:
    answer = fetch(dashboard + PAGE, method=method)
    assert answer.status == 405
    assert answer.headers["Allow"] == "GET, HEAD"
    assert "read-only" in answer.body


def test_reading_changes_nothing_and_offers_no_action(dashboard: str, demo_db: Path) -> None:
    before = hashlib.sha256(demo_db.read_bytes()).hexdigest()
    for path in ("/", PAGE, f"{PAGE}?look=3", "/rollouts/llm/nope"):
        doc = Document(fetch(dashboard + path).body)
        assert all(f.attrs.get("method", "get").lower() == "get" for f in doc.find("form"))
        assert not doc.find("button", type="submit") or path == "/"  # the filter only
    assert hashlib.sha256(demo_db.read_bytes()).hexdigest() == before


def test_it_works_offline_and_loads_nothing_from_elsewhere(dashboard: str) -> None:
    for path in ("/", PAGE):
        answer = fetch(dashboard + path)
        csp = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        doc = Document(answer.body)
        for element in doc.elements:
            for name in ("src", "href", "action"):
                link = element.attrs.get(name)
                if link is not None:
                    assert not link.startswith(("http:", "https:", "//")), (element.tag, link)
        assert [s.attrs["src"] for s in doc.find("script")] == ["/static/dashboard.js"]
        assert [s.attrs["href"] for s in doc.find("link")] == ["/static/dashboard.css"]
    for name, kind in (("dashboard.css", "text/css"), ("dashboard.js", "text/javascript")):
        answer = fetch(f"{dashboard}/static/{name}")
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith(kind)
        assert "http://" not in answer.body and "https://" not in answer.body
        assert "@import" not in answer.body and "url(" not in answer.body


def test_a_finished_rollout_is_not_refreshed(dashboard: str) -> None:
    for path in ("/", PAGE):
        doc = Document(fetch(dashboard + path).body)
        [body] = doc.find("body")
        assert "data-refresh" not in body.attrs
        assert not doc.find("span", id="live")
