"""What a notifier is given, what it answers, and the `Notifier` port itself.

The executor writes an outbox message (an event and an `OutboxPayload`, kept as
JSON) in the same transaction as the state change it reports; the delivery
worker turns each into a `Notification`: the payload's typed fields, plus the
evidence the judge recorded for the same tick (queries, values, samples, limits,
intervals), so a notifier renders without touching the store. Everything a
notification needs of the rollout travels in the payload: nothing is read back
out of the dedupe key or the stored policy.

A notifier answers with a `Receipt` or raises from the one error tree
(`controller.errors`): `TransientError` (worth retrying, after `retry_after`
seconds when the far side said so) or `PermanentError` (a human has to fix the
token, the channel, the URL...). Nothing else may escape a notifier: the worker
treats any other exception as a bug and gives the message up, visibly, so one
broken message never blocks a rollout's queue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from controller.cases import EvalCase, export_rows
from controller.engine.phases import Phase
from controller.engine.state import GateResult
from controller.policy.causes import Cause


class OutboxLike(Protocol):
    """What a notification is built from: an outbox message as the store keeps it."""

    @property
    def dedupe_key(self) -> str: ...

    @property
    def event(self) -> str: ...

    @property
    def payload(self) -> Mapping[str, Any]: ...

    @property
    def created_at(self) -> datetime: ...


class AnalysisLike(Protocol):
    """One verdict of one look as the store keeps it (`AnalysisRecord`)."""

    @property
    def at(self) -> datetime: ...

    @property
    def tick(self) -> int: ...

    @property
    def metric(self) -> str: ...

    @property
    def cohort(self) -> str: ...

    @property
    def verdict(self) -> str: ...

    @property
    def query(self) -> str: ...

    @property
    def baseline_value(self) -> float | None: ...

    @property
    def candidate_value(self) -> float | None: ...

    @property
    def baseline_samples(self) -> float | None: ...

    @property
    def candidate_samples(self) -> float | None: ...

    @property
    def evidence(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class CellNote:
    """A cell the engine named in its decision (the failing or undecided ones)."""

    metric: str
    cohort: str
    verdict: str
    summary: str = ""


@dataclass(frozen=True)
class GateNote:
    """A gate's result the event is about: `body` is the webhook's answer (or the
    Job's message), at most 4 KiB, shown in full when the gate failed."""

    name: str
    attempt: int
    outcome: str
    detail: str = ""
    body: str = ""

    @classmethod
    def of_result(cls, result: GateResult) -> GateNote:
        return cls(result.name, result.attempt, str(result.outcome), result.detail, result.body)

    @classmethod
    def of(cls, data: Any) -> GateNote | None:
        if not isinstance(data, Mapping) or not data.get("name"):
            return None
        return cls(
            str(data["name"]),
            int(data.get("attempt") or 1),
            str(data.get("outcome") or ""),
            str(data.get("detail") or ""),
            str(data.get("body") or ""),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "attempt": self.attempt,
            "outcome": self.outcome,
            "detail": self.detail,
            "body": self.body,
        }


@dataclass(frozen=True)
class OutboxPayload:
    """The rollout as an event found it: what the executor hands the delivery worker.

    `step` is the engine's index (-1 before the first step), `steps` how many the
    policy has, `started_at` when this run of the rollout began and `tick` the
    look whose verdicts are the evidence (None for an event outside a tick).
    `to_json` is what the store keeps; `from_json` reads it back, tolerating the
    fields of older messages that lack some of them.
    """

    rollout: str
    event: str
    text: str = ""
    model: str = ""
    baseline: str = ""
    candidate: str = ""
    phase: Phase | None = None
    step: int = -1
    steps: int | None = None
    started_at: datetime | None = None
    tick: int | None = None
    route: Mapping[str, Any] = field(default_factory=dict)
    channel: str | None = None
    mention: tuple[str, ...] = ()
    cells: tuple[CellNote, ...] = ()
    cause: Cause | None = None
    #: the eval cases a rollback or an abort recorded (none for other events)
    eval_cases: tuple[EvalCase, ...] = ()
    #: the gate result the event is about (a failed gate's body is shown)
    gate: GateNote | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rollout": self.rollout,
            "model": self.model,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "event": self.event,
            "cause": str(self.cause) if self.cause else None,
            "text": self.text,
            "phase": str(self.phase) if self.phase else None,
            "step": self.step,
            "steps": self.steps,
            "startedAt": self.started_at.isoformat() if self.started_at else None,
            "tick": self.tick,
            "route": dict(self.route),
            "gate": self.gate.to_json() if self.gate is not None else None,
            "channel": self.channel,
            "mention": list(self.mention),
            "cells": [
                {"metric": c.metric, "cohort": c.cohort, "verdict": c.verdict, "summary": c.summary}
                for c in self.cells
            ],
            **({"evalCases": export_rows(self.eval_cases)} if self.eval_cases else {}),
        }

    @classmethod
    def from_json(
        cls, p: Mapping[str, Any], *, rollout: str = "", event: str = ""
    ) -> OutboxPayload:
        return cls(
            rollout=str(p.get("rollout") or rollout),
            event=str(p.get("event") or event),
            text=str(p.get("text") or ""),
            model=str(p.get("model") or ""),
            baseline=str(p.get("baseline") or ""),
            candidate=str(p.get("candidate") or ""),
            phase=_phase(p.get("phase")),
            step=int(p.get("step", -1)),
            steps=int(p["steps"]) if p.get("steps") else None,
            started_at=datetime.fromisoformat(p["startedAt"]) if p.get("startedAt") else None,
            tick=int(p["tick"]) if p.get("tick") is not None else None,
            route=dict(p.get("route") or {}),
            channel=str(p["channel"]) if p.get("channel") else None,
            mention=tuple(str(m) for m in p.get("mention") or ()),
            cells=tuple(
                CellNote(
                    str(c.get("metric", "")),
                    str(c.get("cohort", "")),
                    str(c.get("verdict", "")),
                    str(c.get("summary") or ""),
                )
                for c in p.get("cells") or ()
                if isinstance(c, Mapping)
            ),
            cause=_cause(p.get("cause")),
            eval_cases=_cases(p.get("evalCases")),
            gate=GateNote.of(p.get("gate")),
        )


