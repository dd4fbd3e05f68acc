"""From counts to the quantity a limit is tested on, and its variance.

Every limit the judge tests is turned into a *contrast*: an estimate `D` that
is positive when the candidate is beyond the limit and negative when it is
within it (0 at the limit), the variance of that estimate if the candidate
sat on the limit, and the mixture scale `tau` of the tests against the limit
itself. The indifference-zone tests read the same contrast with the
tolerance at -delta (`controller.analysis.checks`).

Two things make these estimates trustworthy:

- Cohort standardisation. Steps can send a cohort to the candidate at a higher
  weight than everyone else (`cohortWeights`), so the candidate's traffic mix
  differs from the baseline's. Pooling would compare different populations
  (Simpson's paradox: a candidate identical to the baseline in every cohort
  looks worse overall because it served more of the hard cohort). The overall
  cell therefore weights each cohort's value by the cohort's share of all
  traffic (baseline plus candidate: routing splits the population, it does not
  change it), on the cohorts both versions have seen. When a cohort is also
  split by traffic step, its steps share the cohort's weight by the
  information each carries (`population_weights`).
- Null-restricted variances. The variance is the one the data would have if
  the candidate sat exactly on the limit (pooling baseline and candidate under
  that constraint, as the Farrington-Manning score test does). A candidate with
  0 refusals in 200 requests then does not look certain to be below 1 %.

Arrays carry cohorts (strata) on the last axis; any leading axes (rollouts,
looks) are carried through, which is how the statistical tests simulate
thousands of rollouts with the very code the judge runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from controller.analysis.observations import clip_one, numpy_sum
from controller.analysis.verdicts import Limit

Array = NDArray[np.float64]

#: a mixture scale below this would make the test look for effects too small to matter
MIN_TAU = 1e-4
#: the scale used when a relative limit's margin is 0 ("no worse at all")
ZERO_MARGIN_TAU = 0.01


@dataclass(frozen=True)
class Contrast:
    """An estimate that is > 0 beyond the limit, its null variance, and the test's scale."""

    estimate: Array
    variance: Array
    tau: Array


def _arr(x: ArrayLike) -> Array:
    return np.asarray(x, dtype=np.float64)


def _ratio(num: Array, den: Array) -> Array:
    shape = num.shape if num.shape == den.shape else np.broadcast_shapes(num.shape, den.shape)
    result: Array = np.divide(num, den, out=np.zeros(shape), where=den > 0)
    return result


def population_weights(
    n_c: ArrayLike, n_b: ArrayLike, *, both: bool, groups: ArrayLike | None = None
) -> Array:
    """Each stratum's weight: its cohort's share of all traffic, over the usable strata.

    With `both`, only strata where both versions have samples count (needed
    for comparisons); otherwise strata where the candidate has samples.

    `groups` gives each stratum's cohort when a cohort is split into several
    strata (one per traffic step). A cohort keeps its share of all traffic,
    and within it the steps are weighted by the information each contributes:
    n_c n_b / (n_c + n_b) for a comparison (the Cochran-Mantel-Haenszel
    weight), n_c otherwise. So candidate and baseline are compared step by
    step, at the same time of day, yet the steps with most evidence count most.
    """
    nc, nb = _arr(n_c), _arr(n_b)
    layout = None if groups is None else tuple(np.asarray(groups, dtype=int).tolist())
    if layout is not None and _one_cohort(nc, layout):
        return np.array(_one_cohort_weights(nc.tolist(), nb.tolist(), both=both))
    usable = (nc > 0) & (nb > 0) if both else nc > 0
    raw = np.where(usable, nc + nb, 0.0)
    total = raw.sum(axis=-1, keepdims=True)
    if layout is None:
        return _ratio(raw, total)
    member = _membership(layout)
    cohort_share = _ratio(raw @ member.T, total)
    info = np.where(usable, _ratio(nc * nb, nc + nb) if both else nc, 0.0)
    within = _ratio(info, (info @ member.T) @ member)
    result: Array = within * (cohort_share @ member)
    return result


#: below this many strata numpy's sums, and the matrix products' here, add one by one
_SEQUENTIAL = 8


def _one_cohort(nc: Array, layout: tuple[int, ...]) -> bool:
    """Whether one cohort's few strata (a cohort's cell: its steps) are weighted.

    Then the weights are computed on floats (`_one_cohort_weights`): the judge
    weighs such cells tens of times a look, where numpy's per-call cost is most
    of the time."""
    return nc.ndim == 1 and len(layout) < _SEQUENTIAL and not any(layout)


def _sequential_sum(values: list[float]) -> float:
    total = 0.0
    for v in values:
        total += v
    return total


