"""An installed wheel carries the dashboard's templates and static files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "controller" / "dashboard"


def test_the_wheel_ships_every_template_and_static_file(tmp_path: Path) -> None:
    hatchling = Path(sys.executable).with_name("hatchling")
    done = subprocess.run(
        [str(hatchling), "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [wheel] = tmp_path.glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    needed = {
        str(f.relative_to(ROOT))
        for folder in ("templates", "static")
        for f in (PACKAGE / folder).iterdir()
    }
    assert needed
    assert needed <= shipped, needed - shipped
