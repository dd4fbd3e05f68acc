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
import signal
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from controller import __version__
from controller.cli.help import HelpGroup
from controller.errors import CanaryError, PermanentError, PolicyError, Severity
from controller.scenarios import Scenario

if TYPE_CHECKING:
    from rich.console import Group

    from controller.analysis.rollout_plan import Plan
    from controller.policy import ModelRollout
    from controller.policy.loader import LoadedPolicy
    from controller.policy.queries import CustomQueries
    from controller.runtime.oneshot import SqlStore

# Every command imports what it needs itself: `canaryctl --help` or `validate`
# must not pay for scipy, SQLAlchemy, Alembic or the kubernetes client.

app = typer.Typer(
    name="canaryctl",
    help="Roll out ML / LLM model versions safely: validate, apply and watch ModelRollouts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: conventional metavars (controller/cli/help.py), and no Markdown
    # renderer to import on every start
    rich_markup_mode=None,
    cls=HelpGroup,
)
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"


OutputOption = Annotated[
    Output,
    typer.Option(
        "--output", "-o", metavar="[text|json]", help="text for people, json for scripts."
    ),
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


RpsOption = Annotated[
    float | None,
    typer.Option(
        "--rps",
        metavar="N",
        help="The model's requests per second to plan with (default: 100, or --prometheus).",
    ),
]
CohortShareOption = Annotated[
    list[str] | None,
    typer.Option(
        "--cohort-share",
        metavar="NAME=FRACTION",
        help="A cohort's share of the traffic (repeatable); cohorts not given split "
        "what is left equally with the requests in no cohort.",
    ),
]
SampleShareOption = Annotated[
    list[str] | None,
    typer.Option(
        "--sample-share",
        metavar="METRIC=FRACTION",
        help="The share of requests that carry a sample of a metric (repeatable; e.g. "
        "quality-score=0.1 for a judge scoring 10 %); default 1, or measured with "
        "--prometheus where the template counts its samples.",
    ),
]
PrometheusOption = Annotated[
    str | None,
    typer.Option(
        "--prometheus",
        metavar="URL",
        help="Read each cohort's request rate from the baseline's last 24 hours there.",
    ),
]


def _plans(
    policies: list[LoadedPolicy],
    rps: float | None,
    cohort_share: list[str] | None,
    prometheus: str | None,
    sample_share: list[str] | None = None,
) -> list[tuple[LoadedPolicy, Plan]]:
    """Each policy planned (exit 2 on bad options, 1 when Prometheus cannot tell)."""
    from controller.analysis.rollout_plan import PlanInputError
    from controller.cli.plan_view import parse_shares, plan_policy, traffic_for
    from controller.settings import load_settings

    if rps is not None and not (rps > 0 and rps < float("inf")):
        _fail(f"--rps {rps:g}: the request rate must be a positive number", 2)
    try:
        shares = parse_shares(cohort_share or [])
        samples = parse_shares(sample_share or [], "--sample-share", "quality-score=0.1")
    except PlanInputError as exc:
        _fail(str(exc), 2)
    settings = load_settings()
    out = []
    for policy in policies:
        try:
            traffic = traffic_for(
                policy.rollout.spec,
                policy.rollout.metadata.namespace,
                rps=rps,
                shares=shares,
                prometheus=prometheus,
                settings=settings,
                samples=samples,
            )
        except PlanInputError as exc:
            _fail(f"{policy.file}: {exc}", 1 if str(exc).startswith("--prometheus") else 2)
        out.append((policy, plan_policy(policy, traffic)))
    return out


@app.command()
def plan(
    path: Annotated[
        Path, typer.Argument(metavar="POLICY", help="A policy file (every ModelRollout in it).")
    ],
    rps: RpsOption = None,
    cohort_share: CohortShareOption = None,
    sample_share: SampleShareOption = None,
    prometheus: PrometheusOption = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """How long each step takes to decide, how long to promotion, and what to change.

    For each step and cell: minutes for a healthy candidate to decide and for one at
    the limit to FAIL (median / 80th percentile), with the judge's own statistics."""
    from controller.policy import check_files
    from controller.settings import load_settings

    if not path.is_file():
        _fail(f"{path}: no such file", 2)
    settings = load_settings()
    policies, problems = check_files(
        [path],
        custom_queries=settings.custom_queries,
        webhook_allow=settings.webhook_allowlist_if_set,
    )
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if errors:
        for problem in errors:
            err_console.print(f"[red]ERROR[/red] {escape(str(problem))}")
        raise typer.Exit(1)
    if not policies:
        _fail(f"{path}: no ModelRollout in it", 1)
    _show_plans(_plans(policies, rps, cohort_share, prometheus, sample_share), output)


def _show_plans(plans: list[tuple[LoadedPolicy, Plan]], output: Output) -> None:
    from controller.cli.plan_view import plan_json, print_plan

    if output is Output.JSON:
        typer.echo(json.dumps([plan_json(p, pl) for p, pl in plans], indent=2))
        return
    for i, (policy, planned) in enumerate(plans):
        if i:
            console.print()
        print_plan(console, policy, planned)


@app.command()
def validate(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH",
            help="Policy files, or directories searched for *.yaml / *.yml.",
            exists=True,
        ),
    ],
    output: OutputOption = Output.TEXT,
    show_plan: Annotated[
        bool,
        typer.Option("--plan", help="Also show each valid policy's plan (as `canaryctl plan`)."),
    ] = False,
    rps: RpsOption = None,
    cohort_share: CohortShareOption = None,
    sample_share: SampleShareOption = None,
    prometheus: PrometheusOption = None,
) -> None:
    """Check ModelRollout policies: every problem, with file, line, column and field path.

    Custom queries are checked against CANARY_CUSTOM_QUERIES, as the controller would.
    With --plan, each valid policy's plan follows (--rps, --cohort-share,
    --sample-share, --prometheus as for `canaryctl plan`)."""
    from controller.policy import check_files
    from controller.policy.loader import policy_files
    from controller.settings import load_settings

    files = policy_files(paths)
    settings = load_settings()
    policies, problems = check_files(
        files,
        custom_queries=settings.custom_queries,
        webhook_allow=settings.webhook_allowlist_if_set,
    )
    errors = [p for p in problems if p.severity is Severity.ERROR]
    plans = _plans(policies, rps, cohort_share, prometheus, sample_share) if show_plan else []
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
        if show_plan:
            from controller.cli.plan_view import plan_json

            report["plans"] = [plan_json(p, pl) for p, pl in plans]
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
        if plans:
            console.print()
            _show_plans(plans, output)
    raise typer.Exit(1 if errors or not files else 0)


