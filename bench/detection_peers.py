"""The peers the detection benchmark compares ours with, each with the knobs its users have.

Every peer is a family of configurations; `Peer.run` rolls one stream out under
many configurations at once (they share the expensive part: the counts along
the weight path and the metric values over each window), so the tuning pass
can try every configuration on the same streams. Each is modelled from how the
tool behaves and how its users configure it, not run from its code:

- **flagger** — every `interval` the canary's own value of each metric over a
  query window (`[1m]` … `[10m]`) is checked against a range the user wrote
  down: the baseline's level *measured over the hour before the rollout* (the
  user cannot know the true one) plus `width` × our policy's margins (refusals
  + width points, score − width × 0.015, TTFT p95 × (1 + width × 0.15), errors
  + width × 1.5 points). A metric with no value is a failed check ("no values
  found"). Failed checks are counted over the whole analysis (a passing check
  does not reset the count); at `threshold` the canary is rolled back. A step
  advances once its hold has passed and the last check passed.
- **argo** — Argo Rollouts' background analysis over the same measured ranges:
  every `interval` a measurement of the canary over `window`; Successful
  within `width`, Failed beyond `width × fail_factor` (beyond `width` when no
  `failureCondition` is written: `fail_factor` None), Inconclusive between;
  Error when a value is missing. More than `failureLimit` failed measurements
  abort (roll back), more than `consecutiveErrorLimit` errors in a row abort,
  more than `inconclusiveLimit` inconclusive ones pause the rollout for a human;
  after `count` measurements (None: unbounded) the run completes and nothing is
  measured any more. Steps advance on time.
- **kayenta** — Kayenta-style canary analysis: every `interval`, per metric, a
  one-sided Mann–Whitney U test of the canary's 1-minute points against the
  baseline's over the last `window` minutes (normal approximation with ties;
  a metric with fewer than 3 points on either side is NoData and left out of the
  score). A metric is High when p < 1 − `confidence`; the score is the share of
  the scored metrics that are not. A `critical` metric (`error`: the error rate,
  or `none`) that is High fails the canary whatever the score. A score below
  `marginal` rolls back at once;
  at the end of each step the last score must reach `pass`, else the stage fails
  and rolls back (no score in a step: it passes). Steps advance on time.
- **naive-z** — every `interval`, a one-sided two-sample z-test per metric at
  level `alpha` (no correction for the peeks or the metrics) on the counts since
  the start of the analysis, every cohort pooled; any significant degradation
  rolls back. Steps advance on time.

None of them sees cohorts: they judge every cohort together, as those tools do.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

from bench.detection_engines import (
    HOLD_MINUTES,
    PAUSED,
    PROMOTED,
    ROLLED_BACK,
    UNFINISHED,
    histogram_quantile,
)
from bench.detection_sim import (
    BASELINE,
    CANDIDATE,
    ERRORS,
    Q0,
    QSUM,
    REFUSALS,
    REQUESTS,
    T0,
    TSUM,
    WEIGHTS,
    PrometheusView,
    Stream,
)
from controller.metrics.simulated import QUALITY_BUCKETS, TTFT_BUCKETS

Config = dict[str, Any]

#: our policy's margins, per metric (refusal, errors, score, TTFT p95 as a relative excess)
#: the peers look once a minute: their users' knobs (intervals, windows) count whole
#: minutes, and they run the benchmark's world only, whose policy's interval is 1m
LOOK_SECONDS = 60
MARGINS = (0.01, 0.015, 0.015, 0.15)
METRICS = ("refusal", "error", "score", "ttft-p95")


@dataclass(frozen=True)
class Run:
    """How a peer's rollout of one stream ended (the fields of `Outcome`)."""

    result: str
    seconds: float
    affected_served: float
    weight: int


# --- what every peer reads ------------------------------------------------------------------


def p95_rows(buckets: np.ndarray) -> np.ndarray:
    """`histogram_quantile(0.95, …)` of each row of TTFT bucket counts (+Inf last); NaN: empty."""
    total = buckets.sum(axis=-1)
    cumulative = np.cumsum(buckets, axis=-1)
    rank = 0.95 * total
    i = (cumulative < rank[..., None]).sum(axis=-1)
    bounds = np.array(TTFT_BUCKETS)
    inf = i >= len(TTFT_BUCKETS)
    ic = np.minimum(i, len(TTFT_BUCKETS) - 1)
    lower = np.where(ic > 0, bounds[np.maximum(ic - 1, 0)], 0.0)
    below = np.where(
        ic > 0, np.take_along_axis(cumulative, np.maximum(ic - 1, 0)[..., None], -1)[..., 0], 0.0
    )
    inside = np.take_along_axis(cumulative, ic[..., None], -1)[..., 0] - below
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(inside > 0, lower + (bounds[ic] - lower) * (rank - below) / inside, lower)
    value = np.where(inf, bounds[-1], value)
    return np.where(total > 0, value, np.nan)


