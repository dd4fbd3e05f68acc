"""The controller's own HTTP surface: health, readiness, Prometheus self-metrics, Slack.

Thin on purpose: it serves what the runtime and `controller.telemetry` already
know and decides nothing itself. `slack_actions` takes Slack's signed button
presses and hands each to the manual-command path it is given (the one
`canaryctl` uses); `slack_buttons` draws the buttons from the engine's table of
which command applies in which phase.
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
