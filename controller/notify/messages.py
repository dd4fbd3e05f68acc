"""What owners read: Block Kit for Slack, its plain-text fallback, a terminal preview,
and the JSON body of the webhook. Pure functions of a `Notification`.

On-call reads these in the middle of an incident, so a rollback message leads
with who must look and why, then the numbers that decided it: the failing
metric × cohort, baseline vs candidate with their samples, the limit, the
interval the judge is confident about, and the PromQL to paste into Prometheus.
Slack's limits are respected (150 characters of header, 3000 per text block,
50 blocks), and every string that came from a policy or a query is escaped for
Slack's mrkdwn, where `<`, `>` and `&` are markup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from controller.cases import export_rows, trace_id_count
from controller.engine.phases import Phase
from controller.notify.base import CellNote, Evidence, GateNote, Notification
from controller.policy.causes import Cause
from controller.policy.durations import format_duration

#: how many metric × cohort cells a message details; the rest are counted
MAX_CELLS = 6
MAX_TEXT = 2900  # Slack allows 3000 characters in a section's text
MAX_HEADER = 150
MAX_QUERY = 1500

_TITLES: Mapping[str, tuple[str, str]] = {
    "started": (":rocket:", "Started"),
    "step-advanced": (":arrow_forward:", "Next step"),
    "rolled-back": (":rotating_light:", "Rolled back"),
    "promoted": (":tada:", "Promoted"),
    "paused": (":double_vertical_bar:", "Paused, waiting for a human"),
    "resumed": (":arrow_forward:", "Resumed"),
    "aborted": (":no_entry:", "Aborted"),
    "holding": (":hourglass_flowing_sand:", "Holding"),
    "restarted": (":repeat:", "Restarted"),
    "failed": (":x:", "Failed"),
    "route-corrected": (":warning:", "Route put back"),
    "gate-failed": (":no_entry_sign:", "Gate failed"),
}
_PHASES: Mapping[Phase | None, str] = {
    Phase.PENDING: ":hourglass:",
    Phase.SHADOWING: ":eyes:",
    Phase.PROGRESSING: ":large_blue_circle:",
    Phase.GATE_RUNNING: ":vertical_traffic_light:",
    Phase.PAUSED: ":double_vertical_bar:",
    Phase.PROMOTED: ":white_check_mark:",
    Phase.ROLLED_BACK: ":rotating_light:",
    Phase.ABORTED: ":no_entry:",
    Phase.FAILED: ":x:",
}
_VERDICTS: Mapping[str, str] = {
    "pass": ":white_check_mark:",
    "fail": ":x:",
    "inconclusive": ":grey_question:",
    "no-data": ":warning:",
}
#: the emoji above as a terminal shows them
_UNICODE: Mapping[str, str] = {
    ":rocket:": "🚀",
    ":arrow_forward:": "▶️",
    ":rotating_light:": "🚨",
    ":tada:": "🎉",
    ":double_vertical_bar:": "⏸️",
    ":no_entry:": "⛔",
    ":hourglass_flowing_sand:": "⏳",
    ":hourglass:": "⌛",
    ":repeat:": "🔁",
    ":x:": "❌",
    ":eyes:": "👀",
    ":large_blue_circle:": "🔵",
    ":white_check_mark:": "✅",
    ":grey_question:": "❔",
    ":warning:": "⚠️",
    ":no_entry_sign:": "🚫",
    ":vertical_traffic_light:": "🚦",
}
_BACK_ON_BASELINE = frozenset({Phase.ROLLED_BACK, Phase.ABORTED})

Block = dict[str, Any]


@dataclass(frozen=True)
class SlackMessage:
    """A Slack message: `text` is the fallback (notifications, screen readers)."""

    text: str
    blocks: tuple[Block, ...]


# --- the messages ---------------------------------------------------------------------


def slack_message(note: Notification) -> SlackMessage:
    """The message for one event: what happened, where the rollout is, and the evidence."""
    emoji, title = _title(note)
    mentions = " ".join(f"<@{user}>" for user in note.mention)
    lead = _sentence(note)
    blocks: list[Block] = [
        _header(f"{emoji} {title}: {note.rollout}"),
        _section(f"{mentions} {_escape(lead)}" if mentions else _escape(lead)),
        _fields(_overview(note)),
    ]
    if note.event == "promoted":
        blocks += _promotion(note)
    elif note.cells:
        blocks += _cells(note)
    if note.eval_cases:
        blocks.append(_section(_escape(captured(note))))
    if note.gate is not None and note.gate.outcome == "failed":
        blocks += _gate(note.gate)
    blocks.append(_context(f"{note.created_at:%Y-%m-%d %H:%M:%S} UTC · canary-controller"))
    return SlackMessage(_fallback(note, title, lead, mentions), tuple(blocks))


def status_message(note: Notification) -> SlackMessage:
    """The thread's top message, kept current: the rollout's phase after `note`."""
    emoji = _PHASES.get(note.phase, ":large_blue_circle:")
    blocks = (
        _header(f"{emoji} {note.rollout}: {note.phase or 'unknown'}"),
        _fields(_overview(note)),
        _context(
            f"Latest: {_escape(_capital(_clip(note.text, 500)))} · "
            f"{note.created_at:%Y-%m-%d %H:%M:%S} UTC · every event is in the thread"
        ),
    )
    text = (
        f"{note.rollout} ({note.model} {note.baseline} → {note.candidate}): "
        f"{note.phase or ''}, step {_step(note)}, {_traffic(note)}"
    )
    return SlackMessage(text, blocks)


def captured(note: Notification) -> str:
    """What a rollback recorded for the regression set, and how to get it."""
    cases = len(note.eval_cases)
    traces = trace_id_count(note.eval_cases)
    return (
        f"{cases} eval case{'s' if cases != 1 else ''} with {traces} trace "
        f"ID{'s' if traces != 1 else ''} recorded: `canaryctl cases export {note.rollout}`"
    )


def _title(note: Notification) -> tuple[str, str]:
    return _TITLES.get(note.event, (":information_source:", note.event.replace("-", " ").title()))


def _sentence(note: Notification) -> str:
    """The event's one line, in plain words."""
    text = note.text
    if note.event == "holding":
        return _holding_sentence(note)
    if note.event == "promoted":
        took = _duration(note)
        after = f" after {took}" if took else ""
        return f"Promoted{after}: {note.candidate} now takes all traffic ({text})."
    route = note.route
    untouched = note.step < 0 and not route.get("weight") and not route.get("mirrorPercent")
    if note.event == "rolled-back" and note.cause is Cause.GATE_FAILED and untouched:
        return f"Stopped before {note.candidate} took any traffic: {text}."
    if note.event == "rolled-back":
        return f"Traffic is back on {note.baseline}: {_rollback_cause(note)}."
    if note.event == "paused" and note.cause is Cause.DEADLINE:
        return (
            f"{_capital(text)}. A human decides: `canaryctl resume` (another deadline), "
            "`canaryctl promote` or `canaryctl abort`."
        )
    if note.event == "paused" and note.mention:
        return f"{_capital(text)}. A human is needed: `canaryctl resume` or `canaryctl abort`."
    return f"{_capital(text)}."


