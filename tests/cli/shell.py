"""`canaryctl` as a user runs it: the installed script, a new process, an empty folder.

The environment is the test process's without any `CANARY_*` or `KUBECONFIG`
variable and with `HOME` set to the folder, so that nothing of the machine the
tests run on (a store, a kubeconfig) is found by accident; `env` adds back what
a test wants.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

CANARYCTL = str(Path(sys.executable).with_name("canaryctl"))


def clean_env(home: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("CANARY_") and k != "KUBECONFIG"
    }
    return {**base, "HOME": str(home), **(env or {})}


def canaryctl(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `canaryctl ARGS...` in `cwd` and return what it did (never raises on exit codes)."""
    return subprocess.run(
        [CANARYCTL, *args],
        cwd=cwd,
        env=clean_env(cwd, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
