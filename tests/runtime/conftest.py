"""Fixtures of the runtime tests: the live world `canaryctl run` runs in."""

from tests.databases import postgres_server_url, postgres_test_url  # noqa: F401  (fixtures)
from tests.runtime.live import world  # noqa: F401  (fixture)