def _rollback_cause(note: Notification) -> str:
    """Why traffic went back, worded from the cause: only a failed metric is called one."""
    if note.cause is Cause.NO_DATA:
        return f"the metrics could not be measured ({note.text})"
    failed = [c for c in note.cells if c.verdict == "fail"]
    if note.cause not in (None, Cause.LIMIT_BROKEN, Cause.CIRCUIT_BREAKER) or not failed:
        return note.text
    how = "tripped the circuit breaker" if note.cause is Cause.CIRCUIT_BREAKER else "failed"
    named = "; ".join(f"{c.metric} {how} in cohort {c.cohort}" for c in failed[:3])
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    return f"{named}{more}"


def _holding_sentence(note: Notification) -> str:
    undecided = sorted({c.cohort for c in note.cells if c.verdict == "inconclusive"})
    if undecided and note.cause is not Cause.NO_DATA:
        noun = "cohort" if len(undecided) == 1 else "cohorts"
        if "not enough traffic" not in note.text:
            return f"Not decided yet in {noun} {', '.join(undecided)}: holding before 100%."
        return f"Not enough traffic in {noun} {', '.join(undecided)} yet: holding the step."
    detail = note.text.removeprefix("holding: ")
    if detail.startswith("no data from Prometheus for "):
        return f"Holding the step: {detail}."
    return f"No data from Prometheus ({detail.removeprefix('no data from ')}): holding the step."


