"""The install scripts are quiet when the install works and show everything when it fails.

`apt-get` prints dozens of lines even with `-qq`; `make test` should show one
line for an install that worked. The scripts run in an empty folder with a
stand-in `apt-get` (and `sudo`) that prints a page of output, and a PATH where
no `prometheus`, `chromium` or `initdb` is found, so that they really install; the
policy-rc.d they write goes to the folder, not to /usr/sbin.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
TOOLS = ("bash", "mktemp", "cat", "rm", "tee", "chmod", "id", "dirname", "touch")

APT_GET = """#!/bin/sh
for i in $(seq 1 50); do echo "Selecting previously unselected package thing$i."; done
echo "dpkg: warning: something on stderr" >&2
if [ "$1" = install ]; then
    [ "$FAIL" = 1 ] && { echo "E: Unable to locate package"; exit 100; }
    for last; do :; done  # the package: prometheus, or postgresql (whose initdb we check)
    [ "$last" = postgresql ] && last=initdb
    touch "$BIN/$last" && chmod +x "$BIN/$last"
fi
exit 0
"""


def _bin(tmp_path: Path) -> Path:
    """A PATH of the few tools the scripts use, a stand-in apt-get and sudo, no prometheus."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (*TOOLS, "seq"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    (bin_dir / "apt-get").write_text(APT_GET)
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for stub in ("apt-get", "sudo"):
        (bin_dir / stub).chmod(0o755)
    return bin_dir


def _run(tmp_path: Path, script: str, *, fail: bool) -> subprocess.CompletedProcess[str]:
    bin_dir = _bin(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    return subprocess.run(
        ["bash", str(ROOT / "tools" / script)],
        cwd=work,
        env={
            "PATH": str(bin_dir),
            "BIN": str(bin_dir),
            "FAIL": "1" if fail else "0",
            "POLICY_RC_D": str(tmp_path / "policy-rc.d"),
            "HOME": str(tmp_path),
            "PG_LIB": str(tmp_path / "no-postgresql"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


SCRIPTS = [
    pytest.param(
        "ensure-prometheus.sh",
        "prometheus",
        "installing Debian's prometheus package (used by the metrics tests)",
        id="prometheus",
    ),
    pytest.param(
        "ensure-chromium.sh",
        "chromium",
        "installing Debian's chromium package (used by the dashboard's browser test)",
        id="chromium",
    ),
    pytest.param(
        "ensure-postgres.sh",
        "initdb",
        "installing Debian's postgresql package (the store tests run a throwaway server)",
        id="postgres",
    ),
]


@pytest.mark.parametrize(("script", "binary", "line"), SCRIPTS)
def test_a_successful_install_prints_one_line(
    tmp_path: Path, script: str, binary: str, line: str
) -> None:
    done = _run(tmp_path, script, fail=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [line]
    assert (tmp_path / "bin" / binary).exists()
    assert not (tmp_path / "policy-rc.d").exists()  # removed after the install
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize(("script", "binary", "line"), SCRIPTS)
def test_a_failed_install_shows_the_installers_output(
    tmp_path: Path, script: str, binary: str, line: str
) -> None:
    done = _run(tmp_path, script, fail=True)
    assert done.returncode == 100
    lines = done.stderr.splitlines()
    assert "failed (exit 100); its output:" in lines[1]
    assert "E: Unable to locate package" in lines
    assert "dpkg: warning: something on stderr" in lines
    assert len([line for line in lines if line.startswith("Selecting")]) == 50
    assert lines[0] == line
    assert not (tmp_path / "bin" / binary).exists()
    assert not (tmp_path / "policy-rc.d").exists()


def test_nothing_is_printed_when_the_package_is_there(tmp_path: Path) -> None:
    """`make test` installed Prometheus before the tests: the script says nothing."""
    done = subprocess.run(
        ["bash", str(ROOT / "tools" / "ensure-prometheus.sh")],
        cwd=tmp_path,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
