"""What the commands leave in the folder they run in is git-ignored in a checkout.

A newcomer runs `make demo` in the repository: `git status` stays clean.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.cli.shell import canaryctl

ROOT = Path(__file__).parent.parent.parent


def _ignored(name: str) -> bool:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", "--quiet", name],
        capture_output=True,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


def test_everything_the_demo_leaves_is_ignored(tmp_path: Path) -> None:
    done = canaryctl("demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "canary-demo.db" in left
    assert [name for name in left if not _ignored(name)] == []


def test_the_default_stores_are_ignored() -> None:
    for name in ("canary.db", "canary-demo.db", "canary-rehearsal.db", "canary.db-journal"):
        assert _ignored(name), name
    assert not _ignored("policies/nginx-basic.yaml")