def _one_ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def _one_cohort_weights(nc: list[float], nb: list[float], *, both: bool) -> list[float]:
    """`population_weights` of one cohort's strata on floats, to the bit.

    With one cohort the group sums are sums of fewer than `_SEQUENTIAL` terms,
    which numpy (and the matrix products it hands to BLAS) adds one by one, in
    order; the cohort's share is then its sum over the same sum."""
    usable = [c > 0 and b > 0 if both else c > 0 for c, b in zip(nc, nb, strict=True)]
    raw = [c + b if u else 0.0 for c, b, u in zip(nc, nb, usable, strict=True)]
    share = _one_ratio(_sequential_sum(raw), _sequential_sum(raw))
    if both:
        info = [
            _one_ratio(c * b, c + b) if u else 0.0 for c, b, u in zip(nc, nb, usable, strict=True)
        ]
    else:
        info = [c if u else 0.0 for c, u in zip(nc, usable, strict=True)]
    info_total = _sequential_sum(info)
    return [_one_ratio(i, info_total) * share for i in info]


@functools.lru_cache(maxsize=256)
def _membership(groups: tuple[int, ...]) -> Array:
    """The 0/1 matrix [cohort, stratum] of which cohort each stratum belongs to.

    A look asks for the same few layouts (a cell's cohorts × steps) once per test;
    the cache holds the layouts of the last looks, read-only."""
    g = np.asarray(groups, dtype=int)
    member: Array = (g[None, :] == np.arange(int(g.max()) + 1)[:, None]).astype(np.float64)
    member.setflags(write=False)
    return member


def absolute_tau(null: float, *, fail_above: bool) -> float:
    """The mixture scale for an absolute limit: half the room on the healthy side.

    For `max: 0.01` a healthy candidate lives between 0 and 0.01, so the test
    is tuned to tell 0.005-sized departures apart; for `min: 0.7` (a score) the
    room is 0.7..1.
    """
    room = null if fail_above else 1.0 - null
    return max(room / 2.0, MIN_TAU)


def absolute_contrast(
    s_c: ArrayLike,
    n_c: ArrayLike,
    weights: ArrayLike,
    null: float,
    *,
    fail_above: bool,
    variance_c: ArrayLike | None = None,
    null_rates: ArrayLike | None = None,
) -> Contrast:
    """The candidate's standardised mean against an absolute limit `null`.

    `variance_c` is the per-observation variance of each cohort's values when
    known (scores). Without it the values are 0/1 and the variance is the
    Bernoulli one at `null_rates`, each cohort's rate if the candidate sat on
    the limit (the baseline's rates moved together onto it); with neither, at
    the limit itself in every cohort. Either way it does not depend on the
    candidate's own counts, so more candidate failures can only move the
    verdict towards FAIL.
    """
    s, n, w = _arr(s_c), _arr(n_c), _arr(weights)
    if n.ndim == 1:  # one look (the judge): on floats, to the bit
        counts, weights_ = n.tolist(), w.tolist()
        mean_ = numpy_sum(
            [
                wi * _one_ratio(si, ni)
                for wi, si, ni in zip(weights_, s.tolist(), counts, strict=True)
            ]
        )
        if variance_c is None:
            rates = [null] * len(counts) if null_rates is None else _arr(null_rates).tolist()
            per_obs_ = [r * (1.0 - r) for r in rates]
        else:
            per_obs_ = _arr(variance_c).tolist()
        variance_ = numpy_sum(
            [
                wi * wi * _one_ratio(v, ni)
                for wi, v, ni in zip(weights_, per_obs_, counts, strict=True)
            ]
        )
        sign_ = 1.0 if fail_above else -1.0
        return Contrast(
            np.asarray(sign_ * (mean_ - null)),
            np.asarray(variance_),
            np.asarray(absolute_tau(null, fail_above=fail_above)),
        )
    mean = np.sum(w * _ratio(s, n), axis=-1)
    if variance_c is None:
        rates = np.full_like(n, null) if null_rates is None else _arr(null_rates)
        per_obs = rates * (1.0 - rates)
    else:
        per_obs = _arr(variance_c)
    variance = np.sum(w * w * _ratio(per_obs, n), axis=-1)
    sign = 1.0 if fail_above else -1.0
    tau = np.full_like(mean, absolute_tau(null, fail_above=fail_above))
    return Contrast(sign * (mean - null), variance, tau)


def _restricted_bernoulli(
    x_c: Array, n_c: Array, x_b: Array, n_b: Array, rule: Limit, margin: float
) -> tuple[Array, Array]:
    """Rates of candidate and baseline under the null, pooled (one pseudo request each)."""
    events = x_c + x_b + 0.5
    trials = n_c + n_b + 1.0
    if rule is Limit.MAX_INCREASE:
        base = np.clip(_ratio(events - n_c * margin, trials), 0.0, 1.0 - margin)
        cand = base + margin
    elif rule is Limit.MAX_DECREASE:
        base = np.clip(_ratio(events + n_c * margin, trials), margin, 1.0)
        cand = base - margin
    else:  # MAX_RATIO
        base = np.clip(_ratio(events, margin * n_c + n_b + 1.0), 0.0, 1.0)
        cand = np.minimum(margin * base, 1.0)
    return cand, base


