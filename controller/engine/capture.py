"""Which cells of a tick become eval cases: a pure choice, made from the decision.

A rollback on evidence (`LimitBroken`, `CircuitBreaker`) records every critical
cell that FAILed: those are the production failures the regression set must
grow from. A human's abort records nothing, unless the abort was given with
`--capture`: then the cells that FAIL at that look (advisory ones included: the
human may have acted on them), or, when none does, every cell that is not PASS
and has candidate samples (what the human suspected). Rollbacks for `NoData` or
a deadline record nothing: no metric failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.analysis.verdicts import CellVerdict, Verdict
from controller.cases import Trigger
from controller.engine.phases import Phase
from controller.engine.state import CommandKind, Decision
from controller.policy.causes import Cause


@dataclass(frozen=True)
class Capture:
    """The cells to record as eval cases, and why."""

    trigger: Trigger
    cells: tuple[CellVerdict, ...]


def cells_to_capture(decision: Decision, verdicts: Sequence[CellVerdict]) -> Capture | None:
    """The cells of this tick's look to record, or None when the tick records none."""
    for t in decision.transitions:
        if t.to_phase is Phase.ROLLED_BACK and t.cause is not None and t.cause.failed_metric:
            cells = tuple(v for v in verdicts if v.critical and v.verdict is Verdict.FAIL)
            return Capture(Trigger.ROLLBACK, cells) if cells else None
        if t.to_phase is Phase.ABORTED and t.cause is Cause.MANUAL:
            if not any(
                c.kind is CommandKind.ABORT and c.capture for c in decision.applied_commands
            ):
                return None
            cells = tuple(v for v in verdicts if v.verdict is Verdict.FAIL) or tuple(
                v
                for v in verdicts
                if v.verdict is not Verdict.PASS and v.candidate and v.candidate.samples
            )
            return Capture(Trigger.ABORT, cells) if cells else None
    return None
