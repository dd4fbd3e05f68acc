"""Which way a route action moves traffic: toward the candidate, or not.

The rule the executor follows when the store or the lease is in doubt rests on
this one question. Taking traffic away from a candidate (a rollback's restore,
a lower weight, less mirroring) is always safe: it needs neither the store nor
the lease, and is performed at once. Giving the candidate more of anything
(a higher weight in any cohort, more mirroring, the promotion's restore) needs
both, because a replica that cannot record or is no longer sure it owns the
rollout must not push more users onto an unproven model.

A route state gives every cohort a candidate share: its own, when it is listed,
else the state's `weight` (see `RouteState`). An `ApplyRoute` moves toward the
candidate when any of those shares, or the mirrored share, grows.
"""

from __future__ import annotations

from controller.engine.state import Action, ApplyRoute, RestoreRoute
from controller.policy.route import RouteState


def candidate_shares(state: RouteState, cohorts: frozenset[str]) -> dict[str, int]:
    """The candidate's share of each of `cohorts`, and of the rest ("" is the rest)."""
    own = state.cohort_weights
    return {"": state.weight} | {name: own.get(name, state.weight) for name in cohorts}


def moves_toward_candidate(current: RouteState, action: Action) -> bool:
    """Whether performing `action` on a route carrying `current` sends the candidate
    more traffic anywhere. Notifications move nothing."""
    if isinstance(action, RestoreRoute):
        return action.promoted  # the promotion gives the route to the candidate
    if not isinstance(action, ApplyRoute):
        return False
    wanted = action.state
    if wanted.mirror_percent > current.mirror_percent:
        return True
    names = frozenset(current.cohort_weights) | frozenset(wanted.cohort_weights)
    before, after = candidate_shares(current, names), candidate_shares(wanted, names)
    return any(after[name] > before[name] for name in after)
