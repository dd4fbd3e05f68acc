"""The README and docs/ say what the code does: the claims a newcomer acts on are checked here.

- `validate --output json` is documented (docs/policy.md) with the keys it really has;
- the README and the Makefile give the benchmarks the durations measured in
  docs/benchmarks.md;
- nothing in the repository refers to a file outside it (a design document, a
  sibling folder, the issue tracker), and every relative link resolves.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.cli.shell import canaryctl

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
BENCHMARKS = (ROOT / "docs" / "benchmarks.md").read_text()
POLICY = (ROOT / "docs" / "policy.md").read_text()


def test_validate_json_is_the_object_the_docs_describe(tmp_path: Path) -> None:
    done = canaryctl(
        "validate", "--output", "json", str(ROOT / "policies" / "nginx-basic.yaml"), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert isinstance(report, dict)
    documented = re.search(
        r"`--output json` gives the same as one\nobject.*?`(\{.*?\})`", POLICY, re.S
    )
    assert documented is not None
    described = documented.group(1)
    for key in report:
        assert f'"{key}"' in described
    for key in report["policies"][0]:
        assert f'"{key}"' in described
    assert '"problems": [{"file", "line", "column", "path", "message",\n"severity"}]' in described


def _minutes(pattern: str, text: str) -> int:
    found = re.search(pattern, text, re.S)
    assert found is not None, pattern
    return int(found.group(1))


def test_benchmark_durations_agree() -> None:
    # the full scale run takes about 10 minutes; the full detection run, since it rolls
    # out 1,000 A/A streams per rate for ours, hours: every page says the same
    assert _minutes(r"bench.scale` \([^)]*\) asks.*?takes about (\d+) minutes", BENCHMARKS) == 10
    assert _minutes(r"`make bench-scale`\s+\((\d+) min\)", README) == 10
    scale = r"about (\d+) minutes on 2 cores\n[^\n]*\n[^\n]*\nbench-scale:"
    assert _minutes(scale, MAKEFILE) == 10
    assert "`make bench-detection` (hours at full size)" in README
    assert "`make\nbench-detection` (hours since it rolls out 1,000 A/A" in BENCHMARKS
    assert "# Hours on 2 shared cores" in MAKEFILE


def test_nothing_refers_outside_the_repository() -> None:
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    outside = re.compile(r"(?-i:(?<![\w/])DESIGN\.md)|\.\./shared|/work/|issue #\d|issues/\d", re.I)
    found = []
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.suffix in {".png", ".lock"} or path == Path(__file__):
            continue
        text = path.read_text(errors="replace")
        found += [f"{name}: {m.group(0)}" for m in outside.finditer(text)]
    assert found == []


def test_relative_links_resolve() -> None:
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name}: {target}"


def test_the_readme_is_a_front_page_that_links_the_rest() -> None:
    # what it is, the quick start, one policy, the CLI, deploying; the rest is in docs/
    assert len(README.splitlines()) <= 250
    for page in ("policy", "judge", "operations", "benchmarks", "design"):
        assert f"(docs/{page}.md)" in README, page
