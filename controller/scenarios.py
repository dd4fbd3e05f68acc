"""The scenarios of `canaryctl demo` and `canaryctl rehearse`, by name.

A module of their own, apart from `controller.demo`, because the CLI's option
types are built when `canaryctl` starts: importing the demo there would load
the engine, the judge and the store (scipy, SQLAlchemy, Alembic) for every
command, `--help` included.
"""

from enum import StrEnum


class Scenario(StrEnum):
    """What the simulated candidate does."""

    COHORT_REGRESSION = "cohort-regression"
    HEALTHY = "healthy"
    OUTAGE = "outage"
    #: the cohort-regression rollout, then the same candidate again behind a preRollout
    #: gate that replays the first one's eval cases: stopped before it shadows
    GATE_REPLAY = "gate-replay"
