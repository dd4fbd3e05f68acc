"""Which way a route action moves traffic: the question the store-down rule rests on."""

from __future__ import annotations

import pytest

from controller.engine.direction import moves_toward_candidate
from controller.engine.state import Action, ApplyRoute, EventKind, Notify, RestoreRoute
from controller.policy.route import RouteState

STEP = RouteState(5, {"mobile": 10})


@pytest.mark.parametrize(
    ("current", "action", "toward"),
    [
        pytest.param(STEP, RestoreRoute(promoted=False), False, id="rollback-restore"),
        pytest.param(RouteState(), RestoreRoute(promoted=False), False, id="restore-at-baseline"),
        pytest.param(STEP, RestoreRoute(promoted=True), True, id="promotion"),
        pytest.param(STEP, ApplyRoute(STEP), False, id="same-state-re-applied"),
        pytest.param(STEP, ApplyRoute(RouteState(50)), True, id="next-step"),
        pytest.param(RouteState(50), ApplyRoute(STEP), False, id="lower-everywhere"),
        pytest.param(STEP, ApplyRoute(RouteState(5)), False, id="cohort-falls-to-weight"),
        pytest.param(RouteState(5), ApplyRoute(STEP), True, id="cohort-gets-more-than-weight"),
        pytest.param(
            STEP, ApplyRoute(RouteState(5, {"mobile": 10, "de": 1})), False, id="new-cohort-lower"
        ),
        pytest.param(
            STEP, ApplyRoute(RouteState(5, {"mobile": 10, "de": 20})), True, id="new-cohort-higher"
        ),
        pytest.param(
            RouteState(20, {"mobile": 0}),
            ApplyRoute(RouteState(10)),
            True,
            id="weight-down-cohort-up",
        ),
        pytest.param(
            RouteState(0, (), 100), ApplyRoute(RouteState(5)), True, id="shadow-to-step-1"
        ),
        pytest.param(
            RouteState(0, (), 50), ApplyRoute(RouteState(0, (), 100)), True, id="more-mirror"
        ),
        pytest.param(RouteState(0, (), 100), ApplyRoute(RouteState()), False, id="mirror-off"),
        pytest.param(
            STEP, ApplyRoute(RouteState(5, {"mobile": 10}, 0, "x-id")), False, id="sticky-only"
        ),
        pytest.param(STEP, Notify(EventKind.HOLDING, "holding"), False, id="notification"),
    ],
)
def test_moves_toward_candidate(current: RouteState, action: Action, toward: bool) -> None:
    assert moves_toward_candidate(current, action) is toward
