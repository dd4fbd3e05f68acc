"""Exponential backoff between failed attempts, shared by the ModelRollout watch and the
notification worker (the Kubernetes routers retry within one tick: `kube.cluster`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays between failed attempts: `first`, growing by `factor`, never above `longest`."""

    first: float = 0.5
    factor: float = 2.0
    longest: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` consecutive failures (1 or more)."""
        return float(min(self.longest, self.first * self.factor ** max(0, failures - 1)))