@app.command()
def run() -> None:
    """Run the controller (configured by CANARY_* variables; see docs/operations.md)."""
    from controller.app import run as run_controller
    from controller.settings import load_settings
    from controller.telemetry import configure_logging

    try:
        settings = load_settings()
        configure_logging(settings)
        run_controller(settings)
    except CanaryError as exc:
        _fail(str(exc))


DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        metavar="URL",
        help="SQLAlchemy URL or SQLite file of the store (default: CANARY_DATABASE_URL).",
    ),
]


def _store(database: str | None, *, writable: bool = False) -> SqlStore:
    """The existing store at `database` (default: CANARY_DATABASE_URL), opened so that
    using it cannot create one (`open_existing_store`); a clear error if there is none."""
    from controller.runtime.oneshot import open_existing_store
    from controller.settings import load_settings

    if database is None:
        database = load_settings().database_url.get_secret_value()
    try:
        return open_existing_store(database, writable=writable)
    except PermanentError as exc:
        _fail(str(exc))


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


@app.command()
def status(
    name: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="namespace/name, or name; all if omitted."),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every 2 s.")] = False,
    database: DatabaseOption = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Phase, step, weights, hold progress and the cohort x metric verdict grid."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    store = _store(database)  # first: a missing store is said before the views load
    from controller.cli.views import resolve, status_json, status_view

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
    name: Annotated[str, typer.Argument(metavar="NAME", help="namespace/name, or name.")],
    database: DatabaseOption = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """The audit timeline: every transition with the evidence behind it, commands, route writes."""
    store = _store(database)
    from controller.cli.views import history_json, history_view, resolve

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