def relative_contrast(
    s_c: ArrayLike,
    n_c: ArrayLike,
    s_b: ArrayLike,
    n_b: ArrayLike,
    rule: Limit,
    margin: float,
    *,
    variance_c: ArrayLike | None = None,
    variance_b: ArrayLike | None = None,
    groups: ArrayLike | None = None,
) -> Contrast:
    """Candidate against baseline for `maxIncrease`, `maxDecrease` or `maxRatio`.

    - maxIncrease Δ: D = (candidate - baseline) - Δ
    - maxDecrease Δ: D = (baseline - candidate) - Δ
    - maxRatio r:    D = candidate - r × baseline
    each standardised over the cohorts both versions have seen. Without
    per-observation variances the values are 0/1 and the null-restricted
    Bernoulli variances are used.
    """
    sc, nc, sb, nb = _arr(s_c), _arr(n_c), _arr(s_b), _arr(n_b)
    if groups is not None:
        layout = tuple(np.asarray(groups, dtype=int).tolist())
        if _one_cohort(nc, layout):
            return _one_cohort_relative(
                sc.tolist(),
                nc.tolist(),
                sb.tolist(),
                nb.tolist(),
                rule,
                margin,
                None if variance_c is None else _arr(variance_c).tolist(),
                None if variance_b is None else _arr(variance_b).tolist(),
            )
    w = population_weights(nc, nb, both=True, groups=groups)
    mean_c, mean_b = _ratio(sc, nc), _ratio(sb, nb)
    if variance_c is None or variance_b is None:
        cand0, base0 = _restricted_bernoulli(sc, nc, sb, nb, rule, margin)
        var_c, var_b = cand0 * (1.0 - cand0), base0 * (1.0 - base0)
    else:
        var_c, var_b = _arr(variance_c), _arr(variance_b)
        base0 = mean_b
    coef = margin if rule is Limit.MAX_RATIO else 1.0
    variance = np.sum(w * w * (_ratio(var_c, nc) + coef * coef * _ratio(var_b, nb)), axis=-1)
    if rule is Limit.MAX_INCREASE:
        estimate = np.sum(w * (mean_c - mean_b), axis=-1) - margin
        tau = np.full_like(estimate, margin if margin > 0 else ZERO_MARGIN_TAU)
    elif rule is Limit.MAX_DECREASE:
        estimate = np.sum(w * (mean_b - mean_c), axis=-1) - margin
        tau = np.full_like(estimate, margin if margin > 0 else ZERO_MARGIN_TAU)
    elif rule is Limit.MAX_RATIO:
        estimate = np.sum(w * (mean_c - margin * mean_b), axis=-1)
        # The margin in absolute terms is (r - 1) × the baseline's rate.
        scale = np.sum(w * base0, axis=-1) * max(abs(margin - 1.0), 0.05)
        tau = np.maximum(scale, MIN_TAU)
    else:
        raise ValueError(f"{rule} is not a relative limit")
    return Contrast(estimate, variance, np.maximum(tau, MIN_TAU))


