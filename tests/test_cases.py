"""The eval case record and its export: every value comes back exactly, whatever it holds."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controller.cases import (
    EXPORT_KEYS,
    CaseArm,
    CaseLimit,
    Direction,
    EvalCase,
    Trigger,
    export_row,
    render_csv,
    render_jsonl,
    trace_id_count,
)
from controller.notify.base import Notification
from controller.notify.messages import notification_json, slack_message
from controller.store import OutboxMessage

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
#: quotes, braces, a backslash, a comma, a newline and non-ASCII in one value
HOSTILE = 'x"}{y\\,\nz ü'

CASE = EvalCase(
    id=EvalCase.make_id("llm/bot-v7", T0, 4, "refusal-rate", "non-english"),
    created_at=T0,
    rollout="llm/bot-v7",
    model=HOSTILE,
    baseline_version="v6",
    candidate_version="v7",
    cohort="non-english",
    match={"header": "accept-language", "regex": HOSTILE},
    metric="refusal-rate",
    direction=Direction.HIGHER_IS_WORSE,
    limit=CaseLimit("maxIncrease", 0.02),
    tolerance=0.01,
    baseline=CaseArm(0.05, 1200.0),
    candidate=CaseArm(0.1, 1100.0),
    window_start=T0 - timedelta(minutes=5),
    window_end=T0,
    promql=f'llm_refusals_total{{model="{HOSTILE}"}}',
    trigger=Trigger.ROLLBACK,
    trace_ids=("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
)
NO_TRACES = replace(
    CASE,
    id="other",
    cohort="mobile",
    limit=None,
    tolerance=None,
    trace_ids=(),
    trace_ids_reason="no exemplars",
)


def test_an_exported_row_has_every_key_and_reads_back_as_the_same_case() -> None:
    for case in (CASE, NO_TRACES):
        row = export_row(case)
        assert tuple(row) == EXPORT_KEYS
        assert EvalCase.from_row(json.loads(json.dumps(row))) == case


def test_jsonl_is_one_object_per_line_whatever_the_values_hold() -> None:
    text = render_jsonl([CASE, NO_TRACES])
    lines = text.splitlines()
    assert len(lines) == 2 and text.endswith("\n")
    assert [EvalCase.from_row(json.loads(line)) for line in lines] == [CASE, NO_TRACES]
    assert render_jsonl([]) == ""


def test_csv_has_a_header_and_nested_values_as_json() -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv([CASE, NO_TRACES]))))
    assert [tuple(r) for r in rows] == [EXPORT_KEYS, EXPORT_KEYS]
    first, second = rows
    assert first["model"] == HOSTILE
    assert json.loads(first["match"]) == {"header": "accept-language", "regex": HOSTILE}
    assert first["trace_ids"].split() == list(CASE.trace_ids)
    assert json.loads(first["limit"]) == {"name": "maxIncrease", "value": 0.02}
    assert (second["limit"], second["tolerance"], second["trace_ids"]) == ("", "", "")
    assert second["trace_ids_reason"] == "no exemplars"


@pytest.mark.parametrize(
    ("cases", "sentence"),
    [
        pytest.param(
            (CASE,),
            "1 eval case with 2 trace IDs recorded: `canaryctl cases export llm/bot-v7`",
            id="one",
        ),
        pytest.param(
            (CASE, NO_TRACES),
            "2 eval cases with 2 trace IDs recorded: `canaryctl cases export llm/bot-v7`",
            id="two",
        ),
        pytest.param(
            (NO_TRACES,),
            "1 eval case with 0 trace IDs recorded: `canaryctl cases export llm/bot-v7`",
            id="none",
        ),
    ],
)
def test_the_rollback_message_says_what_was_captured(
    cases: tuple[EvalCase, ...], sentence: str
) -> None:
    note = Notification(
        rollout="llm/bot-v7",
        dedupe_key="k",
        event="rolled-back",
        created_at=T0,
        text="rolled back",
        eval_cases=cases,
    )
    message = slack_message(note)
    assert sentence in message.text
    assert any(sentence in json.dumps(b) for b in message.blocks)
    assert f"with {trace_id_count(cases)} trace IDs" in sentence
    assert notification_json(note)["evalCases"] == [export_row(c) for c in cases]


def test_a_message_without_cases_says_nothing_of_them() -> None:
    note = Notification(rollout="llm/bot-v7", dedupe_key="k", event="promoted", created_at=T0)
    assert "eval case" not in slack_message(note).text
    assert notification_json(note)["evalCases"] == []


def test_a_payload_row_that_is_not_a_case_is_left_out() -> None:
    message = OutboxMessage(
        "k", "rolled-back", {"evalCases": [export_row(CASE), {"id": "half a row"}, "junk"]}, T0
    )
    assert Notification.of("llm/bot-v7", message).eval_cases == (CASE,)
