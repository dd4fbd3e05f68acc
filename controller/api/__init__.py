"""The controller's own HTTP surface: health, readiness and Prometheus self-metrics.

Thin on purpose: it serves what the runtime and
`controller.telemetry` already know and decides nothing itself.
"""

from controller.api.health import Check, CheckResult, Readiness, ReadinessReport
from controller.api.server import DEFAULT_PORT, ApiServer, BackgroundServer, create_app

__all__ = [
    "DEFAULT_PORT",
    "ApiServer",
    "BackgroundServer",
    "Check",
    "CheckResult",
    "Readiness",
    "ReadinessReport",
    "create_app",
]
