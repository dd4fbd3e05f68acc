"""The `canaryctl` command line (typer + rich).

Commands are thin: they call the library and present the result, as a table for
people or as JSON (`--output json`) for scripts. Exit codes, for every command:

    0  success (for `validate`: every policy is valid)
    1  the input is invalid (for `validate`: at least one policy has an error)
    2  usage error (unknown option, missing argument, path that does not exist)
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from controller import __version__
from controller.errors import CanaryError, Severity
from controller.policy import check_files
from controller.policy.loader import policy_files

app = typer.Typer(
    name="canaryctl",
    help="Roll out ML / LLM model versions safely: validate, apply and watch ModelRollouts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False, soft_wrap=True)


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"


OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="text for people, json for scripts.")
]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"canaryctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Roll out ML / LLM model versions safely: validate, apply and watch ModelRollouts."""


@app.command()
def validate(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Policy files, or directories searched for *.yaml / *.yml.", exists=True
        ),
    ],
    output: OutputOption = Output.TEXT,
) -> None:
    """Check ModelRollout policies: every problem, with file, line, column and field path."""
    files = policy_files(paths)
    policies, problems = check_files(files)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if output is Output.JSON:
        report = {
            "valid": not errors,
            "files": len(files),
            "policies": [
                {
                    "file": p.file,
                    "line": p.line,
                    "name": p.rollout.metadata.name,
                    "namespace": p.rollout.metadata.namespace,
                }
                for p in policies
            ],
            "problems": [
                {
                    "file": p.file,
                    "line": p.line,
                    "column": p.column,
                    "path": p.path,
                    "message": p.message,
                    "severity": str(p.severity),
                }
                for p in problems
            ],
        }
        typer.echo(json.dumps(report, indent=2))
    else:
        for policy in policies:
            spec = policy.rollout.spec
            console.print(
                f"[green]OK[/green]    {escape(policy.file)}:{policy.line}  "
                f"{escape(policy.rollout.key)}  ({spec.traffic.router}, {len(spec.steps)} steps, "
                f"{len(spec.cohorts)} cohorts, {len(spec.analysis.metrics)} metrics)"
            )
        for problem in problems:
            tag = (
                "[red]ERROR[/red]"
                if problem.severity is Severity.ERROR
                else "[yellow]WARN[/yellow] "
            )
            console.print(f"{tag} {escape(str(problem))}")
        if not files:
            console.print("[yellow]no policy files found[/yellow]")
        summary = f"{len(policies)} valid, {len(errors)} error(s) in {len(files)} file(s)"
        console.print(summary if not errors else f"[red]{summary}[/red]")
    raise typer.Exit(1 if errors or not files else 0)


db_app = typer.Typer(help="The audit store.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Alembic revision to reach.")] = "head",
) -> None:
    """Create or migrate the store's tables (CANARY_DATABASE_URL)."""
    from controller.settings import load_settings, redact_url
    from controller.store.sql import migrate

    url = load_settings().database_url.get_secret_value()
    try:
        migrate(url, revision)
    except CanaryError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    console.print(f"database {escape(redact_url(url))} is at revision {escape(revision)}")


def main() -> None:
    """Entry point of the `canaryctl` console script."""
    app()
