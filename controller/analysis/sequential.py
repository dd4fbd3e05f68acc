"""Anytime-valid sequential tests: the statistics behind every verdict.

The controller looks at the same cumulative counts every `interval` for the
whole rollout. A fixed-sample test (a t-test, Mann-Whitney, a z-test on the
last window) re-checked at every look rejects a healthy candidate far more
often than its nominal level: Kayenta-style repeated checks reach 37-46 % false
alarms. The tests here are *e-processes*: non-negative supermartingales under
the null hypothesis, so by Ville's inequality

    P(there is ever a look at which E_t >= 1/alpha) <= alpha,

however often and for however long one looks, across every step of a rollout.
A verdict is reached when an e-process crosses 1/alpha; the same crossing,
solved for the limit, gives the confidence bound reported as evidence.

The verdicts come from indifference-zone tests (below, after the mixtures):
Wald's SPRT of "at the tolerance" against "at the limit" for FAIL (mixed with
alternatives further out) and the same ratio reversed for PASS, exact
Bernoulli likelihood ratios for one cohort's rate and Gaussian ones on the
contrasts otherwise; FAIL across a family of tests is the closed average of
their e-values (`average_fail_thresholds`). The math is in docs/judge.md.

Two mixture constructions test against the limit itself, where there is no
room for a tolerance (a limit of 0), for the circuit breaker, and for the
confidence bounds reported as evidence:

- `beta_mixture_log_e`: exact, for the mean of observations in [0, 1] given only
  their sum and count (a proportion, the share of requests slower than a
  latency limit, a 0..1 score). It mixes the Bernoulli likelihood ratio over a
  Beta prior restricted to the alternative (Robbins' mixture). For any
  observation in [0, 1] the ratio is convex in the observation, so it is a
  supermartingale for every distribution on [0, 1] with the null mean, not
  only for Bernoulli ones: no approximation and no minimum sample size.

- `normal_mixture_log_e`: asymptotic, for comparisons (candidate against
  baseline) and for cohort-standardised overall values. It is the one-sided
  Gaussian-mixture sequential probability ratio test ("mSPRT", Johari et al.,
  "Always valid inference", 2017/2022; Robbins' normal mixture as in Howard et
  al., "Time-uniform, nonparametric, nonasymptotic confidence sequences", 2021)
  applied to an asymptotically normal estimate, which Waudby-Smith et al.
  ("Time-uniform central limit theory and asymptotic confidence sequences",
  2024) show keeps its guarantee asymptotically with a consistent variance.
  The variance is the one under the null hypothesis being tested, which keeps
  small samples from looking more certain than they are.

The mixture scale `tau` says which effect size a mixture is tuned for: its
boundary is tightest when an effect of about `tau` becomes detectable.
Everything here works elementwise on numpy arrays, so the statistical tests of
the judge can simulate thousands of rollouts through the very same functions.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

# scipy ships no type information (scipy-stubs is not a dependency); its use is
# confined to this module and typed through the wrappers below.
from scipy import optimize, special  # type: ignore[import-untyped]

Array = NDArray[np.float64]

#: probabilities are kept this far from 0 and 1 so that logs stay finite
_EPS = 1e-12
_SQRT2 = math.sqrt(2.0)
#: up to this many roots are found one by one (Brent) rather than vectorised
_SCALAR_ROOTS = 8


def _arr(x: ArrayLike) -> Array:
    return np.asarray(x, dtype=np.float64)


def log_threshold(alpha: ArrayLike) -> Array:
    """log(1/alpha): an e-process at or above it rejects its null at level alpha."""
    return -np.log(_arr(alpha))


# --- the Gaussian mixture --------------------------------------------------------


def _log_mixture_core(a: Array) -> Array:
    """log(2 exp(a²/2) Φ(a)), computed without overflow or cancellation.

    For a < 0 it equals log(erfcx(-a/√2)) (the scaled complementary error
    function keeps the huge and tiny factors apart); for a >= 0 the direct form
    with log Φ is exact.
    """
    neg = np.minimum(a, 0.0)
    pos = np.maximum(a, 0.0)
    below = np.log(special.erfcx(-neg / _SQRT2))
    above = math.log(2.0) + pos * pos / 2.0 + special.log_ndtr(pos)
    result: Array = np.where(a < 0, below, above)
    return result


def _scalar_gap(a: float, target: float) -> float:
    """`_log_mixture_core(a) - target` for one float, the function Brent's method
    solves: the same operations on the same float64 values (so the same bits) as
    the array form, without its broadcasting and both branches (about ten numpy
    calls per evaluation, some ten evaluations per root, a dozen roots per look)."""
    if a < 0:
        return float(np.log(special.erfcx(-a / _SQRT2))) - target
    return float(math.log(2.0) + a * a / 2.0 + special.log_ndtr(a)) - target


def normal_mixture_log_e(z: ArrayLike, v: ArrayLike, tau: ArrayLike) -> Array:
    """log of the one-sided normal-mixture e-value against H0: θ <= θ0.

    `z` is the estimate minus θ0 and `v` the variance of the estimate; the
    effect θ - θ0 is mixed over a half-normal prior of scale `tau`, which gives
    the closed form

        E = 2 sqrt(v / (v + τ²)) exp(a²/2) Φ(a),   a = τ z / sqrt(v (v + τ²)).

    E grows with z for a fixed v, so evidence against the null only grows as the
    estimate moves away from it. With v = 0 (no information) E = 1.
    """
    z_, v_, t_ = np.broadcast_arrays(_arr(z), _arr(v), _arr(tau))
    v_safe = np.maximum(v_, 1e-300)
    t2 = t_ * t_
    a = t_ * z_ / np.sqrt(v_safe * (v_safe + t2))
    log_e = 0.5 * (np.log(v_safe) - np.log(v_safe + t2)) + _log_mixture_core(a)
    result: Array = np.where(v_ > 0, log_e, 0.0)
    return result


def _threshold_a(log_target: Array) -> Array:
    """The `a` at which `_log_mixture_core(a)` equals `log_target` (> 0)."""
    hi = np.sqrt(2.0 * log_target) + 3.0

    def f(a: ArrayLike, target: ArrayLike) -> Array:
        return _log_mixture_core(_arr(a)) - _arr(target)

    if log_target.size <= _SCALAR_ROOTS:
        # Brent's method per element: the vectorised solver's set-up costs more
        # than it saves on the handful of roots the judge needs per look.
        roots = [
            optimize.brentq(_scalar_gap, 0.0, h, args=(t,), xtol=1e-12)
            for t, h in zip(log_target.ravel(), hi.ravel(), strict=True)
        ]
        return np.asarray(roots, dtype=np.float64).reshape(log_target.shape)
    # Imported here: it is only needed for planning and simulations, and loading
    # it costs the controller (and every CLI start) most of a second.
    from scipy.optimize import elementwise  # type: ignore[import-untyped]

    res: Any = elementwise.find_root(f, (np.zeros_like(hi), hi), args=(log_target,))
    root: Array = np.asarray(res.x, dtype=np.float64)
    return root


def normal_mixture_radius(v: ArrayLike, tau: ArrayLike, alpha: ArrayLike) -> Array:
    """How far from θ0 the estimate must be for the e-value to reach 1/alpha.

    The one-sided confidence bound is `estimate - radius` (lower) or
    `estimate + radius` (upper); it is valid at every look at once.
    """
    v_, t_, a_ = np.broadcast_arrays(_arr(v), _arr(tau), _arr(alpha))
    v_safe = np.maximum(v_, 1e-300)
    t2 = t_ * t_
    target = log_threshold(a_) - 0.5 * (np.log(v_safe) - np.log(v_safe + t2))
    a_star = _threshold_a(target)
    radius = a_star * np.sqrt(v_safe * (v_safe + t2)) / t_
    result: Array = np.where(v_ > 0, radius, np.inf)
    return result


# --- the Beta mixture ------------------------------------------------------------


def beta_prior(p0: ArrayLike, tau: ArrayLike) -> tuple[Array, Array]:
    """Beta(a, b) parameters with mean `p0` and standard deviation about `tau`."""
    p = np.clip(_arr(p0), 1e-6, 1 - 1e-6)
    t = _arr(tau)
    # Between 2 (nearly flat) and 1e6 (sd 0.0005 at p = 0.5): beyond that the
    # prior is a point mass in all but name and the incomplete beta loses digits.
    concentration = np.clip(p * (1 - p) / np.maximum(t * t, 1e-300) - 1.0, 2.0, 1e6)
    return concentration * p, concentration * (1 - p)


def beta_prior_one(p0: float, tau: float) -> tuple[float, float]:
    """`beta_prior` on floats, to the bit (its twin below, `_clip_one`, is numpy's clip)."""
    p = _clip_one(np.float64(p0), 1e-6, 1 - 1e-6)
    t = np.float64(tau)
    t2 = t * t
    concentration = _clip_one(p * (1 - p) / (t2 if t2 > 1e-300 else 1e-300) - 1.0, 2.0, 1e6)
    return float(concentration * p), float(concentration * (1 - p))


def _beta_tail(a: Array, b: Array, x: Array, *, above: bool) -> Array:
    """Beta(a, b) mass above (or below) x.

    The mass above uses the identity 1 - I_x(a, b) = I_(1-x)(b, a): scipy's
    `betaincc` gives the same numbers but is about ten times slower, which
    matters when the statistical tests evaluate millions of looks.
    """
    result: Array = special.betainc(b, a, 1 - x) if above else special.betainc(a, b, x)
    return result


def beta_mixture_log_e(
    total: ArrayLike,
    count: ArrayLike,
    p0: ArrayLike,
    tau: ArrayLike,
    *,
    above: bool,
) -> Array:
    """log of the exact e-value for the mean of [0, 1] observations against p0.

    `total` is the sum of the observations and `count` how many there are.
    With `above=True` the null is "mean <= p0" (evidence that it is above);
    with `above=False` it is "mean >= p0". The likelihood ratio of a
    Bernoulli(p) against Bernoulli(p0) is mixed over Beta(a, b) restricted to
    the alternative side of p0:

        E = ∫ p^s (1-p)^(n-s) π(p) dp / (p0^s (1-p0)^(n-s))
          = B(s+a, n-s+b) T(s+a, n-s+b) / (B(a, b) T(a, b) p0^s (1-p0)^(n-s))

    with T the regularised incomplete beta function's mass on the alternative
    side. A null value of exactly 0 (or 1) is refuted by any observation above
    (below) it: the e-value is infinite then.
    """
    s, n, p, t = np.broadcast_arrays(_arr(total), _arr(count), _arr(p0), _arr(tau))
    pc = np.clip(p, _EPS, 1 - _EPS)
    a, b = beta_prior(pc, t)
    s_post, f_post = s + a, (n - s) + b
    with np.errstate(divide="ignore"):
        log_tail_post = np.log(_beta_tail(s_post, f_post, pc, above=above))
        log_tail_prior = np.log(_beta_tail(a, b, pc, above=above))
    log_e = (
        special.betaln(s_post, f_post)
        + log_tail_post
        - special.betaln(a, b)
        - log_tail_prior
        - s * np.log(pc)
        - (n - s) * np.log1p(-pc)
    )
    # The clipping above stands in for exact zeros; restore their certainty.
    certain = (p <= 0.0) & (s > 0) if above else (p >= 1.0) & (s < n)
    result: Array = np.where(certain, np.inf, np.where(n > 0, log_e, 0.0))
    return result


def beta_mixture_interval(
    total: float, count: float, center: float, tau: float, alpha: float
) -> tuple[float, float]:
    """The (1 - alpha) confidence sequence of a [0, 1] mean at this look.

    It is Robbins' two-sided Beta mixture with the prior the one-sided test
    uses (mean `center`, the limit; scale `tau`) before truncation:

        M(p) = B(s+a, n-s+b) / (B(a, b) p^s (1-p)^(n-s)),   CS = {p : M(p) < 1/alpha}.

    M is a martingale under every p, so the interval covers the true mean at
    every look at once with probability 1 - alpha. The one-sided test that
    decides the verdict is up to twice as sharp (its prior sits on one side),
    so the interval is the conservative summary of the same evidence.
    """
    if count <= 0:
        return 0.0, 1.0
    a, b = beta_prior_one(center, tau)
    s, n = float(total), float(count)
    marginal = float(special.betaln(s + a, n - s + b) - special.betaln(a, b))
    target = float(log_threshold(alpha))

    # -log M is concave in p with its maximum at the sample mean, where M < 1.
    mean = min(max(s / n, 1e-9), 1 - 1e-9)
    lo, hi = 1e-12, 1 - 1e-12

    def f(p: float) -> float:
        # log M(p) - log(1/alpha) on one float (no 0-d arrays: Brent's method calls
        # it some ten times per end, and the same operations give the same bits)
        return marginal - s * float(np.log(p)) - (n - s) * float(np.log1p(-p)) - target

    lower = optimize.brentq(f, lo, mean, xtol=1e-12) if f(lo) > 0 else 0.0
    upper = optimize.brentq(f, mean, hi, xtol=1e-12) if f(hi) > 0 else 1.0
    return float(lower), float(upper)


# --- planning: how much data a decision needs -------------------------------------


def normal_mixture_samples_needed(
    distance: float,
    unit_variance: float,
    tau: float,
    alpha: float,
    *,
    power_z: float = 0.0,
    max_samples: float = 1e9,
) -> float:
    """Candidate samples until an effect `distance` from the null is decided.

    `unit_variance` is the variance of the estimate times the candidate's
    sample count (so v = unit_variance / n). With `power_z = 0` this is when the
    expected estimate reaches the boundary (decided about half the time); with
    `power_z = 0.84` about 80 % of rollouts have decided by then.
    """
    if distance <= 0:
        return math.inf

    def gap(n: float) -> float:
        v = unit_variance / n
        radius = float(normal_mixture_radius(v, tau, alpha))
        return distance - power_z * math.sqrt(v) - radius

    if gap(max_samples) < 0:
        return math.inf
    lo, hi = 1.0, max_samples
    if gap(lo) >= 0:
        return lo
    # Bisection on a log scale: the gap grows with n, and 60 halvings of a
    # factor-1e9 range resolve n to well under one sample.
    for _ in range(80):
        mid = math.sqrt(lo * hi)
        if gap(mid) >= 0:
            hi = mid
        else:
            lo = mid
        if hi - lo < 0.5:
            break
    return math.ceil(hi)


# --- indifference-zone tests: null at the tolerance, alternative at the limit -----
#
# A limit is the harm that must not ship; the tolerance is the difference that is
# fine. Between them lies an indifference zone where either verdict is acceptable.
# On the scale of a contrast D (0 at the limit, -delta at the tolerance, > 0
# beyond the limit), an estimate with variance v carries the information
# I = 1/v, and Wald's sequential probability ratio test of "D = -delta" against
# "D = 0" (for a Gaussian estimate: Brownian motion observed in information
# time) has the log likelihood ratio
#
#     S = delta I (D_hat + delta / 2).
#
# exp(S) is a non-negative martingale when D = -delta and a supermartingale for
# any D below it, so by Ville's inequality it reaches 1/alpha with probability at
# most alpha however often it is looked at (Wald 1945; Ville 1939). exp(-S) is
# the ratio the other way round: the PASS test of "D = 0 (at the limit)" against
# "D = -delta (at the tolerance)". Overstating v only shrinks both e-values
# towards 1 (see `fail_log_e`), so a variance computed at the limit is valid
# for the FAIL test's null at the tolerance whenever the spread does not shrink
# towards the limit.

#: FAIL mixes the SPRT over alternatives this many deltas above the tolerance ...
FAIL_ALTERNATIVES = (1.0, 2.0, 4.0)
#: ... with these weights: half on the limit itself, the rest on gross harm
FAIL_WEIGHTS = (0.5, 0.25, 0.25)


def sprt_log_e(d_hat: ArrayLike, information: ArrayLike, delta: ArrayLike) -> Array:
    """S = log of the SPRT ratio of "D = 0" (the limit) against "D = -delta" (tolerance)."""
    d_, i_, t_ = np.broadcast_arrays(_arr(d_hat), _arr(information), _arr(delta))
    result: Array = t_ * i_ * (d_ + t_ / 2.0)
    return result


def fail_log_e(d_hat: ArrayLike, information: ArrayLike, delta: ArrayLike) -> Array:
    """log of the FAIL e-value: "within the tolerance" (D <= -delta) against harm.

    A weighted average of SPRT ratios with alternatives at the limit (D = 0),
    one delta beyond it and three deltas beyond it (`FAIL_ALTERNATIVES`): a
    candidate exactly at the limit is caught nearly as fast as by Wald's SPRT
    tuned to it (the average costs log 2 on the threshold), one far beyond it
    much faster. For an alternative c deltas above the tolerance the ratio is
    exp(c delta I (D_hat + delta) - (c delta)² I / 2); each is an e-process
    under the null, and so is their average.
    """
    d_, i_, t_ = np.broadcast_arrays(_arr(d_hat), _arr(information), _arr(delta))
    terms = [
        math.log(w) + c * t_ * i_ * (d_ + t_) - (c * t_) ** 2 * i_ / 2.0
        for c, w in zip(FAIL_ALTERNATIVES, FAIL_WEIGHTS, strict=True)
    ]
    result: Array = np.logaddexp.reduce(np.stack(terms), axis=0)
    return result


def pass_log_e(d_hat: ArrayLike, information: ArrayLike, delta: ArrayLike) -> Array:
    """log of the PASS e-value: "at or beyond the limit" (D >= 0) against "at the tolerance"."""
    return -sprt_log_e(d_hat, information, delta)


def bernoulli_log_lr(total: ArrayLike, count: ArrayLike, p0: ArrayLike, p1: ArrayLike) -> Array:
    """log of the ratio of Bernoulli(p1) to Bernoulli(p0) likelihoods of `total` in `count`.

    Exact for the mean of any values in [0, 1], not only 0/1 ones: the ratio
    per observation is (p1/p0)^x ((1-p1)/(1-p0))^(1-x), convex in x, so its
    expectation is at most its value at the mean's Bernoulli, which is 1 when
    the mean is p0 and below 1 for every mean on p0's side away from p1. It is
    an e-process for "mean <= p0" when p1 > p0 (and ">= p0" when p1 < p0).
    """
    s, n, a, b = np.broadcast_arrays(_arr(total), _arr(count), _arr(p0), _arr(p1))
    a = np.clip(a, _EPS, 1 - _EPS)
    b = np.clip(b, _EPS, 1 - _EPS)
    result: Array = s * (np.log(b) - np.log(a)) + (n - s) * (np.log1p(-b) - np.log1p(-a))
    return result


def bernoulli_fail_log_e(
    total: ArrayLike, count: ArrayLike, tolerance: ArrayLike, limit: ArrayLike
) -> Array:
    """The exact FAIL e-value of a [0, 1] mean: null "<= tolerance", harm from `limit` on.

    The same mixture of alternatives as `fail_log_e`, on the Bernoulli scale:
    `limit` may be below `tolerance` (a `min`), then the alternatives lie below.
    """
    t, lim = _arr(tolerance), _arr(limit)
    delta = lim - t
    terms = []
    for c, w in zip(FAIL_ALTERNATIVES, FAIL_WEIGHTS, strict=True):
        p1 = np.clip(t + c * delta, _EPS, 1 - _EPS)
        terms.append(math.log(w) + bernoulli_log_lr(total, count, t, p1))
    result: Array = np.logaddexp.reduce(np.stack(np.broadcast_arrays(*terms)), axis=0)
    return result


def bernoulli_pass_log_e(
    total: ArrayLike, count: ArrayLike, tolerance: ArrayLike, limit: ArrayLike
) -> Array:
    """The exact PASS e-value of a [0, 1] mean: null "at or beyond `limit`"."""
    return bernoulli_log_lr(total, count, limit, tolerance)


# --- how much information a decision takes ----------------------------------------


def first_passage_cdf(information: ArrayLike, drift: float, scale: float, level: float) -> Array:
    """P(a Brownian motion with `drift` and `scale` per unit information reaches `level` by then).

    The inverse Gaussian law of the first passage time (Schrödinger 1915; e.g.
    Siegmund, *Sequential Analysis*, 1985, 3.2): with mu = drift, s = scale,

        P(T <= I) = Φ((mu I - a) / (s √I)) + exp(2 mu a / s²) Φ((-mu I - a) / (s √I)).

    Looks every interval instead of continuously cross a little later; the
    statistical tests measure that by simulation.
    """
    i_ = np.maximum(_arr(information), 1e-300)
    root = scale * np.sqrt(i_)
    first = special.log_ndtr((drift * i_ - level) / root)
    second = 2.0 * drift * level / (scale * scale) + special.log_ndtr((-drift * i_ - level) / root)
    result: Array = np.minimum(np.exp(np.logaddexp(first, second)), 1.0)
    return result


def information_to_reach(
    probability: float, drift: float, scale: float, level: float, *, limit: float = 1e12
) -> float:
    """The information by which the statistic has reached `level` with `probability`."""
    if float(first_passage_cdf(limit, drift, scale, level)) < probability:
        return math.inf

    def gap(log_i: float) -> float:
        return float(first_passage_cdf(math.exp(log_i), drift, scale, level)) - probability

    lo, hi = math.log(1e-12), math.log(limit)
    if gap(lo) >= 0:
        return 0.0
    return math.exp(optimize.brentq(gap, lo, hi, xtol=1e-10))


def powered_information(delta: float, log_threshold: float, power: float) -> float:
    """The information at which the FAIL test catches a candidate at the limit with `power`.

    At the limit the SPRT statistic S is Gaussian with mean delta² I / 2 and
    standard deviation delta √I; the FAIL mixture is at least half the SPRT
    ratio tuned to the limit, so it has FAILed once S reaches `log_threshold`
    + log 2. Asking S to be there *at* information I (not merely to have
    crossed it before) makes this hold for looks at any interval, not only
    for continuous monitoring: with u = delta √I,

        u² / 2 - level = z_power u,   u = z_power + sqrt(z_power² + 2 level).
    """
    if delta <= 0:
        return math.inf
    level = log_threshold - math.log(FAIL_WEIGHTS[0])
    z = _power_z(power)
    u = z + math.sqrt(z * z + 2.0 * level)
    return (u / delta) ** 2


@functools.lru_cache(maxsize=64)
def _power_z(power: float) -> float:
    """The normal quantile of `power` (a policy has one or two powers; asked per test)."""
    return float(special.ndtri(power))


# --- FAIL across cells: the average of e-values, closed ----------------------------


#: e-values are capped here before averaging: far above any threshold, far from overflow
_LOG_E_CAP = 600.0


def average_fail_thresholds(log_e: ArrayLike, tests: int, alpha: float) -> Array:
    """For each test, the log e-value it needs to FAIL, given every other test's.

    The FAIL family is every critical (metric, cell, limit) test of a rollout,
    `tests` of them; those not run yet count as e-value 1. The average of
    e-values is an e-value under any dependence between them (Vovk & Wang,
    "E-values: calibration, combination and applications", Ann. Stat. 2021),
    and the average of e-processes adapted to one filtration is again one, so
    "the average of the tests whose null is true ever reaches 1/alpha" has
    probability at most alpha. Closed testing (Marcus, Peritz & Gabriel 1976)
    with that average for every intersection names test i as failed when every
    set of tests containing i averages at least 1/alpha; the weakest such set
    is i with the m smallest others, so i needs

        E_i >= max over m of ((m + 1) / alpha - sum of the m smallest others).

    With m = tests - 1 this never asks more than Bonferroni's tests / alpha,
    and less whenever other tests carry evidence too (several cohorts of one
    regression). The guarantee: the chance that any test whose candidate is
    within its tolerance is ever named failed is at most alpha.
    """
    le = _arr(log_e)
    n = le.shape[-1]
    if n == 0:
        return np.zeros(le.shape)
    k = max(int(tests), n)
    values = np.exp(np.minimum(le, _LOG_E_CAP))
    padded = np.concatenate((values, np.ones((*le.shape[:-1], k - n))), axis=-1)
    order = np.argsort(padded, axis=-1, kind="stable")
    position = np.argsort(order, axis=-1, kind="stable")[..., :n]
    prefix = np.concatenate(
        (np.zeros((*le.shape[:-1], 1)), np.cumsum(np.take_along_axis(padded, order, -1), -1)),
        axis=-1,
    )
    m = np.arange(k)
    # others below i in the order: the m smallest others are the m smallest overall
    below = np.maximum.accumulate((m + 1) / alpha - prefix[..., :k], axis=-1)
    # at or beyond i's position: the m smallest others are the m + 1 smallest but i
    beyond = (m + 1) / alpha - prefix[..., 1:]
    beyond = np.flip(np.maximum.accumulate(np.flip(beyond, -1), axis=-1), -1)
    from_below = np.where(
        position > 0, np.take_along_axis(below, np.maximum(position - 1, 0), -1), -np.inf
    )
    from_beyond = np.take_along_axis(beyond, position, -1) + values
    needed = np.maximum(np.maximum(from_below, from_beyond), 1.0 / alpha)
    result: Array = np.log(needed)
    return result


# --- one test at one look: the same numbers on floats --------------------------------
#
# The judge evaluates each of these on one float at a time, some forty times a look,
# where building, broadcasting and stacking arrays costs several times the
# arithmetic. These twins do the same operations in the same order on numpy
# float64 scalars (numpy's own log, exp and power, never `math`'s, whose last bits
# can differ), so they return exactly the bits of the array forms above:
# tests/analysis/test_sequential.py checks them against each other.


def _clip_one(x: np.float64, lo: float, hi: float) -> np.float64:
    """`np.clip` on one value (the same comparisons)."""
    x = x if x > lo else np.float64(lo)
    return x if x < hi else np.float64(hi)


def sprt_log_e_one(d_hat: float, information: float, delta: float) -> float:
    """`sprt_log_e` on floats, to the bit."""
    d, i, t = np.float64(d_hat), np.float64(information), np.float64(delta)
    return float(t * i * (d + t / 2.0))


def fail_log_e_one(d_hat: float, information: float, delta: float) -> float:
    """`fail_log_e` on floats, to the bit."""
    d, i, t = np.float64(d_hat), np.float64(information), np.float64(delta)
    total = None
    for c, w in zip(FAIL_ALTERNATIVES, FAIL_WEIGHTS, strict=True):
        term = math.log(w) + c * t * i * (d + t) - (c * t) ** 2 * i / 2.0
        total = term if total is None else np.logaddexp(total, term)
    return float(total)  # type: ignore[arg-type]


def pass_log_e_one(d_hat: float, information: float, delta: float) -> float:
    """`pass_log_e` on floats, to the bit."""
    return -sprt_log_e_one(d_hat, information, delta)


def normal_mixture_radius_one(v: float, tau: float, alpha: float) -> float:
    """`normal_mixture_radius` on floats, to the bit."""
    if not v > 0:
        return math.inf
    v_, t_ = np.float64(v), np.float64(tau)
    t2 = t_ * t_
    target = -np.log(np.float64(alpha)) - 0.5 * (np.log(v_) - np.log(v_ + t2))
    hi = np.sqrt(2.0 * target) + 3.0
    a_star = np.float64(
        optimize.brentq(_scalar_gap, 0.0, float(hi), args=(float(target),), xtol=1e-12)
    )
    return float(a_star * np.sqrt(v_ * (v_ + t2)) / t_)


def _bernoulli_log_lr_one(s: float, n: float, p0: np.float64, p1: np.float64) -> np.float64:
    a = _clip_one(p0, _EPS, 1 - _EPS)
    b = _clip_one(p1, _EPS, 1 - _EPS)
    s_, n_ = np.float64(s), np.float64(n)
    result: np.float64 = s_ * (np.log(b) - np.log(a)) + (n_ - s_) * (np.log1p(-b) - np.log1p(-a))
    return result


def bernoulli_fail_log_e_one(total: float, count: float, tolerance: float, limit: float) -> float:
    """`bernoulli_fail_log_e` on floats, to the bit."""
    t, lim = np.float64(tolerance), np.float64(limit)
    delta = lim - t
    result = None
    for c, w in zip(FAIL_ALTERNATIVES, FAIL_WEIGHTS, strict=True):
        p1 = _clip_one(t + c * delta, _EPS, 1 - _EPS)
        term = math.log(w) + _bernoulli_log_lr_one(total, count, t, p1)
        result = term if result is None else np.logaddexp(result, term)
    return float(result)  # type: ignore[arg-type]


def bernoulli_pass_log_e_one(total: float, count: float, tolerance: float, limit: float) -> float:
    """`bernoulli_pass_log_e` on floats, to the bit."""
    return float(_bernoulli_log_lr_one(total, count, np.float64(limit), np.float64(tolerance)))