@app.command()
def dashboard(
    database: DatabaseOption = None,
    host: Annotated[
        str,
        typer.Option(
            metavar="ADDRESS", help="Address to listen on (the pages have no authentication)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", min=0, max=65535)] = 8090,
) -> None:
    """Serve the read-only web dashboard: rollouts, timelines, verdicts with evidence, charts."""
    from controller.dashboard import DashboardServer, open_store
    from controller.settings import load_settings

    url = database if database is not None else load_settings().database_url.get_secret_value()
    try:
        opened = open_store(url)
    except CanaryError as exc:
        _fail(str(exc))
    server = DashboardServer(opened, host=host, port=port)
    try:
        server.start()
    except OSError as exc:
        opened.store.close()
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    bound_host, bound_port = server.address
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    # Ctrl-C stops it, as it says, even when it was started with SIGINT ignored (a
    # background job of a non-interactive shell, whose children inherit that).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    console.print(
        f"dashboard of {escape(opened.source)} at http://{shown}:{bound_port}/ (Ctrl-C stops it)"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        opened.store.close()


def _command(
    kind: str,
    name: str,
    reason: str,
    actor: str | None,
    database: str | None,
    *,
    capture: bool = False,
) -> None:
    store = _store(database, writable=True)
    from controller.cli.views import resolve
    from controller.engine.state import CommandKind
    from controller.runtime.manual import submit

    try:
        row = resolve(store, name)
        who = actor or getpass.getuser()
        submit(
            store,
            row.key,
            CommandKind(kind),
            actor=who,
            reason=reason,
            now=datetime.now(UTC),
            args={"capture": True} if capture else None,
        )
    except CanaryError as exc:
        _fail(str(exc))
    finally:
        store.close()
    console.print(
        f"{kind} recorded for {escape(row.key)} by {escape(who)}; "
        "the controller applies it on the rollout's next tick"
    )


NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="namespace/name, or name.")]
ReasonOption = Annotated[
    str, typer.Option("--reason", "-r", metavar="TEXT", help="Why, for the audit.")
]
ActorOption = Annotated[
    str | None,
    typer.Option("--actor", metavar="NAME", help="Who, for the audit (default: your user name)."),
]
ScenarioOption = Annotated[
    Scenario,
    typer.Option(
        "--scenario",
        "-s",
        metavar=f"[{'|'.join(Scenario)}]",
        help="What the simulated candidate does.",
    ),
]


@app.command()
def promote(
    name: NameArgument,
    full: Annotated[bool, typer.Option("--full", help="Straight to 100% and Promoted.")] = False,
    reason: ReasonOption = "",
    actor: ActorOption = None,
    database: DatabaseOption = None,
) -> None:
    """Advance to the next step (past a pause or the manual gate), or with --full to 100%."""
    _command("promote-full" if full else "promote", name, reason, actor, database)


@app.command()
def pause(
    name: NameArgument,
    reason: ReasonOption = "",
    actor: ActorOption = None,
    database: DatabaseOption = None,
) -> None:
    """Hold the rollout where it is until `resume` (a FAIL still rolls back)."""
    _command("pause", name, reason, actor, database)


@app.command()
def resume(
    name: NameArgument,
    reason: ReasonOption = "",
    actor: ActorOption = None,
    database: DatabaseOption = None,
) -> None:
    """Continue a paused rollout."""
    _command("resume", name, reason, actor, database)