def _one_cohort_relative(
    sc: list[float],
    nc: list[float],
    sb: list[float],
    nb: list[float],
    rule: Limit,
    margin: float,
    variance_c: list[float] | None,
    variance_b: list[float] | None,
) -> Contrast:
    """`relative_contrast` of one cohort's few strata on floats, to the bit (see
    `_one_cohort`): the same operations in the same order, numpy's summation order."""
    w = _one_cohort_weights(nc, nb, both=True)
    mean_c = [_one_ratio(s, n) for s, n in zip(sc, nc, strict=True)]
    mean_b = [_one_ratio(s, n) for s, n in zip(sb, nb, strict=True)]
    if variance_c is None or variance_b is None:
        base0 = []
        cand0 = []
        for x_c, n_c, x_b, n_b in zip(sc, nc, sb, nb, strict=True):
            events = x_c + x_b + 0.5
            trials = n_c + n_b + 1.0
            if rule is Limit.MAX_INCREASE:
                base = clip_one(_one_ratio(events - n_c * margin, trials), 0.0, 1.0 - margin)
                cand = base + margin
            elif rule is Limit.MAX_DECREASE:
                base = clip_one(_one_ratio(events + n_c * margin, trials), margin, 1.0)
                cand = base - margin
            else:  # MAX_RATIO
                base = clip_one(_one_ratio(events, margin * n_c + n_b + 1.0), 0.0, 1.0)
                scaled = margin * base
                cand = scaled if scaled < 1.0 else 1.0
            base0.append(base)
            cand0.append(cand)
        var_c = [c * (1.0 - c) for c in cand0]
        var_b = [b * (1.0 - b) for b in base0]
    else:
        var_c, var_b = variance_c, variance_b
        base0 = mean_b
    coef = margin if rule is Limit.MAX_RATIO else 1.0
    coef2 = coef * coef
    variance = numpy_sum(
        [
            wi * wi * (_one_ratio(vc, n_c) + coef2 * _one_ratio(vb, n_b))
            for wi, vc, n_c, vb, n_b in zip(w, var_c, nc, var_b, nb, strict=True)
        ]
    )
    if rule is Limit.MAX_INCREASE:
        diffs = [wi * (c - b) for wi, c, b in zip(w, mean_c, mean_b, strict=True)]
        estimate = numpy_sum(diffs) - margin
        tau = margin if margin > 0 else ZERO_MARGIN_TAU
    elif rule is Limit.MAX_DECREASE:
        diffs = [wi * (b - c) for wi, c, b in zip(w, mean_c, mean_b, strict=True)]
        estimate = numpy_sum(diffs) - margin
        tau = margin if margin > 0 else ZERO_MARGIN_TAU
    elif rule is Limit.MAX_RATIO:
        diffs = [wi * (c - margin * b) for wi, c, b in zip(w, mean_c, mean_b, strict=True)]
        estimate = numpy_sum(diffs)
        scale = numpy_sum([wi * b for wi, b in zip(w, base0, strict=True)]) * max(
            abs(margin - 1.0), 0.05
        )
        tau = scale if scale > MIN_TAU else MIN_TAU
    else:
        raise ValueError(f"{rule} is not a relative limit")
    tau = tau if tau > MIN_TAU else MIN_TAU
    return Contrast(np.asarray(estimate), np.asarray(variance), np.asarray(tau))


def exceedance_contrast(
    above_c: ArrayLike,
    n_c: ArrayLike,
    weights: ArrayLike,
    tail: float,
    *,
    fail_above: bool,
    null_c: ArrayLike | None = None,
    baseline_samples: ArrayLike | None = None,
) -> Contrast:
    """The share of candidate requests beyond a latency `x` against the quantile's tail.

    A quantile q_p is at most x exactly when at most a share `tail` = 1 - p of
    requests are slower than x, so limits on a quantile become limits on this
    exceedance share. `null_c` is each cohort's exceedance under the null (for
    a relative limit: the baseline's share beyond its own quantile, as the
    candidate would have if it were the baseline scaled to the limit);
    `baseline_samples` adds the uncertainty of the baseline quantile that x
    was computed from, which under that null is tail × (1 - tail) / n_b.
    """
    above, n, w = _arr(above_c), _arr(n_c), _arr(weights)
    if n.ndim == 1:  # one look (the judge): on floats, to the bit
        nulls = [tail] * len(n) if null_c is None else _arr(null_c).tolist()
        weights_ = w.tolist()
        share_ = numpy_sum(
            [
                wi * _one_ratio(a, ni)
                for wi, a, ni in zip(weights_, above.tolist(), n.tolist(), strict=True)
            ]
        )
        terms = []
        for wi, ni, null0_i in zip(weights_, n.tolist(), nulls, strict=True):
            shrunk_i = (null0_i * ni + tail) / (ni + 1.0)
            terms.append(wi * wi * _one_ratio(shrunk_i * (1.0 - shrunk_i), ni))
        variance_ = numpy_sum(terms)
        if baseline_samples is not None:
            variance_ = variance_ + _one_ratio(tail * (1.0 - tail), float(_arr(baseline_samples)))
        sign_ = 1.0 if fail_above else -1.0
        return Contrast(
            np.asarray(sign_ * (share_ - tail)),
            np.asarray(variance_),
            np.asarray(max(tail / 2.0, MIN_TAU)),
        )
    share = np.sum(w * _ratio(above, n), axis=-1)
    null0 = np.full_like(n, tail) if null_c is None else _arr(null_c)
    shrunk = (null0 * n + tail) / (n + 1.0)
    variance = np.sum(w * w * _ratio(shrunk * (1.0 - shrunk), n), axis=-1)
    if baseline_samples is not None:
        variance = variance + _ratio(
            np.full_like(variance, tail * (1.0 - tail)), _arr(baseline_samples)
        )
    sign = 1.0 if fail_above else -1.0
    tau = np.full_like(share, max(tail / 2.0, MIN_TAU))
    return Contrast(sign * (share - tail), variance, tau)
