"""The image file, read as Docker would: non-root, hash-checked dependencies from the
lock file, slim and build-tool free, read-only-root ready, `canaryctl run` by default.

No Docker engine runs here, so the Dockerfile is parsed (tests/chart/dockerfile.py)
and checked against the chart and the package it packs.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import typer

from controller.api import DEFAULT_PORT
from controller.cli.main import app
from tests.chart.dockerfile import Dockerfile, Instruction, parse
from tests.chart.helm import render

ROOT = Path(__file__).resolve().parents[2]
IMAGE = parse(ROOT / "Dockerfile")
WRITABLE = {"/tmp", "/var/lib/canary"}


def env(instructions: list[Instruction]) -> dict[str, str]:
    out: dict[str, str] = {}
    for instruction in instructions:
        for word in shlex.split(instruction.text):
            name, _, value = word.partition("=")
            out[name] = value
    return out


def commands(stage_runs: list[Instruction]) -> list[list[str]]:
    """Every simple command of the RUN lines, split at `&&`."""
    out = []
    for run in stage_runs:
        for part in run.text.split("&&"):
            out.append(shlex.split(part))
    return out


def pip_installs(image: Dockerfile) -> list[list[str]]:
    return [
        c
        for s in image.stages
        for c in commands(s.all("RUN"))
        if "pip" in c[0] and c[1] == "install"
    ]


def test_multi_stage_with_a_slim_final_stage() -> None:
    assert len(IMAGE.stages) >= 2
    assert IMAGE.stages[0].name == "build"
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", IMAGE.final.base)
    assert IMAGE.final.name is None


def test_the_final_stage_takes_only_the_venv_from_the_build() -> None:
    copies = IMAGE.final.all("COPY") + IMAGE.final.all("ADD")
    assert [(c.flags(), c.words()) for c in copies] == [
        ({"from": "build"}, ["/opt/venv", "/opt/venv"])
    ]
    # no compiler, no pip, no build tools in the runtime stage
    for command in commands(IMAGE.final.all("RUN")):
        assert command[0] not in {"pip", "apt-get", "apt", "python", "uv"}, command


def test_the_user_is_numeric_and_not_root() -> None:
    user = IMAGE.final.last("USER")
    assert user is not None
    uid, _, gid = user.text.partition(":")
    assert uid.isdigit() and int(uid) > 0
    assert gid.isdigit() and int(gid) > 0
    last_instruction = IMAGE.final.instructions.index(user)
    assert not [i for i in IMAGE.final.instructions[last_instruction:] if i.keyword == "RUN"]
    # the chart runs the pods as that same user
    pod = render().one("Deployment")["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(uid),
        int(gid),
    )


def test_runtime_dependencies_come_from_the_lock_file_with_hashes() -> None:
    installs = pip_installs(IMAGE)
    from_lock = [c for c in installs if "requirements/main.lock" in c]
    assert len(from_lock) == 1
    (command,) = from_lock
    assert "--require-hashes" in command
    assert command[command.index("-r") + 1] == "requirements/main.lock"
    assert command[0] == "/opt/venv/bin/pip"  # the venv the final stage copies
    # every install is hash-checked, or offline from the wheel built in the image
    for install in installs:
        assert "--require-hashes" in install or "--no-index" in install, install
    lock = (ROOT / "requirements" / "main.lock").read_text()
    assert "--hash=sha256:" in lock
    assert not (ROOT / "uv.lock").exists()


def test_the_lock_files_are_copied_before_the_code_for_layer_reuse() -> None:
    build = IMAGE.stage("build")
    copies = build.all("COPY")
    assert "requirements/main.lock" in copies[0].words()
    assert any("controller" in c.words() for c in copies[1:])


def test_entrypoint_is_canaryctl_and_the_default_command_is_run() -> None:
    entrypoint, cmd = IMAGE.final.last("ENTRYPOINT"), IMAGE.final.last("CMD")
    assert entrypoint is not None and cmd is not None
    assert entrypoint.exec_form == ["canaryctl"]
    assert cmd.exec_form == ["run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["canaryctl"] == "controller.cli.main:main"
    assert "run" in typer.main.get_command(app).commands  # type: ignore[attr-defined]
    # the chart passes the same command and leaves the entrypoint alone
    (container,) = render().one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["args"] == cmd.exec_form and "command" not in container


def test_read_only_root_filesystem_needs_only_the_declared_volumes() -> None:
    volumes = IMAGE.final.all("VOLUME")
    assert {v for volume in volumes for v in volume.exec_form or []} == WRITABLE
    final_env = env(IMAGE.final.all("ENV"))
    assert final_env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert final_env["HOME"] in WRITABLE
    # the SQLite default `sqlite:///canary.db` is relative to the working directory
    workdir = IMAGE.final.last("WORKDIR")
    assert workdir is not None and workdir.text in WRITABLE
    # a variable would beat the database URL mounted from a Secret
    assert not [k for k in final_env if k.startswith("CANARY_")]
    # the chart mounts exactly these as writable volumes
    (container,) = render().one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")} == WRITABLE


def test_port_and_healthcheck_are_the_api_servers() -> None:
    expose = IMAGE.final.last("EXPOSE")
    assert expose is not None and expose.text == str(DEFAULT_PORT)
    check = IMAGE.final.last("HEALTHCHECK")
    assert check is not None
    assert f"http://127.0.0.1:{DEFAULT_PORT}/healthz" in check.text


# --- .dockerignore ---------------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out)


def ignored(path: str) -> bool:
    """Whether the build context leaves `path` out: the last matching rule wins, and a
    rule matches a path when it matches the path or one of its parent directories."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    result = False
    for rule in rules:
        negate = rule.startswith("!")
        regex = _pattern(rule.removeprefix("!").strip("/"))
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negate
    return result


def copied_sources() -> list[str]:
    sources = []
    for stage in IMAGE.stages:
        for copy in stage.all("COPY"):
            if "from" not in copy.flags():
                sources.extend(copy.words()[:-1])
    return sources


def test_everything_copied_exists_and_reaches_the_build() -> None:
    for source in copied_sources():
        assert (ROOT / source).exists(), source
        assert not ignored(source), source
    assert not ignored("controller/store/migrations/versions/0001_initial.py")
    assert not ignored("controller/store/migrations/script.py.mako")


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".venv/bin/python",
        "tests/test_settings.py",
        "canary.db",
        "controller/__pycache__/settings.cpython-311.pyc",
        "controller/store/x.db",
        ".env",
        "charts/canary-controller/values.yaml",
        "requirements/new.lock",
    ],
)
def test_the_build_context_leaves_out_everything_else(path: str) -> None:
    assert ignored(path)
