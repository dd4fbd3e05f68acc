"""`canaryctl` starts without loading what its command does not need.

Structural, not timed (the figures are `bench/cli_startup.py`'s): importing the
CLI, asking for help or validating a policy never imports the numerical stack,
the store, the kubernetes client or the demo; only the commands that use them
load them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.shell import canaryctl, clean_env

ROOT = Path(__file__).parent.parent.parent
POLICY = ROOT / "policies" / "nginx-basic.yaml"
HEAVY = ("scipy", "numpy", "sqlalchemy", "alembic", "kubernetes", "controller.demo")

# Runs the CLI in this process as the console script does, then lists what it loaded.
PROBE = """
import json, sys
from controller.cli.main import main
sys.argv = ["canaryctl", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
heavy = sorted({name.split(".")[0] if not name.startswith("controller") else name
                for name in sys.modules} & set(HEAVY))
print(json.dumps(heavy), file=sys.stderr)
"""


def _loaded(tmp_path: Path, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{PROBE}", *args],
        cwd=tmp_path,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--help"], id="help"),
        pytest.param(["--version"], id="version"),
        pytest.param(["validate", str(POLICY)], id="validate"),
        pytest.param(["status", "--help"], id="status-help"),
        pytest.param(["demo", "--help"], id="demo-help"),
        pytest.param(["plan", "--help"], id="plan-help"),
    ],
)
def test_light_commands_load_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    assert _loaded(tmp_path, *args) == []


def test_the_demo_still_loads_what_it_needs(tmp_path: Path) -> None:
    """The probe sees imports: the demo's own command does load the engine and the store."""
    loaded = _loaded(tmp_path, "demo", "--database", str(tmp_path / "d.db"))
    assert {"scipy", "sqlalchemy", "controller.demo"} <= set(loaded)


def test_validate_loads_the_planner_only_with_plan(tmp_path: Path) -> None:
    """The plan is computed with the judge's statistics: scipy, but only when asked for."""
    assert "scipy" in _loaded(tmp_path, "validate", "--plan", str(POLICY))


def test_importing_the_cli_loads_nothing_heavy(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, controller.cli.main; print(json.dumps(sorted(sys.modules)))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules = json.loads(done.stdout)
    assert [m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY] == []


def test_validate_works_from_an_empty_folder(tmp_path: Path) -> None:
    done = canaryctl("validate", str(POLICY), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 valid, 0 error(s) in 1 file(s)" in done.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written
