"""The `canaryctl` command line (typer + rich).

Commands are thin: they call the library and present the result, as a table for
people or as JSON (`--output json`) for scripts. Exit codes, for every command:

    0  success (for `validate`: every policy is valid)
    1  the input is invalid (for `validate`: at least one policy has an error)
    2  usage error (unknown option, missing argument, path that does not exist)
"""

from __future__ import annotations

import getpass
import json
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from controller import __version__
from controller.demo import Scenario
from controller.errors import CanaryError, PolicyError, Severity
from controller.policy import check_files
from controller.policy.loader import policy_files
from controller.store.sql import SqlStore

app = typer.Typer(
    name="canaryctl",
    help="Roll out ML / LLM model versions safely: validate, apply and watch ModelRollouts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


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
    """Check ModelRollout policies: every problem, with file, line, column and field path.

    Custom queries are checked against CANARY_CUSTOM_QUERIES, as the controller would."""
    from controller.settings import load_settings

    files = policy_files(paths)
    policies, problems = check_files(files, custom_queries=load_settings().custom_queries)
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


@app.command()
def run() -> None:
    """Run the controller (configured by CANARY_* variables; see the README)."""
    from controller.app import run as run_controller
    from controller.settings import load_settings
    from controller.telemetry import configure_logging

    try:
        settings = load_settings()
        configure_logging(settings)
        run_controller(settings)
    except CanaryError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc


DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="SQLAlchemy URL or SQLite file of the store (default: CANARY_DATABASE_URL).",
    ),
]


def _store(database: str | None) -> SqlStore:
    from controller.settings import load_settings

    if database is None:
        url = load_settings().database_url.get_secret_value()
    elif "://" in database:
        url = database
    else:
        if not Path(database).is_file():
            _fail(f"no store at {database}: run `canaryctl demo` or `canaryctl db upgrade` first")
        url = f"sqlite:///{database}"
    return SqlStore(url)


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


