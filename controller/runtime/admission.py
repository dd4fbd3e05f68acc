"""The operator's rule for custom queries, applied to every rollout a source lists.

With `CANARY_CUSTOM_QUERIES=deny`, `canaryctl validate` and `apply` already
refuse a policy with a custom query, and the Kubernetes source reports such a
ModelRollout as invalid on its status. A policy can still reach the controller
another way (a file copied into the directory source, a source that does not
know the setting), so the controller checks every rollout it is given: one
with a custom query is moved to the snapshot's `invalid` keys, with the reason
among its problems and in the log (once per change, not every sync). As for
any invalid spec, a rollout that had not started never starts, and one under
way is not ended: it is ticked on its last committed policy toward the baseline
only, so it never advances. The Prometheus provider refuses to run a custom
query under `deny` as well, so such a look is NO_DATA: the policy's `noData`
rule applies, and a rollback it calls for (a move toward the baseline) happens.

The operator's webhook allowlist (`CANARY_WEBHOOK_ALLOW`) is applied the same way:
a rollout with a gate whose URL is not on it is refused, and the gate runner
checks the URL again before each call.
"""

from __future__ import annotations

import dataclasses
import logging

from controller.errors import Problem
from controller.policy.checks import custom_query_problems, webhook_allow_problems
from controller.policy.gates import WebhookAllow
from controller.policy.queries import CustomQueries
from controller.runtime.sources import RolloutSource, Snapshot

log = logging.getLogger(__name__)


class QueryAdmission:
    """A `RolloutSource` that leaves out the rollouts `custom_queries` (or, when given,
    the webhook allowlist) refuses."""

    def __init__(
        self,
        source: RolloutSource,
        custom_queries: CustomQueries,
        webhook_allow: WebhookAllow | None = None,
    ) -> None:
        self.source = source
        self.custom_queries = custom_queries
        self.webhook_allow = webhook_allow
        self._reported: dict[str, tuple[Problem, ...]] = {}

    def snapshot(self) -> Snapshot:
        snapshot = self.source.snapshot()
        refused: dict[str, tuple[Problem, ...]] = {}
        for key, rollout in snapshot.rollouts.items():
            problems = tuple(
                dataclasses.replace(p, file=f"ModelRollout {key}")
                for p in (
                    *custom_query_problems(rollout.spec.analysis, self.custom_queries),
                    *(
                        webhook_allow_problems(rollout.spec.gates, self.webhook_allow)
                        if self.webhook_allow is not None
                        else ()
                    ),
                )
            )
            if problems:
                refused[key] = problems
        for key, problems in refused.items():
            if self._reported.get(key) != problems:
                for problem in problems:
                    log.error("not started, or held toward the candidate: %s", problem)
        self._reported = refused
        if not refused:
            return snapshot
        return dataclasses.replace(
            snapshot,
            rollouts={k: v for k, v in snapshot.rollouts.items() if k not in refused},
            problems=(*snapshot.problems, *(p for ps in refused.values() for p in ps)),
            invalid=snapshot.invalid | frozenset(refused),
        )