@dataclass(frozen=True)
class Evidence:
    """The numbers behind one metric × cohort verdict, as the judge recorded them.

    `limit` is the rule that decided (`maxIncrease`, `max`, ...) with its
    `threshold` and the `statement` it tested; `lower`..`upper` bound the tested
    quantity (`estimate`) with `confidence`, at every look at once.
    """

    metric: str
    cohort: str
    verdict: str
    query: str = ""
    baseline_value: float | None = None
    candidate_value: float | None = None
    baseline_samples: float | None = None
    candidate_samples: float | None = None
    reason: str = ""
    limit: str | None = None
    threshold: float | None = None
    statement: str = ""
    estimate: float | None = None
    lower: float | None = None
    upper: float | None = None
    confidence: float | None = None

    @classmethod
    def of(cls, record: AnalysisLike) -> Evidence:
        evidence = record.evidence
        decided_by = evidence.get("decidedBy")
        checks = [c for c in evidence.get("checks") or () if isinstance(c, Mapping)]
        check = next((c for c in checks if c.get("limit") == decided_by), None)
        if check is None:  # no deciding limit (e.g. inconclusive): the first with this verdict
            check = next((c for c in checks if c.get("verdict") == record.verdict), None)
        alpha = _float(check.get("alpha")) if check else None
        return cls(
            metric=record.metric,
            cohort=record.cohort,
            verdict=record.verdict,
            query=record.query,
            baseline_value=record.baseline_value,
            candidate_value=record.candidate_value,
            baseline_samples=record.baseline_samples,
            candidate_samples=record.candidate_samples,
            reason=str(evidence.get("reason") or ""),
            limit=str(check["limit"]) if check and check.get("limit") else None,
            threshold=_float(check.get("threshold")) if check else None,
            statement=str(check.get("statement") or "") if check else "",
            estimate=_float(check.get("estimate")) if check else None,
            lower=_float(check.get("lower")) if check else None,
            upper=_float(check.get("upper")) if check else None,
            confidence=1.0 - alpha if alpha is not None else None,
        )


