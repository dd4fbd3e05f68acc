"""Which human command makes sense in which phase: one table, for every way to give one.

`canaryctl` refuses a command the table does not allow, and the Slack buttons
offer only the commands it allows in the rollout's current phase, so the two
can never disagree about what a human may do.
"""

from __future__ import annotations

from controller.engine.phases import Phase
from controller.engine.state import CommandKind

_LIVE = frozenset(
    {Phase.PENDING, Phase.SHADOWING, Phase.PROGRESSING, Phase.PAUSED, Phase.GATE_RUNNING}
)

#: the phases each command applies in (promote while a gate runs: go on without it)
APPLIES_IN: dict[CommandKind, frozenset[Phase]] = {
    CommandKind.PROMOTE: _LIVE,
    CommandKind.PROMOTE_FULL: frozenset(
        {Phase.SHADOWING, Phase.PROGRESSING, Phase.PAUSED, Phase.GATE_RUNNING}
    ),
    CommandKind.PAUSE: frozenset(
        {Phase.PENDING, Phase.SHADOWING, Phase.PROGRESSING, Phase.GATE_RUNNING}
    ),
    CommandKind.RESUME: frozenset({Phase.PAUSED}),
    CommandKind.ABORT: _LIVE,
}


def applicable(phase: Phase) -> tuple[CommandKind, ...]:
    """The commands that apply in `phase`, in the order of `CommandKind`."""
    return tuple(kind for kind in CommandKind if phase in APPLIES_IN[kind])
