"""The read-only web dashboard: the rollouts, and for each its timeline, its cohort ×
metric verdicts at any look with the evidence behind each, charts of its metrics,
and its audit (transitions, route writes, commands, notifications).

Served by `canaryctl dashboard` on a store, or by the controller itself on
CANARY_DASHBOARD_PORT. Server-rendered (Jinja2, autoescaping everywhere) with
inline SVG charts and one small polling script, all shipped in the package: no
build step, no CDN, and no write action of any kind (acting stays with `canaryctl`
and Slack).
"""

from controller.dashboard.server import DashboardServer, open_store
from controller.dashboard.web import DEFAULT_PORT, create_app

__all__ = ["DEFAULT_PORT", "DashboardServer", "create_app", "open_store"]