@dataclass(frozen=True)
class Notification:
    """One event of one rollout, ready to render: the payload's fields and the evidence.

    `step` is the engine's index (-1 before the first step, during shadowing);
    `steps` is how many steps the policy has, when known; `started_at` is when
    this run of the rollout began (for the promotion's duration). `cause` is the
    engine's cause code (`controller.policy.Cause`), None for an event on evidence
    and for messages queued before causes existed.
    """

    rollout: str
    dedupe_key: str
    event: str
    created_at: datetime
    text: str = ""
    model: str = ""
    baseline: str = ""
    candidate: str = ""
    phase: Phase | None = None
    step: int = -1
    steps: int | None = None
    route: Mapping[str, Any] = field(default_factory=dict)
    channel: str | None = None
    mention: tuple[str, ...] = ()
    cells: tuple[CellNote, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    started_at: datetime | None = None
    cause: Cause | None = None
    #: the eval cases a rollback (or a captured abort) recorded
    eval_cases: tuple[EvalCase, ...] = ()
    gate: GateNote | None = None

    @classmethod
    def of(
        cls,
        rollout: str,
        message: OutboxLike,
        *,
        analyses: Sequence[AnalysisLike] = (),
        steps: int | None = None,
        started_at: datetime | None = None,
    ) -> Notification:
        """Read an outbox message (and the analysis rows of its tick) into a notification;
        `steps` and `started_at` default to the payload's."""
        p = OutboxPayload.from_json(message.payload, rollout=rollout, event=message.event)
        return cls(
            rollout=p.rollout,
            dedupe_key=message.dedupe_key,
            event=message.event,
            created_at=message.created_at,
            text=p.text,
            model=p.model,
            baseline=p.baseline,
            candidate=p.candidate,
            phase=p.phase,
            step=p.step,
            steps=steps if steps is not None else p.steps,
            route=p.route,
            channel=p.channel,
            mention=p.mention,
            cells=p.cells,
            evidence=tuple(Evidence.of(a) for a in analyses),
            started_at=started_at if started_at is not None else p.started_at,
            cause=p.cause,
            eval_cases=p.eval_cases,
            gate=p.gate,
        )

    def evidence_for(self, cell: CellNote) -> Evidence | None:
        return next(
            (e for e in self.evidence if (e.metric, e.cohort) == (cell.metric, cell.cohort)),
            None,
        )


@dataclass(frozen=True)
class Thread:
    """Where a rollout's conversation is in a sink: channel ID and top message ts."""

    channel: str
    ts: str


@dataclass(frozen=True)
class Receipt:
    """What a delivery did: where the message is (`ref`), the thread it opened, if any.

    `skipped` says the sink had nowhere to send it (no Slack channel in the
    policy), which is done, not failed.
    """

    ref: str | None = None
    opened: Thread | None = None
    skipped: bool = False


class Notifier(Protocol):
    """Delivers notifications to one sink. `name` keys its deliveries in the store.

    `retry` is true when an earlier attempt of this same message was recorded:
    it may have arrived (the worker died, or the answer was lost), so a notifier
    that can look first (Slack, by the key in the message metadata) does, and
    one that cannot passes the key along for the receiver to drop repeats.
    """

    @property
    def name(self) -> str: ...

    def deliver(self, note: Notification, thread: Thread | None, *, retry: bool) -> Receipt: ...


def _cause(value: Any) -> Cause | None:
    try:
        return Cause(value) if value else None
    except ValueError:  # a code from a newer version: shown without one, never dropped
        return None


def _phase(value: Any) -> Phase | None:
    try:
        return Phase(value) if value else None
    except ValueError:  # a phase from a newer version: shown without one, never dropped
        return None


def _cases(rows: Any) -> tuple[EvalCase, ...]:
    """The payload's eval cases; a row that is not one (a newer version's) is left out."""
    out = []
    for row in rows if isinstance(rows, list) else ():
        if not isinstance(row, Mapping):
            continue
        try:
            out.append(EvalCase.from_row(row))
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(out)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
