"""The rollout engine: phases, state, the pure transition function and its executor.

The import-linter contract in pyproject.toml keeps it from importing kubernetes,
sqlalchemy, slack_sdk, apscheduler, requests, psycopg, ...: it
reaches the outside only through the ports its executor is given.
"""