def _overview(note: Notification) -> list[tuple[str, str]]:
    fields = [
        ("Model", note.model or "?"),
        ("Versions", f"{note.baseline} → {note.candidate}"),
        ("Phase", note.phase or "?"),
        ("Step", _step(note)),
        ("Traffic", _traffic(note)),
    ]
    if note.cause is not None:
        fields.append(("Cause", f"{note.cause}: {note.cause.meaning}"))
    return fields


def _step(note: Notification) -> str:
    if note.phase is Phase.SHADOWING:
        return "shadow"
    if note.step < 0:
        return "before step 1"
    of = f" of {note.steps}" if note.steps else ""
    return f"{note.step + 1}{of}"


def _traffic(note: Notification) -> str:
    if note.phase in _BACK_ON_BASELINE:
        return f"all on baseline {note.baseline}"
    if note.phase is Phase.PROMOTED:
        return f"all on candidate {note.candidate}"
    route = note.route
    weight = route.get("weight", 0)
    parts = [f"{weight}% to candidate"]
    cohorts = route.get("cohorts") or {}
    if cohorts:
        parts.append("(" + ", ".join(f"{k} {v}%" for k, v in cohorts.items()) + ")")
    if route.get("mirrorPercent"):
        parts.append(f"· mirror {route['mirrorPercent']}%")
    return " ".join(parts)


def _cells(note: Notification) -> list[Block]:
    """A block group per cell the engine named: the numbers, the limit, the PromQL."""
    blocks: list[Block] = [{"type": "divider"}]
    for cell in note.cells[:MAX_CELLS]:
        blocks += _cell(note, cell, note.evidence_for(cell))
    if len(note.cells) > MAX_CELLS:
        more = len(note.cells) - MAX_CELLS
        blocks.append(_context(f"…and {more} more: `canaryctl history {note.rollout}`"))
    return blocks


def _cell(note: Notification, cell: CellNote, evidence: Evidence | None) -> list[Block]:
    icon = _VERDICTS.get(cell.verdict, ":grey_question:")
    why = cell.summary or (evidence.reason if evidence else "")
    head = f"{icon} *{_escape(cell.metric)}* in cohort *{_escape(cell.cohort)}*: *{cell.verdict}*"
    blocks = [_section(head + (f"\n{_escape(why)}" if why else ""))]
    if evidence is None:
        return blocks
    fields = [
        (f"Baseline {note.baseline}", _arm(evidence.baseline_value, evidence.baseline_samples)),
        (f"Candidate {note.candidate}", _arm(evidence.candidate_value, evidence.candidate_samples)),
    ]
    if evidence.limit is not None:
        statement = f": {evidence.statement}" if evidence.statement else ""
        fields.append(("Limit", f"{evidence.limit} {_num(evidence.threshold)}{statement}"))
    if evidence.lower is not None and evidence.upper is not None:
        confidence = (
            f" with {_percent(evidence.confidence)} confidence" if evidence.confidence else ""
        )
        fields.append(
            (
                "Interval",
                f"{_num(evidence.estimate)} in [{_num(evidence.lower)}, {_num(evidence.upper)}]"
                f"{confidence}",
            )
        )
    blocks.append(_fields(fields))
    if evidence.query:
        blocks.append(_section(f"*PromQL*\n```{_escape(_clip(evidence.query, MAX_QUERY))}```"))
    return blocks