@app.command()
def status(
    name: Annotated[
        str | None, typer.Argument(help="namespace/name, or name; all if omitted.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every 2 s.")] = False,
    database: DatabaseOption = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Phase, step, weights, hold progress and the cohort x metric verdict grid."""
    from controller.cli.views import resolve, status_json, status_view

    store = _store(database)
    try:
        rows = [resolve(store, name)] if name else list(store.rollouts())
        if output is Output.JSON:
            now = datetime.now(UTC)
            typer.echo(json.dumps([status_json(store, r, now) for r in rows], indent=2))
            return

        def render() -> Group:
            now = datetime.now(UTC)
            current = [store.get(r.key) or r for r in rows] if name else list(store.rollouts())
            if not current:
                return Group(Text("no rollouts in the store yet"))
            return Group(*(status_view(store, r, now) for r in current))

        if not watch:
            console.print(render())
            return
        with Live(render(), console=console, refresh_per_second=1) as live:
            while True:
                time.sleep(2)
                live.update(render())
    except CanaryError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass
    finally:
        store.close()


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="namespace/name, or name.")],
    database: DatabaseOption = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """The audit timeline: every transition with the evidence behind it, commands, route writes."""
    from controller.cli.views import history_json, history_view, resolve

    store = _store(database)
    try:
        data = history_json(store, resolve(store, name))
    except CanaryError as exc:
        _fail(str(exc))
    finally:
        store.close()
    if output is Output.JSON:
        typer.echo(json.dumps(data, indent=2))
    else:
        console.print(history_view(data))


def _command(kind: str, name: str, reason: str, actor: str | None, database: str | None) -> None:
    from controller.cli.views import resolve
    from controller.engine.state import CommandKind
    from controller.runtime.manual import submit

    store = _store(database)
    try:
        row = resolve(store, name)
        who = actor or getpass.getuser()
        submit(store, row.key, CommandKind(kind), actor=who, reason=reason, now=datetime.now(UTC))
    except CanaryError as exc:
        _fail(str(exc))
    finally:
        store.close()
    console.print(
        f"{kind} recorded for {escape(row.key)} by {escape(who)}; "
        "the controller applies it on the rollout's next tick"
    )


ReasonOption = Annotated[str, typer.Option("--reason", "-r", help="Why, for the audit.")]
ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who, for the audit (default: your user name).")
]


@app.command()
def promote(
    name: str,
    full: Annotated[bool, typer.Option("--full", help="Straight to 100% and Promoted.")] = False,
    reason: ReasonOption = "",
    actor: ActorOption = None,
    database: DatabaseOption = None,
) -> None:
    """Advance to the next step (past a pause or the manual gate), or with --full to 100%."""
    _command("promote-full" if full else "promote", name, reason, actor, database)


@app.command()
def pause(
    name: str, reason: ReasonOption = "", actor: ActorOption = None, database: DatabaseOption = None
) -> None:
    """Hold the rollout where it is until `resume` (a FAIL still rolls back)."""
    _command("pause", name, reason, actor, database)


@app.command()
def resume(
    name: str, reason: ReasonOption = "", actor: ActorOption = None, database: DatabaseOption = None
) -> None:
    """Continue a paused rollout."""
    _command("resume", name, reason, actor, database)


@app.command()
def abort(
    name: str,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (required).")],
    actor: ActorOption = None,
    database: DatabaseOption = None,
) -> None:
    """Roll back now: the route goes back to the baseline."""
    _command("abort", name, reason, actor, database)


@app.command()
def demo(
    scenario: Annotated[
        Scenario, typer.Option("--scenario", "-s", help="What the candidate does.")
    ] = Scenario.COHORT_REGRESSION,
    database: Annotated[
        Path, typer.Option("--database", help="SQLite file for the audit (recreated).")
    ] = Path("canary-demo.db"),
    seed: Annotated[int, typer.Option(help="Seed of the traffic simulator.")] = 7,
    output: OutputOption = Output.TEXT,
) -> None:
    """The whole product on embedded defaults: real engine and judge, simulated traffic."""
    from controller.cli.demo_view import run_and_show

    run_and_show(scenario, database, seed, json_output=output is Output.JSON)


@app.command()
def apply(
    file: Annotated[Path, typer.Argument(help="A policy file.", exists=True, dir_okay=False)],
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Write into this directory source instead of the cluster."),
    ] = None,
) -> None:
    """Validate a policy, then apply it to the cluster (or to a directory source)."""
    from controller.cli.apply import to_cluster, to_directory
    from controller.policy import load_file
    from controller.settings import load_settings

    try:
        loaded = load_file(file, custom_queries=load_settings().custom_queries)
        for problem in (w for p in loaded for w in p.warnings):
            err_console.print(f"[yellow]WARN[/yellow] {escape(str(problem))}")
        for policy in loaded:
            if directory is not None:
                target = to_directory(policy.rollout, file, directory)
                console.print(f"{escape(policy.rollout.key)} written to {escape(str(target))}")
            else:
                from controller.app import kube_client

                client = kube_client(load_settings())
                try:
                    outcome = to_cluster(policy.rollout, client)
                finally:
                    client.close()  # type: ignore[no-untyped-call]  # the client has no annotations
                console.print(f"modelrollout {escape(policy.rollout.key)} {outcome}")
    except PolicyError as exc:
        for problem in exc.problems:
            err_console.print(f"[red]ERROR[/red] {escape(str(problem))}")
        raise typer.Exit(1) from exc
    except CanaryError as exc:
        _fail(str(exc))


@app.command()
def rehearse(
    policy: Annotated[
        Path, typer.Argument(help="The policy to rehearse.", exists=True, dir_okay=False)
    ],
    scenario: Annotated[Scenario, typer.Option("--scenario", "-s")] = Scenario.HEALTHY,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="Default: CANARY_KUBECONFIG, or in-cluster.")
    ] = None,
    pace: Annotated[float, typer.Option(help="Real seconds between looks (a short hold).")] = 1.0,
    rps: Annotated[
        float, typer.Option(help="Simulated requests per second (use your real traffic).")
    ] = 60.0,
    database: Annotated[Path, typer.Option(help="SQLite file for the audit (recreated).")] = Path(
        "canary-rehearsal.db"
    ),
    output: OutputOption = Output.TEXT,
) -> None:
    """Drive the policy's real router on the real route with simulated traffic, then restore it."""
    from controller.app import kube_client
    from controller.cli.demo_view import show_rehearsal
    from controller.policy import load_file
    from controller.routing.base import RouteTarget
    from controller.routing.cluster import Cluster
    from controller.routing.registry import router_class
    from controller.settings import load_settings

    try:
        [loaded] = load_file(policy)
        settings = load_settings(**({"kubeconfig": kubeconfig} if kubeconfig else {}))
        client = kube_client(settings)
        rollout = loaded.rollout
        target = RouteTarget.of(rollout)
        router = router_class(rollout.spec.traffic.router)(target, Cluster(client))
        try:
            show_rehearsal(
                rollout,
                router,
                scenario,
                database,
                pace,
                rps=rps,
                json_output=output is Output.JSON,
            )
        finally:
            client.close()  # type: ignore[no-untyped-call]  # the client has no annotations
    except ValueError:
        _fail(f"{policy} must hold exactly one ModelRollout to rehearse")
    except PolicyError as exc:
        for problem in exc.problems:
            err_console.print(f"[red]ERROR[/red] {escape(str(problem))}")
        raise typer.Exit(1) from exc
    except CanaryError as exc:
        _fail(str(exc))


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
