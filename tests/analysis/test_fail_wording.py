"""A FAIL's reason says what the evidence shows: past the limit, or only past the tolerance.

Between the tolerance and the limit either verdict is allowed; a FAIL there must not
read as a broken limit when the estimate is short of it."""

from __future__ import annotations

import pytest

from controller.analysis.checks import Test as LimitTest
from controller.analysis.checks import limit_check
from controller.analysis.plan import Budget
from controller.analysis.verdicts import Limit, Method, Verdict


def _test(d_hat: float, estimate: float) -> LimitTest:
    return LimitTest(
        limit=Limit.MAX_INCREASE,
        threshold=0.05,
        statement="candidate - baseline <= 5.00%",
        method=Method.GAUSSIAN_SPRT,
        quantity="candidate - baseline",
        limit_text="maxIncrease 5.00%",
        show=lambda v: f"{v:.2%}",
        estimate=estimate,
        lower=estimate - 0.01,
        upper=estimate + 0.01,
        allowed=0.05,
        tolerance=0.025,
        log_fail=12.0,  # far past any threshold: FAIL
        log_pass=0.0,
        d_hat=d_hat,
        information=1e4,
        delta=0.025,
    )


@pytest.mark.parametrize(
    ("d_hat", "estimate", "wording"),
    [
        pytest.param(0.01, 0.06, "candidate - baseline 6.00% breaks maxIncrease 5.00%", id="past"),
        pytest.param(0.0, 0.05, "candidate - baseline 5.00% breaks maxIncrease 5.00%", id="at"),
        pytest.param(
            -0.01,
            0.04,
            "candidate - baseline 4.00% is past what maxIncrease 5.00% tolerates "
            "(fine up to 2.50%): the evidence favours the limit over the tolerance",
            id="between",
        ),
    ],
)
def test_a_fail_says_which_side_of_the_limit_its_estimate_is(
    d_hat: float, estimate: float, wording: str
) -> None:
    check = limit_check(_test(d_hat, estimate), 3.0, Budget(alpha=0.05, tests=4), 500.0)
    assert check.verdict is Verdict.FAIL
    assert check.reason.startswith(wording)
    assert f"it lies in [{estimate - 0.01:.2%}, {estimate + 0.01:.2%}]" in check.reason