def metric_values(counts: np.ndarray) -> np.ndarray:
    """Refusal rate, error rate, mean score and TTFT p95 of counter rows; NaN: no value."""
    with np.errstate(divide="ignore", invalid="ignore"):
        requests = counts[..., REQUESTS]
        judged = counts[..., Q0:QSUM].sum(axis=-1)
        refusal = np.where(requests > 0, counts[..., REFUSALS] / requests, np.nan)
        error = np.where(requests > 0, counts[..., ERRORS] / requests, np.nan)
        score = np.where(judged > 0, counts[..., QSUM] / judged, np.nan)
    return np.stack([refusal, error, score, p95_rows(counts[..., T0:TSUM])], axis=-1)


def excess(values: np.ndarray, base: np.ndarray) -> np.ndarray:
    """How far each metric is beyond the measured baseline, in units of our policy's margins.

    Positive is worse: a range of width w is "every metric's excess <= w".
    """
    out = np.empty_like(values)
    out[..., 0] = (values[..., 0] - base[0]) / MARGINS[0]
    out[..., 1] = (values[..., 1] - base[1]) / MARGINS[1]
    out[..., 2] = (base[2] - values[..., 2]) / MARGINS[2]
    out[..., 3] = (values[..., 3] / base[3] - 1.0) / MARGINS[3]
    return out