@app.command()
def abort(
    name: NameArgument,
    reason: Annotated[str, typer.Option("--reason", "-r", metavar="TEXT", help="Why (required).")],
    actor: ActorOption = None,
    database: DatabaseOption = None,
    capture: Annotated[
        bool,
        typer.Option(
            "--capture",
            help="Record the failing (or suspect) cells as eval cases, with trace IDs.",
        ),
    ] = False,
) -> None:
    """Roll back now: the route goes back to the baseline."""
    _command("abort", name, reason, actor, database, capture=capture)


@app.command()
def demo(
    scenario: ScenarioOption = Scenario.COHORT_REGRESSION,
    database: Annotated[
        Path,
        typer.Option("--database", metavar="PATH", help="SQLite file for the audit (recreated)."),
    ] = Path("canary-demo.db"),
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the traffic simulator.")] = 7,
    output: OutputOption = Output.TEXT,
) -> None:
    """The whole product on embedded defaults: real engine and judge, simulated traffic."""
    from controller.cli.demo_view import run_and_show

    run_and_show(scenario, database, seed, json_output=output is Output.JSON)


@app.command()
def apply(
    file: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="A policy file.", exists=True, dir_okay=False),
    ],
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            metavar="DIR",
            help="Write into this directory source instead of the cluster.",
        ),
    ] = None,
) -> None:
    """Validate a policy, then apply it to the cluster (or to a directory source)."""
    from controller.cli.apply import to_directory
    from controller.policy import load_file
    from controller.settings import load_settings

    try:
        settings = load_settings()
        loaded = load_file(
            file,
            custom_queries=settings.custom_queries,
            webhook_allow=settings.webhook_allowlist_if_set,
        )
        for problem in (w for p in loaded for w in p.warnings):
            err_console.print(f"[yellow]WARN[/yellow] {escape(str(problem))}")
        for policy in loaded:
            if directory is not None:
                target = to_directory(policy.rollout, file, directory)
                console.print(f"{escape(policy.rollout.key)} written to {escape(str(target))}")
            else:
                from controller.runtime.oneshot import apply_to_cluster

                outcome = apply_to_cluster(policy.rollout, settings)
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
        Path,
        typer.Argument(
            metavar="POLICY", help="The policy to rehearse.", exists=True, dir_okay=False
        ),
    ],
    scenario: ScenarioOption = Scenario.HEALTHY,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="Default: CANARY_KUBECONFIG, then KUBECONFIG, ~/.kube/config, in-cluster.",
        ),
    ] = None,
    pace: Annotated[
        float,
        typer.Option(metavar="SECONDS", help="Real seconds between looks (a short hold)."),
    ] = 1.0,
    rps: Annotated[
        float,
        typer.Option(metavar="N", help="Simulated requests per second (use your real traffic)."),
    ] = 60.0,
    database: Annotated[
        Path,
        typer.Option(metavar="PATH", help="SQLite file for the audit (recreated)."),
    ] = Path("canary-rehearsal.db"),
    output: OutputOption = Output.TEXT,
) -> None:
    """Drive the policy's real router on the real route with simulated traffic, then restore it."""
    from controller.cli.demo_view import show_rehearsal
    from controller.policy import load_file
    from controller.runtime.oneshot import cluster_router
    from controller.settings import load_settings

    if scenario is Scenario.GATE_REPLAY:
        _fail(
            "gate-replay shows the demo's gate; rehearse with cohort-regression, healthy or outage",
            2,
        )
    try:
        [loaded] = load_file(policy)
        settings = load_settings(**({"kubeconfig": kubeconfig} if kubeconfig else {}))
        rollout = loaded.rollout
        with cluster_router(rollout, settings) as router:
            show_rehearsal(
                rollout,
                router,
                scenario,
                database,
                pace,
                rps=rps,
                json_output=output is Output.JSON,
            )
    except ValueError:
        _fail(f"{policy} must hold exactly one ModelRollout to rehearse")
    except PolicyError as exc:
        for problem in exc.problems:
            err_console.print(f"[red]ERROR[/red] {escape(str(problem))}")
        raise typer.Exit(1) from exc
    except CanaryError as exc:
        _fail(str(exc))