#: a gate's body is shown in sections of this many characters (Slack allows 3000 each,
#: and escaping lengthens the text)
_BODY_CHUNK = 1400


def _gate(gate: GateNote) -> list[Block]:
    """A failed gate's evidence: what happened and the answer's body, all of it (at most
    4 KiB: a few sections)."""
    head = f"*Gate `{_escape(gate.name)}`* failed (attempt {gate.attempt})"
    if gate.detail:
        head += f": {_escape(gate.detail)}"
    blocks = [_section(head)]
    body = gate.body.replace("`" * 3, "'" * 3)
    for start in range(0, len(body), _BODY_CHUNK):
        blocks.append(_section("`" * 3 + _escape(body[start : start + _BODY_CHUNK]) + "`" * 3))
    return blocks


def _promotion(note: Notification) -> list[Block]:
    """One line per cohort: each metric's candidate vs baseline, and the traffic seen."""
    cohorts: dict[str, list[Evidence]] = {}
    for e in note.evidence:
        cohorts.setdefault(e.cohort, []).append(e)
    if not cohorts:
        return []
    lines = []
    for cohort, cells in cohorts.items():
        verdicts = [c.verdict for c in cells]
        icon = _VERDICTS["pass"] if all(v == "pass" for v in verdicts) else _VERDICTS["no-data"]
        metrics = " · ".join(
            f"{_escape(c.metric)} {_num(c.candidate_value)} vs {_num(c.baseline_value)}"
            for c in cells
        )
        served = max((c.candidate_samples or 0.0 for c in cells), default=0.0)
        passed = sum(v == "pass" for v in verdicts)
        lines.append(
            f"{icon} *{_escape(cohort)}*: {passed}/{len(cells)} pass · {metrics} · "
            f"{served:,.0f} candidate samples"
        )
    return [
        {"type": "divider"},
        _section("*Per cohort* (candidate vs baseline)\n" + _clip("\n".join(lines), MAX_TEXT)),
    ]


def _fallback(note: Notification, title: str, lead: str, mentions: str) -> str:
    """The plain text: what shows in notifications, and where blocks cannot."""
    parts = [
        f"{title}: {note.rollout} ({note.model} {note.baseline} → {note.candidate}), "
        f"{note.phase or ''}, step {_step(note)}, {_traffic(note)}. {lead}"
    ]
    for cell in note.cells[:MAX_CELLS]:
        e = note.evidence_for(cell)
        if e is None or note.event not in ("rolled-back", "paused"):
            continue
        limit = f", limit {e.limit} {_num(e.threshold)}" if e.limit else ""
        parts.append(
            f"{cell.metric} in {cell.cohort}: baseline "
            f"{_arm(e.baseline_value, e.baseline_samples)} vs candidate "
            f"{_arm(e.candidate_value, e.candidate_samples)}{limit}."
        )
    if note.eval_cases:  # right after the lead: long evidence is clipped, this is not
        parts.insert(1, captured(note) + ".")
    text = " ".join(parts)
    return _clip(f"{mentions} {text}" if mentions else text, MAX_TEXT)


# --- the webhook's body ---------------------------------------------------------------