def worst_excess(values: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The largest excess over the metrics; NaN when any metric has no value."""
    e = excess(values, base)
    return np.where(
        np.isnan(e).any(axis=-1), np.nan, np.nanmax(np.where(np.isnan(e), -np.inf, e), axis=-1)
    )


class Schedule:
    """The step schedule on time: weight index and the looks at which each hold ends."""

    def __init__(self, looks: int) -> None:
        holds = [m * 60 // LOOK_SECONDS for m in HOLD_MINUTES]
        ends = np.cumsum(holds) - 1  # the look at whose end each step's hold has passed
        self.step_ends = [int(e) for e in ends]
        self.promote = int(ends[-1])  # the look at whose end 100 % is reached
        index = np.full(looks, len(WEIGHTS))
        start = 0
        for s, end in enumerate(self.step_ends):
            index[start : end + 1] = s + 1
            start = end + 1
        self.index = index[:looks]


class Prepared:
    """One stream, read along the schedule on time (Argo, Kayenta, the z-test) and for Flagger."""

    def __init__(self, stream: Stream, harmed: Sequence[int]) -> None:
        if stream.look_seconds != LOOK_SECONDS:
            raise ValueError(
                f"the peers look every {LOOK_SECONDS} s; this stream's looks are "
                f"{stream.look_seconds} s"
            )
        self.stream = stream
        self.looks = stream.looks
        self.schedule = Schedule(self.looks)
        self.csum = stream.prefix.sum(axis=2)  # [role, t, G + 1, field]
        self.harmed = stream.prefix[CANDIDATE, ..., REQUESTS][:, list(harmed)].sum(
            axis=1
        )  # [t, G+1]
        assert stream.pre is not None
        self.base = metric_values(stream.pre)  # the levels measured before the rollout
        index = self.schedule.index
        t = np.arange(self.looks)
        self.affected = np.cumsum(self.harmed[t, index])
        seen: dict[int, list[np.ndarray]] = {CANDIDATE: [], BASELINE: []}
        fresh: dict[int, list[int]] = {CANDIDATE: [], BASELINE: []}
        views = {r: PrometheusView.empty(self.csum.shape[-1:]) for r in (CANDIDATE, BASELINE)}
        for look in range(self.looks):
            j = index[look]
            incs = {
                CANDIDATE: self.csum[CANDIDATE, look, j],
                BASELINE: self.csum[BASELINE, look, -1] - self.csum[BASELINE, look, j],
            }
            for role, inc in incs.items():
                seen[role].append(
                    views[role].scrape(
                        inc,
                        bool(stream.scrape_ok[role, look]),
                        bool(stream.restart[role, look]),
                        int(stream.fresh[role, look]),
                    )
                )
                fresh[role].append(int(stream.fresh[role, look]))
        self.seen = {r: np.array(seen[r]) for r in seen}  # [t, field], cumulative as scraped
        self.fresh = {r: np.cumsum(fresh[r]) for r in fresh}
        self._windows: dict[tuple[int, int], np.ndarray] = {}

    def window_values(self, role: int, minutes: int) -> np.ndarray:
        """Metric values over `[minutes]` at every look along the schedule; NaN rows: no value."""
        key = (role, minutes)
        if key not in self._windows:
            seen, fresh = self.seen[role], self.fresh[role]
            t = np.arange(self.looks)
            start = t - minutes
            before = np.where((start >= 0)[:, None], seen[np.maximum(start, 0)], 0.0)
            scrapes = fresh - np.where(start >= 0, fresh[np.maximum(start, 0)], 0) + 1
            values = metric_values(seen - before)
            values[scrapes < 2] = np.nan
            self._windows[key] = values
        return self._windows[key]

    def end(self, result: str, look: int) -> Run:
        """The run ending at the end of `look` (on the schedule on time)."""
        if result == PROMOTED:
            return Run(PROMOTED, (look + 1) * LOOK_SECONDS, float(self.affected[look]), 100)
        weight = round(WEIGHTS[self.schedule.index[look] - 1] * 100)
        return Run(result, (look + 1) * LOOK_SECONDS, float(self.affected[look]), weight)

    def unfinished(self) -> Run:
        return self.end(UNFINISHED, self.looks - 1)

    def promoted_or_unfinished(self) -> Run:
        if self.schedule.promote < self.looks:
            return self.end(PROMOTED, self.schedule.promote)
        return self.unfinished()


def _measurements(prepared: Prepared, interval: int) -> list[int]:
    """The looks at which a check every `interval` minutes runs, until promotion."""
    last = min(prepared.schedule.promote, prepared.looks - 1)
    return [t for t in range(last + 1) if (t + 1) % interval == 0]


class Peer(Protocol):
    name: str

    def configs(self, quick: bool) -> list[Config]: ...

    def run(self, prepared: Prepared, configs: Sequence[Config]) -> list[Run]: ...


# --- Flagger ------------------------------------------------------------------------------------


class Flagger:
    name = "flagger"

    def configs(self, quick: bool) -> list[Config]:
        intervals, windows = ((1, 5), (1, 10)) if quick else ((1, 2, 5), (1, 5, 10, 30))
        widths = (1.0, 2.0, 3.0) if quick else (1.0, 1.5, 2.0, 3.0, 5.0)
        thresholds = (1, 5, 10) if quick else (1, 2, 3, 5, 10)
        return [
            {"interval_min": i, "window_min": w, "width": x, "threshold": k}
            for i, w, x, k in itertools.product(intervals, windows, widths, thresholds)
        ]

    def run(self, prepared: Prepared, configs: Sequence[Config]) -> list[Run]:
        out: dict[tuple[int, int, float], list[tuple[int, int, float]]] = {}
        ended: dict[tuple[int, int, float], Run] = {}
        for c in configs:
            path = (c["interval_min"], c["window_min"], c["width"])
            if path not in out:
                out[path], ended[path] = self._path(prepared, *path)
        runs = []
        for c in configs:
            path = (c["interval_min"], c["window_min"], c["width"])
            failures = out[path]
            if len(failures) >= c["threshold"]:
                look, weight, affected = failures[c["threshold"] - 1]
                runs.append(Run(ROLLED_BACK, (look + 1) * LOOK_SECONDS, affected, weight))
            else:
                runs.append(ended[path])
        return runs

    @staticmethod
    def _path(
        prepared: Prepared, interval: int, window: int, width: float
    ) -> tuple[list[tuple[int, int, float]], Run]:
        """Walk one path (a step waits for a passing check): every failed check, and how it
        ends when no threshold is reached (promoted, or unfinished at the horizon)."""
        stream = prepared.stream
        view = PrometheusView.empty(prepared.csum.shape[-1:])
        step, since, affected = 0, 0, 0.0
        holds = [m * 60 // LOOK_SECONDS for m in HOLD_MINUTES]
        failures: list[tuple[int, int, float]] = []
        for t in range(prepared.looks):
            j = step + 1
            view.scrape(
                prepared.csum[CANDIDATE, t, j],
                bool(stream.scrape_ok[CANDIDATE, t]),
                bool(stream.restart[CANDIDATE, t]),
                int(stream.fresh[CANDIDATE, t]),
            )
            affected += float(prepared.harmed[t, j])
            if (t + 1) % interval:
                continue
            counts = view.window(window)
            ok = False
            if counts is not None:
                e = _worst_excess_one(counts, prepared.base)
                ok = e is not None and e <= width
            weight = round(WEIGHTS[step] * 100)
            if not ok:
                failures.append((t, weight, affected))
            elif t + 1 - since >= holds[step]:
                step, since = step + 1, t + 1
                if step >= len(holds):
                    return failures, Run(PROMOTED, (t + 1) * LOOK_SECONDS, affected, 100)
        weight = round(WEIGHTS[step] * 100)
        return failures, Run(UNFINISHED, prepared.looks * LOOK_SECONDS, affected, weight)


def _worst_excess_one(counts: np.ndarray, base: np.ndarray) -> float | None:
    requests = counts[REQUESTS]
    judged = counts[Q0:QSUM].sum()
    p95 = histogram_quantile(0.95, counts[T0:TSUM])
    if requests <= 0 or judged <= 0 or p95 is None:
        return None
    return max(
        (counts[REFUSALS] / requests - base[0]) / MARGINS[0],
        (counts[ERRORS] / requests - base[1]) / MARGINS[1],
        (base[2] - counts[QSUM] / judged) / MARGINS[2],
        (p95 / base[3] - 1.0) / MARGINS[3],
    )


# --- Argo Rollouts --------------------------------------------------------------------------------

SUCCESS, FAILED, INCONCLUSIVE, ERROR = 0, 1, 2, 3


class Argo:
    name = "argo"

    def configs(self, quick: bool) -> list[Config]:
        intervals, windows = ((1, 5), (5,)) if quick else ((1, 2, 5), (5, 10, 30))
        widths = (1.0, 2.0, 3.0) if quick else (1.0, 1.5, 2.0, 3.0, 5.0)
        fail_factors: tuple[float | None, ...] = (None, 1.5)
        failure_limits = (0, 2) if quick else (0, 1, 2, 5)
        error_limits = (4,) if quick else (0, 4)
        counts: tuple[int | None, ...] = (None,) if quick else (None, 20)
        out = []
        for i, w, x, f, fl, el, n in itertools.product(
            intervals, windows, widths, fail_factors, failure_limits, error_limits, counts
        ):
            for il in (0,) if f is None else (0, 3):
                out.append(
                    {
                        "interval_min": i,
                        "window_min": w,
                        "width": x,
                        "fail_factor": f,
                        "count": n,
                        "failureLimit": fl,
                        "consecutiveErrorLimit": el,
                        "inconclusiveLimit": il,
                    }
                )
        return out

    def run(self, prepared: Prepared, configs: Sequence[Config]) -> list[Run]:
        statuses: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
        runs = []
        for c in configs:
            key = (c["interval_min"], c["window_min"], c["width"], c["fail_factor"])
            if key not in statuses:
                statuses[key] = self._statuses(prepared, *key)
            runs.append(self._count(prepared, statuses[key], c))
        return runs

    @staticmethod
    def _statuses(
        prepared: Prepared, interval: int, window: int, width: float, fail_factor: float | None
    ) -> list[tuple[int, int]]:
        worst = worst_excess(prepared.window_values(CANDIDATE, window), prepared.base)
        fail_at = width if fail_factor is None else width * fail_factor
        out = []
        for t in _measurements(prepared, interval):
            e = worst[t]
            if np.isnan(e):
                out.append((t, ERROR))
            elif e <= width:
                out.append((t, SUCCESS))
            elif e > fail_at:
                out.append((t, FAILED))
            else:
                out.append((t, INCONCLUSIVE))
        return out

    @staticmethod
    def _count(prepared: Prepared, statuses: list[tuple[int, int]], c: Config) -> Run:
        failed = inconclusive = errors = 0
        for n, (t, status) in enumerate(statuses):
            if c["count"] is not None and n >= c["count"]:
                break  # the run completed: nothing more is measured
            if status == ERROR:
                errors += 1
                if errors > c["consecutiveErrorLimit"]:
                    return prepared.end(ROLLED_BACK, t)
                continue
            errors = 0
            if status == FAILED:
                failed += 1
                if failed > c["failureLimit"]:
                    return prepared.end(ROLLED_BACK, t)
            elif status == INCONCLUSIVE:
                inconclusive += 1
                if inconclusive > c["inconclusiveLimit"]:
                    return prepared.end(PAUSED, t)
        return prepared.promoted_or_unfinished()


# --- Kayenta --------------------------------------------------------------------------------


def mann_whitney_p(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One-sided Mann–Whitney p-values that rows of `x` are stochastically greater than `y`.

    NaN entries are left out (Kayenta's `nanStrategy: remove`). Normal
    approximation with the tie correction (the variance from the pooled
    midranks) and a continuity correction; NaN where either side has fewer than
    3 points.
    """
    z = np.concatenate([x, y], axis=-1)
    valid = ~np.isnan(z)
    n_x = (~np.isnan(x)).sum(axis=-1)
    n_y = (~np.isnan(y)).sum(axis=-1)
    n = n_x + n_y
    zi, zj = z[..., :, None], z[..., None, :]
    vj = valid[..., None, :]
    less = ((zj < zi) & vj).sum(axis=-1)
    equal = ((zj == zi) & vj).sum(axis=-1)
    ranks = np.where(valid, less + (equal + 1) / 2.0, 0.0)
    m = x.shape[-1]
    r_x = ranks[..., :m].sum(axis=-1)
    u = r_x - n_x * (n_x + 1) / 2.0
    mean = n_x * n_y / 2.0
    centred = np.where(valid, ranks - (n[..., None] + 1) / 2.0, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = n_x * n_y / (n * (n - 1)) * (centred**2).sum(axis=-1)
        zscore = (u - mean - 0.5) / np.sqrt(var)
    p = np.where(var > 0, stats.norm.sf(zscore), 1.0)
    return np.where((n_x >= 3) & (n_y >= 3), p, np.nan)


class Kayenta:
    name = "kayenta"

    def configs(self, quick: bool) -> list[Config]:
        intervals, windows = ((5,), (10, 30)) if quick else ((1, 5, 10), (10, 20, 30))
        confidences = (0.98,) if quick else (0.95, 0.98, 0.99)
        thresholds = ((75, 95), (50, 75)) if quick else ((50, 75), (50, 95), (75, 75), (75, 95))
        critical = ("none", "error")
        return [
            {
                "interval_min": i,
                "window_min": w,
                "confidence": c,
                "marginal": marginal,
                "pass": passing,
                "critical": k,
            }
            for i, w, c, (marginal, passing), k in itertools.product(
                intervals, windows, confidences, thresholds, critical
            )
        ]

    def run(self, prepared: Prepared, configs: Sequence[Config]) -> list[Run]:
        pvalues: dict[int, np.ndarray] = {}
        runs = []
        for c in configs:
            if c["window_min"] not in pvalues:
                pvalues[c["window_min"]] = self._pvalues(prepared, c["window_min"])
            runs.append(self._judge(prepared, pvalues[c["window_min"]], c))
        return runs

    @staticmethod
    def points(prepared: Prepared, role: int) -> np.ndarray:
        """1-minute points of every metric, oriented so that higher is worse; NaN: no value."""
        seen = prepared.seen[role]
        minute = np.diff(seen, axis=0, prepend=np.zeros((1, seen.shape[1])))
        values = metric_values(np.maximum(minute, 0.0))
        values[..., 2] = -values[..., 2]  # a lower score is worse
        return values

    def _pvalues(self, prepared: Prepared, window: int) -> np.ndarray:
        """p[t, metric] over the last `window` minutes at every look."""
        cand, base = self.points(prepared, CANDIDATE), self.points(prepared, BASELINE)
        looks = prepared.looks
        t = np.arange(looks)[:, None] - np.arange(window)[None, ::-1]  # [t, window]
        inside = t >= 0
        out = np.empty((looks, len(METRICS)))
        for m in range(len(METRICS)):
            x = np.where(inside, cand[np.maximum(t, 0), m], np.nan)
            y = np.where(inside, base[np.maximum(t, 0), m], np.nan)
            out[:, m] = mann_whitney_p(x, y)
        return out

    @staticmethod
    def _judge(prepared: Prepared, p: np.ndarray, c: Config) -> Run:
        alpha = 1.0 - c["confidence"]
        last: float | None = None
        ends = set(prepared.schedule.step_ends)
        for t in range(min(prepared.schedule.promote, prepared.looks - 1) + 1):
            if (t + 1) % c["interval_min"] == 0:
                if c["critical"] == "error" and p[t, 1] < alpha:
                    return prepared.end(ROLLED_BACK, t)  # a critical metric fails the canary
                scored = p[t][~np.isnan(p[t])]
                if len(scored):
                    last = 100.0 * float((scored >= alpha).sum()) / len(scored)
                    if last < c["marginal"]:
                        return prepared.end(ROLLED_BACK, t)
            if t in ends:
                if last is not None and last < c["pass"]:
                    return prepared.end(ROLLED_BACK, t)
                last = None  # the next stage is judged on its own scores
        return prepared.promoted_or_unfinished()


# --- the naive z-test ---------------------------------------------------------------------------


def _z_proportion(x_c: np.ndarray, n_c: np.ndarray, x_b: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    """Two-proportion z (pooled), positive when the candidate's rate is higher; 0 without data."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (x_c + x_b) / (n_c + n_b)
        se = np.sqrt(p * (1 - p) * (1 / n_c + 1 / n_b))
        z = (x_c / n_c - x_b / n_b) / se
    return np.where((n_c > 0) & (n_b > 0) & (se > 0), z, 0.0)


def _histogram_variance(
    counts: np.ndarray, total: np.ndarray, bounds: tuple[float, ...]
) -> np.ndarray:
    """A variance estimate of histogram rows from bucket midpoints (the sum gives the mean)."""
    n = counts.sum(axis=-1)
    edges = np.array((0.0, *bounds))
    mids = np.append((edges[:-1] + edges[1:]) / 2, bounds[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / n
        var = (counts * mids * mids).sum(axis=-1) / n - mean * mean
    return np.where(n > 1, np.maximum(var, 0.0), 0.0)


def naive_z(c: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The largest z of a degradation over the four metrics, per row of counts [t, field]."""
    zs = [
        _z_proportion(c[:, REFUSALS], c[:, REQUESTS], b[:, REFUSALS], b[:, REQUESTS]),
        _z_proportion(c[:, ERRORS], c[:, REQUESTS], b[:, ERRORS], b[:, REQUESTS]),
    ]
    nq_c, nq_b = c[:, Q0:QSUM].sum(axis=1), b[:, Q0:QSUM].sum(axis=1)
    var_c = _histogram_variance(c[:, Q0:QSUM], c[:, QSUM], QUALITY_BUCKETS)
    var_b = _histogram_variance(b[:, Q0:QSUM], b[:, QSUM], QUALITY_BUCKETS)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(var_c / nq_c + var_b / nq_b)
        z = (b[:, QSUM] / nq_b - c[:, QSUM] / nq_c) / se
    zs.append(np.where((nq_c > 1) & (nq_b > 1) & (se > 0), z, 0.0))
    # TTFT tail: the share slower than the bucket bound nearest the baseline's p95
    tb, tc = b[:, T0:TSUM], c[:, T0:TSUM]
    with np.errstate(divide="ignore", invalid="ignore"):
        cumulative = np.cumsum(tb, axis=1) / tb.sum(axis=1, keepdims=True)
    i = np.minimum((cumulative[:, :-1] < 0.95).sum(axis=1), len(TTFT_BUCKETS) - 1)
    above = np.arange(tb.shape[1])[None, :] > i[:, None]
    zs.append(
        _z_proportion(
            (tc * above).sum(axis=1), tc.sum(axis=1), (tb * above).sum(axis=1), tb.sum(axis=1)
        )
    )
    return np.max(np.stack(zs), axis=0)


class NaiveZ:
    name = "naive-z"

    def configs(self, quick: bool) -> list[Config]:
        intervals = (1, 5) if quick else (1, 5, 10)
        alphas = (0.05, 0.001) if quick else (0.05, 0.01, 0.001, 0.0001, 0.00001)
        return [{"interval_min": i, "alpha": a} for i, a in itertools.product(intervals, alphas)]

    def run(self, prepared: Prepared, configs: Sequence[Config]) -> list[Run]:
        z = naive_z(prepared.seen[CANDIDATE], prepared.seen[BASELINE])
        runs = []
        for c in configs:
            threshold = float(stats.norm.isf(c["alpha"]))
            run = prepared.promoted_or_unfinished()
            for t in _measurements(prepared, c["interval_min"]):
                if z[t] > threshold:
                    run = prepared.end(ROLLED_BACK, t)
                    break
            runs.append(run)
        return runs


PEERS: tuple[Peer, ...] = (Flagger(), Argo(), Kayenta(), NaiveZ())
PEER_NAMES = tuple(p.name for p in PEERS)


def config_text(config: Config) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())
