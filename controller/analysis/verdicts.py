"""What the judge says, and the evidence it says it with.

A verdict is given for every metric × cohort cell (and for the pseudo-cohort
`overall`, all traffic together). The four verdicts, from worst to best:

- FAIL: with the policy's confidence, the candidate breaks a limit. Rolls back
  when the metric is critical.
- NO_DATA: a failed measurement (a query failed, or returned no series).
  Handled by the policy's `noData` behaviour; never promotes, never rolls back
  on its own.
- INCONCLUSIVE: not yet enough evidence to tell: no candidate requests in the
  cell yet, fewer than `minSamples`, or a test that has not decided. Hold and
  keep looking.
- PASS: with the policy's confidence, the candidate is within every limit. The
  only verdict that lets a rollout promote.

The worst verdict wins, within a cell (over its limits) and over the cells of
a judgement, as in Argo Rollouts' analysis. Every verdict carries the numbers
it was reached with, so a Slack message or the audit log can show them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    NO_DATA = "no-data"

    @property
    def severity(self) -> int:
        """Higher is worse: FAIL > NO_DATA > INCONCLUSIVE > PASS."""
        return _SEVERITY[self]


_SEVERITY = {Verdict.PASS: 0, Verdict.INCONCLUSIVE: 1, Verdict.NO_DATA: 2, Verdict.FAIL: 3}


def worst(verdicts: Iterable[Verdict], default: Verdict = Verdict.PASS) -> Verdict:
    """The worst of `verdicts` (`default` when there are none)."""
    return max(verdicts, key=lambda v: v.severity, default=default)


class Limit(StrEnum):
    """Which rule of a metric spec decided, as the policy spells it."""

    MAX = "max"
    MIN = "min"
    MAX_INCREASE = "maxIncrease"
    MAX_DECREASE = "maxDecrease"
    MAX_RATIO = "maxRatio"
    #: the circuit breaker: a gross failure, judged before `minSamples`
    BREAKER = "breaker"


class Method(StrEnum):
    """How a limit was tested (see `controller.analysis.sequential`)."""

    #: exact Bernoulli SPRT, null at the tolerance, on a [0, 1] mean (one cohort)
    BERNOULLI_SPRT = "bernoulli-sprt"
    #: asymptotic Gaussian SPRT, null at the tolerance (comparisons, standardised overall)
    GAUSSIAN_SPRT = "gaussian-sprt"
    #: exact Beta-mixture e-process against the limit itself (the circuit breaker,
    #: and limits with no room for a tolerance)
    BETA_MIXTURE = "beta-mixture"
    #: asymptotic normal-mixture e-process against the limit itself
    NORMAL_MIXTURE = "normal-mixture"
    #: a gauge compared to its limit as it is, with no statistics
    AS_IS = "as-is"


class NoDataReason(StrEnum):
    QUERY_FAILED = "query-failed"
    NO_SERIES = "no-series"
    #: no longer given by the judge (a candidate without requests is INCONCLUSIVE);
    #: kept so that audit records and callers written before still read
    NO_CANDIDATE_TRAFFIC = "no-candidate-traffic"


@dataclass(frozen=True)
class Arm:
    """One version's side of a cell: its value in the metric's unit, and its samples."""

    value: float | None
    samples: float | None


@dataclass(frozen=True)
class LimitCheck:
    """One limit of one cell, tested: the hypothesis, the numbers, the outcome.

    The tested quantity is on the scale the test runs on, which `statement`
    spells out: the candidate's rate for `max` on a proportion, candidate minus
    baseline for `maxIncrease`, the share of requests slower than the limit for
    a latency quantile. `lower` and `upper` bound it with the policy's
    confidence at every look at once. `log_e_fail` and `log_e_pass` are the
    logs of the e-values against "within the tolerance" and against "at or
    beyond the limit". FAIL is settled for every critical test of a judgement
    together (the closed average of e-values), so `log_threshold` is what this
    test's FAIL e-value needed given the others; PASS needs
    `log_pass_threshold`, log(1/alpha) at the full level.
    """

    limit: Limit
    threshold: float
    verdict: Verdict
    statement: str
    method: Method
    estimate: float | None = None
    allowed: float | None = None
    lower: float | None = None
    upper: float | None = None
    log_e_fail: float | None = None
    log_e_pass: float | None = None
    log_threshold: float | None = None
    alpha: float | None = None
    reason: str = ""
    #: the difference that is fine, in the limit's unit
    tolerance: float | None = None
    #: log(1/alpha) at the full level: PASS is an intersection-union test
    log_pass_threshold: float | None = None
    #: the FAIL test has the information to catch a candidate at the limit with the power
    powered: bool = False
    #: estimated further candidate samples until this limit decides
    needed_samples: float | None = None


@dataclass(frozen=True)
class CellVerdict:
    """The verdict on one metric in one cohort (or `overall`), with its evidence."""

    metric: str
    cohort: str
    verdict: Verdict
    critical: bool
    reason: str
    baseline: Arm | None = None
    candidate: Arm | None = None
    checks: tuple[LimitCheck, ...] = ()
    decided_by: Limit | None = None
    no_data: NoDataReason | None = None
    query: str = ""
    #: the FAIL test has the information at which it catches a candidate at the limit with
    #: the declared power: not failing by now is evidence enough to promote
    powered: bool = False
    #: estimated further candidate samples until this cell decides (None: unknown or decided)
    needed_samples: float | None = None

    @property
    def waiting_for_traffic(self) -> bool:
        """INCONCLUSIVE before any test ran: no candidate requests yet, or below `minSamples`."""
        return self.verdict is Verdict.INCONCLUSIVE and not self.checks

    @property
    def deciding_check(self) -> LimitCheck | None:
        for check in self.checks:
            if check.limit is self.decided_by:
                return check
        return None


@dataclass(frozen=True)
class Judgement:
    """Every cell's verdict at one look, and how the confidence was spent.

    `verdict` is the worst verdict of the critical cells: what the rollout
    should act on. Advisory cells (`critical: false`) are judged and recorded
    the same way but never roll back and never block promotion.
    """

    at: datetime
    cells: tuple[CellVerdict, ...]
    #: 1 - confidence: the chance of rolling back a healthy candidate, at most
    alpha: float
    #: the share of `alpha` each critical (metric, cohort, limit) test gets
    alpha_per_test: float
    tests: int

    @property
    def verdict(self) -> Verdict:
        return worst(c.verdict for c in self.cells if c.critical)

    @property
    def failures(self) -> tuple[CellVerdict, ...]:
        """The critical cells that failed: why the rollout rolls back."""
        return tuple(c for c in self.cells if c.critical and c.verdict is Verdict.FAIL)

    @property
    def advisories(self) -> tuple[CellVerdict, ...]:
        """Advisory cells that failed: worth telling the owners, nothing more."""
        return tuple(c for c in self.cells if not c.critical and c.verdict is Verdict.FAIL)

    def cell(self, metric: str, cohort: str) -> CellVerdict:
        """The verdict for `metric` in `cohort` (KeyError when not judged)."""
        for c in self.cells:
            if c.metric == metric and c.cohort == cohort:
                return c
        raise KeyError((metric, cohort))