@app.command()
def backtest(
    policy: Annotated[
        Path | None,
        typer.Argument(
            metavar="POLICY",
            help="The policy to replay (one ModelRollout); or use --rollout.",
            dir_okay=False,
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="TIME",
            help="When the replayed rollout starts: ISO 8601 (UTC if no zone), now, now-2h.",
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", metavar="TIME", help="When the replay stops at the latest."),
    ] = None,
    prometheus: Annotated[
        str | None,
        typer.Option(
            "--prometheus", metavar="URL", help="The Prometheus (default: CANARY_PROMETHEUS_URL)."
        ),
    ] = None,
    rollout: Annotated[
        str | None,
        typer.Option(
            "--rollout",
            metavar="NAME",
            help="Replay a rollout recorded in the store over its own time range.",
        ),
    ] = None,
    other: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            metavar="FILE",
            help="With --rollout: replay with this policy instead of the recorded one.",
            dir_okay=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replay a range longer than 30 days.")
    ] = False,
    database: DatabaseOption = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Would this policy have caught that incident, and when? Replays the real judge and
    engine over recorded Prometheus data, as if the rollout had started at --from.

    At each analysis interval the controller's own queries are evaluated at that past
    instant. The traffic split is whatever the recorded data shows (docs/backtest.md)."""
    from controller.settings import load_settings

    if (policy is None) == (rollout is None):
        _fail("give either a POLICY file or --rollout NAME", 2)
    if other is not None and rollout is None:
        _fail("--policy replaces a recorded rollout's policy: use it with --rollout", 2)
    if policy is not None and (start is None or end is None):
        _fail("a POLICY is replayed over --from TIME --to TIME: give both", 2)
    for path in (policy, other):
        if path is not None and not path.is_file():
            _fail(f"{path}: no such file", 2)
    from controller.cli.times import TimeFormatError, parse_time

    now = datetime.now(UTC)
    try:
        start_at = parse_time(start, now) if start is not None else None
        end_at = parse_time(end, now) if end is not None else None
    except TimeFormatError as exc:
        _fail(f"--from/--to: {exc}", 2)
    from controller.runtime.backtest import check_range

    settings = load_settings()
    try:
        if rollout is not None:
            replayed, start_at, end_at, title = _recorded(
                rollout, other, database, start_at, end_at, now, settings.custom_queries
            )
        else:
            assert policy is not None and start_at is not None and end_at is not None
            replayed, title = _one_rollout(policy, settings.custom_queries), ""
        check_range(start_at, end_at, force=force)
    except PolicyError as exc:
        for problem in exc.errors:
            err_console.print(f"[red]ERROR[/red] {escape(str(problem))}")
        raise typer.Exit(1) from exc
    except CanaryError as exc:
        _fail(str(exc))
    _replay(replayed, start_at, end_at, prometheus or settings.prometheus_url, title, output)


def _one_rollout(path: Path, custom_queries: CustomQueries) -> ModelRollout:
    """The one ModelRollout in `path` (PolicyError if invalid, exit 1 if not one)."""
    from controller.policy import load_file

    loaded = load_file(path, custom_queries=custom_queries)
    if len(loaded) != 1:
        _fail(f"{path} holds {len(loaded)} ModelRollouts; a backtest replays exactly one")
    return loaded[0].rollout


def _recorded(
    name: str,
    other: Path | None,
    database: str | None,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    custom_queries: CustomQueries,
) -> tuple[ModelRollout, datetime, datetime, str]:
    """A recorded rollout's policy (or `other` on its versions) and time range (each
    end replaced by --from / --to when given), and the title of its replay."""
    store = _store(database)
    from controller.cli.views import resolve
    from controller.runtime.backtest import recorded_range, with_recorded_versions

    try:
        row = resolve(store, name)
        recorded = recorded_range(row, store.transitions(row.key), now)
    finally:
        store.close()
    replayed = recorded.rollout
    title = f"{row.key} as recorded ({recorded.phase})"
    if other is not None:
        replayed = with_recorded_versions(_one_rollout(other, custom_queries), recorded.rollout)
        title = f"{row.key} as recorded ({recorded.phase}) with the policy {other}"
    return replayed, start or recorded.start, end or recorded.end, title


def _replay(
    rollout: ModelRollout, start: datetime, end: datetime, url: str, title: str, output: Output
) -> None:
    from controller.cli.backtest_view import print_backtest, run, source_name
    from controller.runtime.oneshot import prometheus_at
    from controller.settings import load_settings

    source = prometheus_at(url, load_settings())
    try:
        result = run(rollout, source, start, end, progress_to=err_console)
    except CanaryError as exc:
        _fail(str(exc))
    finally:
        source.close()
    if output is Output.JSON:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        print_backtest(console, rollout, result, source_name(url), title)


db_app = typer.Typer(
    help="The audit store.", no_args_is_help=True, rich_markup_mode=None, cls=HelpGroup
)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[
        str, typer.Argument(metavar="REVISION", help="Alembic revision to reach.")
    ] = "head",
    database: DatabaseOption = None,
) -> None:
    """Create or migrate the store's tables (--database, or CANARY_DATABASE_URL)."""
    from controller.runtime.oneshot import migrate_store
    from controller.settings import load_settings, redact_url

    if database is None:
        url = load_settings().database_url.get_secret_value()
    else:  # a file that does not exist yet is fine here: upgrading creates it
        url = database if "://" in database else f"sqlite:///{database}"
    try:
        migrate_store(url, revision)
    except CanaryError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    console.print(f"database {escape(redact_url(url))} is at revision {escape(revision)}")


