"""What owners read: Block Kit, the fallback text, the terminal preview, the webhook body."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from controller.engine.phases import Phase
from controller.notify import (
    Evidence,
    Notification,
    notification_json,
    preview,
    slack_message,
    status_message,
)
from controller.notify.base import CellNote, OutboxPayload
from controller.notify.messages import MAX_CELLS, MAX_HEADER
from controller.policy import Cause
from tests.notify.samples import (
    FAIL_REASON,
    QUERY,
    ROLLOUT,
    T0,
    analysis,
    outbox,
    payload,
    rollback,
)

ROLLBACK_BLOCKS: list[dict[str, Any]] = [
    {
        "type": "header",
        "text": {"type": "plain_text", "text": ":rotating_light: Rolled back: llm/support-bot-v7"},
    },
    {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": "<@U024BE7LH> Traffic is back on v6:"
            " refusal-rate failed in cohort non-english.",
        },
    },
    {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": "*Model*\nsupport-bot"},
            {"type": "mrkdwn", "text": "*Versions*\nv6 → v7"},
            {"type": "mrkdwn", "text": "*Phase*\nRolledBack"},
            {"type": "mrkdwn", "text": "*Step*\n1 of 5"},
            {"type": "mrkdwn", "text": "*Traffic*\nall on baseline v6"},
            {"type": "mrkdwn", "text": "*Cause*\nLimitBroken: a critical metric breaks its limit"},
        ],
    },
    {"type": "divider"},
    {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": f":x: *refusal-rate* in cohort *non-english*: *fail*\n{FAIL_REASON}",
        },
    },
    {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": "*Baseline v6*\n0.05 (4,210 samples)"},
            {"type": "mrkdwn", "text": "*Candidate v7*\n0.091 (1,187 samples)"},
            {
                "type": "mrkdwn",
                "text": "*Limit*\nmaxIncrease 0.02: candidate - baseline &lt;= 0.02",
            },
            {
                "type": "mrkdwn",
                "text": "*Interval*\n0.041 in [0.023, 0.059] with 99.5% confidence",
            },
        ],
    },
    {"type": "section", "text": {"type": "mrkdwn", "text": f"*PromQL*\n```{QUERY}```"}},
    {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "2026-11-22 08:03:00 UTC · canary-controller"}],
    },
]
ROLLBACK_TEXT = (
    "<@U024BE7LH> Rolled back: llm/support-bot-v7 (support-bot v6 → v7), RolledBack, step 1 of"
    " 5, all on baseline v6. Traffic is back on v6: refusal-rate failed in cohort non-english."
    " refusal-rate in non-english: baseline 0.05 (4,210 samples) vs candidate 0.091 (1,187"
    " samples), limit maxIncrease 0.02."
)


def note(event: str, text: str, *, analyses: tuple[Any, ...] = (), **changes: Any) -> Notification:
    return Notification.of(
        ROLLOUT,
        outbox(event, payload(event, text, **changes)),
        analyses=analyses,
        steps=5,
        started_at=T0,
    )


def test_a_rollback_names_the_failing_cell_with_its_numbers_limit_interval_and_promql() -> None:
    message = slack_message(rollback())
    assert list(message.blocks) == ROLLBACK_BLOCKS
    assert message.text == ROLLBACK_TEXT


@pytest.mark.parametrize(
    ("event", "text", "cells", "sentence"),
    [
        pytest.param(
            "holding",
            "holding: not enough traffic yet in mobile, non-english",
            [
                {"metric": "refusal-rate", "cohort": "non-english", "verdict": "inconclusive"},
                {"metric": "refusal-rate", "cohort": "mobile", "verdict": "inconclusive"},
            ],
            "Not enough traffic in cohorts mobile, non-english yet: holding the step.",
            id="not-enough-traffic",
        ),
        pytest.param(
            "holding",
            "holding: not enough traffic yet in mobile",
            [{"metric": "quality-score", "cohort": "mobile", "verdict": "inconclusive"}],
            "Not enough traffic in cohort mobile yet: holding the step.",
            id="one-cohort",
        ),
        pytest.param(
            "holding",
            "holding: no data from Prometheus for refusal-rate in mobile",
            [{"metric": "refusal-rate", "cohort": "mobile", "verdict": "no-data"}],
            "Holding the step: no data from Prometheus for refusal-rate in mobile.",
            id="no-data",
        ),
        pytest.param(
            "holding",
            "holding: metrics unavailable: Prometheus unreachable",
            [],
            "No data from Prometheus (metrics unavailable: Prometheus unreachable): holding the"
            " step.",
            id="prometheus-down",
        ),
        pytest.param(
            "paused",
            "ready for 100%; waiting for canaryctl promote",
            [],
            "Ready for 100%; waiting for canaryctl promote. A human is needed: `canaryctl resume`"
            " or `canaryctl abort`.",
            id="manual-gate",
        ),
        pytest.param(
            "step-advanced",
            "step 2: 5% to candidate",
            [],
            "Step 2: 5% to candidate.",
            id="step",
        ),
    ],
)
def test_the_first_line_says_what_happened_in_plain_words(
    event: str, text: str, cells: list[dict[str, str]], sentence: str
) -> None:
    mention = ["U024BE7LH"] if event == "paused" else []
    message = slack_message(note(event, text, cells=cells, mention=mention))
    first = message.blocks[1]["text"]["text"]
    assert first == (f"<@U024BE7LH> {sentence}" if mention else sentence)
    assert sentence in message.text


def test_a_holding_message_shows_the_samples_so_far() -> None:
    row = analysis(4, "refusal-rate", "mobile", "inconclusive", candidate=(0.05, 120))
    message = slack_message(
        note(
            "holding",
            "holding: not enough traffic yet in mobile",
            analyses=(row,),
            cells=[
                {
                    "metric": "refusal-rate",
                    "cohort": "mobile",
                    "verdict": "inconclusive",
                    "summary": "120 of 200 samples",
                }
            ],
        )
    )
    assert message.blocks[4]["text"]["text"] == (
        ":grey_question: *refusal-rate* in cohort *mobile*: *inconclusive*\n120 of 200 samples"
    )
    fields = [f["text"] for f in message.blocks[5]["fields"]]
    assert fields[1] == "*Candidate v7*\n0.05 (120 samples)"


def test_a_promotion_says_how_long_it_took_and_how_each_cohort_did() -> None:
    rows = (
        analysis(9, "refusal-rate", "overall", "pass", candidate=(0.051, 20400)),
        analysis(
            9, "error-rate", "overall", "pass", baseline=(0.002, 80000), candidate=(0.0021, 20400)
        ),
        analysis(9, "refusal-rate", "mobile", "pass", candidate=(0.049, 3100)),
        analysis(9, "error-rate", "mobile", "inconclusive", candidate=(0.004, 3100)),
    )
    message = Notification.of(
        ROLLOUT,
        outbox(
            "promoted", payload("promoted", "every step passed", phase="Promoted", step=4), tick=9
        ),
        analyses=rows,
        steps=5,
        started_at=T0 - timedelta(hours=1, minutes=3),
    )
    blocks = slack_message(message).blocks
    assert blocks[0]["text"]["text"] == ":tada: Promoted: llm/support-bot-v7"
    assert blocks[1]["text"]["text"] == (
        "Promoted after 1h12m: v7 now takes all traffic (every step passed)."
    )
    assert blocks[2]["fields"][3:] == [
        {"type": "mrkdwn", "text": "*Step*\n5 of 5"},
        {"type": "mrkdwn", "text": "*Traffic*\nall on candidate v7"},
    ]
    assert blocks[4]["text"]["text"] == (
        "*Per cohort* (candidate vs baseline)\n"
        ":white_check_mark: *overall*: 2/2 pass · refusal-rate 0.051 vs 0.05 · error-rate 0.0021"
        " vs 0.002 · 20,400 candidate samples\n"
        ":warning: *mobile*: 1/2 pass · refusal-rate 0.049 vs 0.05 · error-rate 0.004 vs 0.05 ·"
        " 3,100 candidate samples"
    )


@pytest.mark.parametrize(
    ("changes", "step", "traffic"),
    [
        pytest.param({}, "1 of 5", "1% to candidate (non-english 5%)", id="cohort-weights"),
        pytest.param(
            {"phase": "Shadowing", "step": -1, "route": {"weight": 0, "mirrorPercent": 100}},
            "shadow",
            "0% to candidate · mirror 100%",
            id="shadow",
        ),
        pytest.param({"phase": "Aborted", "step": 2}, "3 of 5", "all on baseline v6", id="aborted"),
        pytest.param(
            {"phase": "Pending", "step": -1, "route": {}},
            "before step 1",
            "0% to candidate",
            id="pending",
        ),
    ],
)
def test_the_overview_gives_step_and_weights(
    changes: dict[str, Any], step: str, traffic: str
) -> None:
    fields = slack_message(note("started", "step 1: 1% to candidate", **changes)).blocks[2]
    assert fields["fields"][3:] == [
        {"type": "mrkdwn", "text": f"*Step*\n{step}"},
        {"type": "mrkdwn", "text": f"*Traffic*\n{traffic}"},
    ]


def test_the_top_message_shows_the_current_phase() -> None:
    top = status_message(note("step-advanced", "step 2: 5% to candidate", step=1))
    assert top.text == (
        "llm/support-bot-v7 (support-bot v6 → v7): Progressing, step 2 of 5,"
        " 1% to candidate (non-english 5%)"
    )
    assert top.blocks[0] == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": ":large_blue_circle: llm/support-bot-v7: Progressing",
        },
    }
    assert top.blocks[2]["elements"][0]["text"] == (
        "Latest: Step 2: 5% to candidate · 2026-11-22 08:03:00 UTC · every event is in the thread"
    )


def test_text_from_a_policy_or_a_query_cannot_inject_slack_markup() -> None:
    row = analysis(3, "p95<latency>&co", "non-english")
    message = slack_message(
        note(
            "rolled-back",
            "rolled back: <!channel> &",
            analyses=(row,),
            phase="RolledBack",
            cells=[{"metric": "p95<latency>&co", "cohort": "non-english", "verdict": "fail"}],
        )
    )
    cell = message.blocks[4]["text"]["text"]
    assert cell.startswith(":x: *p95&lt;latency&gt;&amp;co* in cohort *non-english*")
    assert "<!channel>" not in str(message.blocks)


def test_long_texts_and_many_cells_stay_within_slack_limits() -> None:
    cells = [{"metric": f"m{i}", "cohort": "mobile", "verdict": "fail"} for i in range(10)]
    long_query = "sum(x)" * 1000
    rows = tuple(replace(analysis(3, f"m{i}", "mobile"), query=long_query) for i in range(10))
    long_name = "llm/" + "x" * 200
    changes = {"phase": "RolledBack", "cells": cells, "rollout": long_name}
    message = Notification.of(
        long_name, outbox("rolled-back", payload("rolled-back", "r", **changes)), analyses=rows
    )
    blocks = slack_message(message).blocks
    assert len(blocks) <= 50
    assert len(blocks[0]["text"]["text"]) == MAX_HEADER
    for block in blocks:
        assert len(block.get("text", {}).get("text", "")) <= 3000
    assert sum("*m" in b.get("text", {}).get("text", "") for b in blocks) == MAX_CELLS
    assert blocks[-2]["elements"][0]["text"] == (
        f"…and 4 more: `canaryctl history llm/{'x' * 200}`"
    )


def test_the_terminal_preview_is_the_slack_message_without_markup() -> None:
    assert preview(rollback()) == "\n".join(
        [
            "To #bot:",
            "🚨 Rolled back: llm/support-bot-v7",
            "═" * 33,
            "@U024BE7LH Traffic is back on v6: refusal-rate failed in cohort non-english.",
            "  Model:                support-bot",
            "  Versions:             v6 → v7",
            "  Phase:                RolledBack",
            "  Step:                 1 of 5",
            "  Traffic:              all on baseline v6",
            "  Cause:                LimitBroken: a critical metric breaks its limit",
            "─" * 72,
            "❌ refusal-rate in cohort non-english: fail",
            FAIL_REASON,
            "  Baseline v6:          0.05 (4,210 samples)",
            "  Candidate v7:         0.091 (1,187 samples)",
            "  Limit:                maxIncrease 0.02: candidate - baseline <= 0.02",
            "  Interval:             0.041 in [0.023, 0.059] with 99.5% confidence",
            "PromQL",
            f"    {QUERY}",
            "2026-11-22 08:03:00 UTC · canary-controller",
        ]
    )


def test_the_webhook_body_carries_the_event_and_its_evidence() -> None:
    body = notification_json(rollback())
    assert {k: body[k] for k in ("schema", "dedupeKey", "rollout", "event", "phase", "step")} == {
        "schema": "canary-controller/notification/v1",
        "dedupeKey": f"{ROLLOUT}#{T0.isoformat()}#3#1#rolled-back",
        "rollout": ROLLOUT,
        "event": "rolled-back",
        "phase": "RolledBack",
        "step": 0,
    }
    assert body["cause"] == "LimitBroken"
    assert body["summary"] == ROLLBACK_TEXT
    assert body["mention"] == ["U024BE7LH"]
    assert body["evidence"][0] == {
        "metric": "refusal-rate",
        "cohort": "non-english",
        "verdict": "fail",
        "query": QUERY,
        "baseline": {"value": 0.05, "samples": 4210},
        "candidate": {"value": 0.091, "samples": 1187},
        "limit": {
            "name": "maxIncrease",
            "threshold": 0.02,
            "statement": "candidate - baseline <= 0.02",
        },
        "estimate": 0.041,
        "interval": {"lower": 0.023, "upper": 0.059, "confidence": 0.995},
        "reason": FAIL_REASON,
    }
    assert body["durationSeconds"] is None  # only a promotion has one


UNDECIDED = [
    {"metric": "quality-score", "cohort": "power-users", "verdict": "inconclusive"},
]
NO_DATA_CELLS = [{"metric": "refusal-rate", "cohort": "mobile", "verdict": "no-data"}]


@pytest.mark.parametrize(
    ("event", "text", "cause", "cells", "sentence"),
    [
        pytest.param(
            "rolled-back",
            "no data for 2m: metrics unavailable: Prometheus unreachable",
            "NoData",
            [],
            "Traffic is back on v6: the metrics could not be measured (no data for 2m: metrics"
            " unavailable: Prometheus unreachable).",
            id="no-data-rollback",
        ),
        pytest.param(
            "rolled-back",
            "no data for 2m: no data from Prometheus for refusal-rate in mobile",
            "NoData",
            NO_DATA_CELLS,
            "Traffic is back on v6: the metrics could not be measured (no data for 2m: no data"
            " from Prometheus for refusal-rate in mobile).",
            id="no-data-rollback-names-the-cells-measured",
        ),
        pytest.param(
            "paused",
            "undecided at the deadline (40m): quality-score in power-users: ~1,200 more"
            " candidate samples",
            "Deadline",
            UNDECIDED,
            "<@U024BE7LH> Undecided at the deadline (40m): quality-score in power-users: ~1,200"
            " more candidate samples. A human decides: `canaryctl resume` (another deadline),"
            " `canaryctl promote` or `canaryctl abort`.",
            id="deadline-pause",
        ),
        pytest.param(
            "rolled-back",
            "circuit breaker tripped: error-rate in overall: 40% errors",
            "CircuitBreaker",
            [{"metric": "error-rate", "cohort": "overall", "verdict": "fail"}],
            "Traffic is back on v6: error-rate tripped the circuit breaker in cohort overall.",
            id="circuit-breaker",
        ),
        pytest.param(
            "rolled-back",
            "still inconclusive 0:02:00 after the hold",
            None,
            UNDECIDED,
            "Traffic is back on v6: still inconclusive 0:02:00 after the hold.",
            id="queued-before-causes-undecided-is-not-failed",
        ),
        pytest.param(
            "aborted",
            "aborted by alice: wrong build",
            "Manual",
            [],
            "Aborted by alice: wrong build.",
            id="manual",
        ),
        pytest.param(
            "failed",
            "the route cannot be written: httproute bot not found",
            "RouteFailed",
            [],
            "The route cannot be written: httproute bot not found.",
            id="route-failed",
        ),
    ],
)
def test_a_transition_is_worded_from_its_cause_never_as_a_failed_metric_unless_one_failed(
    event: str, text: str, cause: str | None, cells: list[dict[str, str]], sentence: str
) -> None:
    mention = ["U024BE7LH"] if event == "paused" else []
    n = note(event, text, cells=cells, mention=mention, cause=cause)
    message = slack_message(n)
    assert message.blocks[1]["text"]["text"] == sentence
    if cause is None or not Cause(cause).failed_metric:
        assert "failed in" not in message.text
        assert all("failed in" not in str(b) for b in message.blocks)
    fields = [f["text"] for f in message.blocks[2]["fields"]]
    if cause is not None:
        assert fields[-1] == f"*Cause*\n{cause}: {Cause(cause).meaning}"
        assert notification_json(n)["cause"] == cause
    else:
        assert not any(f.startswith("*Cause*") for f in fields)
        assert notification_json(n)["cause"] is None


def test_holding_before_100_percent_is_not_called_a_lack_of_traffic() -> None:
    text = "holding: not decided yet, before 100%: quality-score in power-users"
    message = slack_message(note("holding", text, cells=UNDECIDED))
    assert message.blocks[1]["text"]["text"] == (
        "Not decided yet in cohort power-users: holding before 100%."
    )


def test_evidence_without_a_deciding_limit_uses_the_check_with_the_same_verdict() -> None:
    row = analysis(3, verdict="inconclusive")
    evidence = Evidence.of(row)
    assert (evidence.limit, evidence.lower, evidence.upper) == ("maxIncrease", 0.023, 0.059)
    bare = Evidence.of(replace(row, evidence={}))
    assert (bare.limit, bare.threshold, bare.confidence, bare.reason) == (None, None, None, "")


def test_a_payload_missing_fields_still_renders() -> None:
    message = Notification.of(ROLLOUT, outbox("failed", {}))
    assert message.rollout == ROLLOUT
    assert (message.channel, message.mention, message.cells, message.step) == (None, (), (), -1)
    assert slack_message(message).blocks[0]["text"]["text"] == ":x: Failed: llm/support-bot-v7"


def test_the_payload_carries_the_tick_start_and_steps_and_round_trips() -> None:
    sent = OutboxPayload(
        rollout=ROLLOUT,
        event="rolled-back",
        text="rolled back",
        phase=Phase.ROLLED_BACK,
        step=1,
        steps=5,
        started_at=T0,
        tick=7,
        route={"weight": 5},
        mention=("U024BE7LH",),
        cells=(CellNote("refusal-rate", "mobile", "fail", "worse"),),
        cause=Cause.LIMIT_BROKEN,
    )
    assert OutboxPayload.from_json(sent.to_json()) == sent
    note = Notification.of(ROLLOUT, outbox("rolled-back", sent.to_json()))
    assert (note.phase, note.steps, note.started_at) == (Phase.ROLLED_BACK, 5, T0)


def test_a_payload_from_a_newer_version_keeps_what_it_can_read() -> None:
    read = OutboxPayload.from_json({"phase": "Hibernating", "cause": "Cosmic", "step": 2})
    assert (read.phase, read.cause, read.step, read.tick) == (None, None, 2, None)
