"""`canaryctl COMMAND --help` for every command: conventional names, no Python types.

Arguments show as `PATH...`, `NAME` or `[NAME]`; options as `--database URL`,
`--output [text|json]`; flags as themselves. Never `<bool>`, `<list[Path]>`,
`<str>` or `{paths}`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from controller.cli.main import app
from tests.cli.shell import canaryctl


def _commands(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, command in getattr(group, "commands", {}).items():
        out.extend(_commands(command, (*prefix, name)))
    return out


COMMANDS = _commands(typer.main.get_command(app))


def test_every_command_is_covered() -> None:
    assert {c[0] for c in COMMANDS if c} >= {
        "validate",
        "run",
        "status",
        "history",
        "promote",
        "pause",
        "resume",
        "abort",
        "demo",
        "apply",
        "rehearse",
        "db",
    }
    assert ("db", "upgrade") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "canaryctl")
def test_help_uses_conventional_metavars(tmp_path: Path, command: tuple[str, ...]) -> None:
    done = canaryctl(*command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith(f"Usage: canaryctl {' '.join(command)}".replace("  ", " "))
    assert not re.search(r"<[a-z]", text), text  # <bool>, <str>, <list[Path]>, <text|json>
    assert "{" not in text and "}" not in text, text
    assert "list[" not in text, text
    for flag in ("--watch", "--full", "--version", "--help"):
        # a flag is followed by its help, never by a type
        assert not re.search(rf"{flag} [A-Z<\[]", text), text


@pytest.mark.parametrize(
    ("command", "usage", "lines"),
    [
        pytest.param(
            ["validate"],
            "Usage: canaryctl validate [OPTIONS] PATH...",
            ["PATH...  Policy files", "-o, --output [text|json]"],
            id="validate",
        ),
        pytest.param(
            ["status"],
            "Usage: canaryctl status [OPTIONS] [NAME]",
            ["NAME  namespace/name", "--database URL", "-w, --watch  "],
            id="status",
        ),
        pytest.param(
            ["abort"],
            "Usage: canaryctl abort [OPTIONS] NAME",
            ["-r, --reason TEXT", "--actor NAME"],
            id="abort",
        ),
        pytest.param(
            ["demo"],
            "Usage: canaryctl demo [OPTIONS]",
            [
                "-s, --scenario [cohort-regression|healthy|outage|gate-replay]",
                "--database PATH",
                "--seed N",
            ],
            id="demo",
        ),
        pytest.param(
            ["rehearse"],
            "Usage: canaryctl rehearse [OPTIONS] POLICY",
            ["--kubeconfig PATH", "--pace SECONDS", "--rps N"],
            id="rehearse",
        ),
        pytest.param(
            ["db", "upgrade"],
            "Usage: canaryctl db upgrade [OPTIONS] [REVISION]",
            ["REVISION  Alembic revision"],
            id="db-upgrade",
        ),
    ],
)
def test_help_names(tmp_path: Path, command: list[str], usage: str, lines: list[str]) -> None:
    done = canaryctl(*command, "--help", cwd=tmp_path)
    assert done.stdout.splitlines()[0] == usage
    for line in lines:
        assert line in done.stdout, done.stdout