cases_app = typer.Typer(
    help="Eval cases: the failing cells of rollbacks, with trace IDs of bad requests.",
    no_args_is_help=True,
    rich_markup_mode=None,
    cls=HelpGroup,
)
app.add_typer(cases_app, name="cases")


@cases_app.command("list")
def cases_list(
    name: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="namespace/name, or name; all if omitted."),
    ] = None,
    database: DatabaseOption = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """The eval cases recorded, oldest first: cohort, metric, numbers, trace IDs."""
    store = _store(database)
    from controller.cases import export_rows
    from controller.cli.cases_view import cases_table
    from controller.cli.views import resolve

    try:
        cases = store.eval_cases(resolve(store, name).key if name else None)
    except CanaryError as exc:
        _fail(str(exc))
    finally:
        store.close()
    if output is Output.JSON:
        typer.echo(json.dumps(export_rows(cases), indent=2))
    elif not cases:
        console.print("no eval cases recorded" + (f" for {escape(name)}" if name else ""))
    else:
        console.print(cases_table(cases))


@cases_app.command("export")
def cases_export(
    name: NameArgument,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", metavar="[jsonl|csv]", help="One JSON object a line, or CSV."
        ),
    ] = "jsonl",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write here instead of stdout."),
    ] = None,
    database: DatabaseOption = None,
) -> None:
    """A regression-set spec an eval harness can replay: one case per failing cell."""
    from controller.cli.cases_view import CaseFormat, render

    try:
        chosen = CaseFormat(fmt)
    except ValueError:
        _fail(f"--format must be jsonl or csv, not {fmt!r}", code=2)
    store = _store(database)
    from controller.cli.views import resolve

    try:
        text = render(store.eval_cases(resolve(store, name).key), chosen)
    except CanaryError as exc:
        _fail(str(exc))
    finally:
        store.close()
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")


def main() -> None:
    """Entry point of the `canaryctl` console script."""
    app()
