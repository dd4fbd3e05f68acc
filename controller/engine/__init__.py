"""The rollout engine: phases, state, the pure transition function and its executor.

Built by the engine issue. The package exists from the start so that the
import-linter contract in pyproject.toml (the engine never imports kubernetes,
sqlalchemy, slack_sdk, apscheduler, prometheus_api_client, requests, ...) is in
force before its first line of code is written.
"""