def notification_json(note: Notification) -> dict[str, Any]:
    """The webhook's JSON body: the event, the rollout, the evidence, a readable text."""
    took = (
        (note.created_at - note.started_at).total_seconds()
        if note.event == "promoted" and note.started_at
        else None
    )
    return {
        "schema": "canary-controller/notification/v1",
        "dedupeKey": note.dedupe_key,
        "rollout": note.rollout,
        "event": note.event,
        "cause": str(note.cause) if note.cause else None,
        "at": note.created_at.isoformat(),
        "model": note.model,
        "baseline": note.baseline,
        "candidate": note.candidate,
        "phase": str(note.phase or ""),
        "step": note.step,
        "steps": note.steps,
        "route": dict(note.route),
        "gate": (
            {
                "name": note.gate.name,
                "attempt": note.gate.attempt,
                "outcome": note.gate.outcome,
                "detail": note.gate.detail,
                "body": note.gate.body,
            }
            if note.gate is not None
            else None
        ),
        "text": note.text,
        "summary": slack_message(note).text,
        "mention": list(note.mention),
        "durationSeconds": took,
        "cells": [
            {"metric": c.metric, "cohort": c.cohort, "verdict": c.verdict, "summary": c.summary}
            for c in note.cells
        ],
        "evidence": [
            {
                "metric": e.metric,
                "cohort": e.cohort,
                "verdict": e.verdict,
                "query": e.query,
                "baseline": {"value": e.baseline_value, "samples": e.baseline_samples},
                "candidate": {"value": e.candidate_value, "samples": e.candidate_samples},
                "limit": {"name": e.limit, "threshold": e.threshold, "statement": e.statement},
                "estimate": e.estimate,
                "interval": {"lower": e.lower, "upper": e.upper, "confidence": e.confidence},
                "reason": e.reason,
            }
            for e in note.evidence
        ],
        "evalCases": export_rows(note.eval_cases),
    }


# --- a terminal's view of a Slack message ---------------------------------------------


def terminal_text(message: SlackMessage, *, width: int = 72) -> str:
    """The blocks of `message` as plain text for a terminal (`canaryctl demo`'s preview)."""
    out: list[str] = []
    for block in message.blocks:
        kind = block.get("type")
        if kind == "header":
            title = _plain(block["text"]["text"])
            out += [title, "═" * min(width, max(len(title), 8))]
        elif kind == "section":
            if "text" in block:
                out.append(_plain(block["text"]["text"]))
            for f in block.get("fields", ()):
                label, _, value = _plain(f["text"]).partition("\n")
                out.append(f"  {label + ':':<22}{value}")
        elif kind == "divider":
            out.append("─" * width)
        elif kind == "context":
            out.append(" · ".join(_plain(e.get("text", "")) for e in block["elements"]))
    return "\n".join(out)


def preview(note: Notification, *, width: int = 72) -> str:
    """What the Slack message for `note` would say, as terminal text, and where it goes."""
    where = f"To {note.channel}" if note.channel else "No Slack channel in the policy"
    return f"{where}:\n{terminal_text(slack_message(note), width=width)}"


def _plain(mrkdwn: str) -> str:
    """mrkdwn as a terminal shows it: no markup, code indented, emoji as emoji."""
    text = re.sub(
        r"```(.*?)```", lambda m: "    " + m.group(1).replace("\n", "\n    "), mrkdwn, flags=re.S
    )
    text = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"\1", text)
    text = re.sub(r"<@([A-Z0-9]+)>", r"@\1", text)
    text = re.sub(r":[a-z_]+:", lambda m: _UNICODE.get(m.group(0), m.group(0)), text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# --- small pieces ---------------------------------------------------------------------


def _header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": _clip(text, MAX_HEADER)}}


def _section(mrkdwn: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(mrkdwn, MAX_TEXT)}}


def _fields(pairs: Sequence[tuple[str, str]]) -> Block:
    return {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": _clip(f"*{_escape(k)}*\n{_escape(v)}", 1900)}
            for k, v in pairs[:10]
        ],
    }


def _context(mrkdwn: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(mrkdwn, MAX_TEXT)}]}


def _escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as markup; anything from a policy is escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _arm(value: float | None, samples: float | None) -> str:
    n = f" ({samples:,.0f} samples)" if samples is not None else ""
    return f"{_num(value)}{n}"


def _percent(fraction: float | None) -> str:
    if fraction is None:
        return "n/a"
    return f"{fraction * 100:.4g}%"


def _duration(note: Notification) -> str:
    if note.started_at is None:
        return ""
    seconds = int(max(timedelta(0), note.created_at - note.started_at).total_seconds())
    if seconds >= 3600:  # past an hour, the seconds are noise: 1h55m, not 1h55m30s
        seconds -= seconds % 60
    return format_duration(timedelta(seconds=seconds))
