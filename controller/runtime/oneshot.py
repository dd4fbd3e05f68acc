"""What canaryctl's one-shot commands need from the adapters, wired here so that the
CLI stays thin (it imports no adapter's internals; see docs/design.md):

- `apply_to_cluster`: a validated ModelRollout created, or its spec updated, through
  the Kubernetes layer's one error mapping;
- `cluster_router`: the policy's real router on the real route (`canaryctl rehearse`);
- `prometheus_at`: the Prometheus provider a controller with these settings would use;
- `open_existing_store`, `migrate_store`: the audit store the read commands show, and
  its tables made or migrated (`canaryctl db upgrade`).

Each function imports the adapter it needs itself, as the CLI's commands do:
`canaryctl status` must not pay for the kubernetes client, nor `apply` for SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from controller.errors import PermanentError, TransientError
from controller.policy import ModelRollout
from controller.settings import Settings, redact_url

if TYPE_CHECKING:
    from controller.kube.cluster import Cluster
    from controller.metrics.prometheus import PrometheusProvider
    from controller.routing.base import TrafficRouter
    from controller.store.sql import SqlStore

__all__ = [
    "SqlStore",
    "apply_rollout",
    "apply_to_cluster",
    "cluster_router",
    "migrate_store",
    "open_existing_store",
    "prometheus_at",
]


def apply_to_cluster(rollout: ModelRollout, settings: Settings) -> str:
    """Create the ModelRollout, or give an existing one the policy's spec, labels and
    annotations (a merge patch: re-applying the same file changes nothing); returns
    "created" or "configured". One try per request: a person is waiting."""
    from controller.kube.client import kube_client
    from controller.kube.cluster import Cluster, RetryPolicy

    api = kube_client(settings)
    try:
        return apply_rollout(rollout, Cluster(api, retry=RetryPolicy(attempts=1)))
    finally:
        api.close()  # type: ignore[no-untyped-call]  # the client has no annotations


def apply_rollout(rollout: ModelRollout, cluster: Cluster) -> str:
    """`apply_to_cluster` on a given cluster seam."""
    from controller.runtime.kube_source import MODEL_ROLLOUTS

    body = rollout.model_dump(mode="json", exclude_none=True)
    meta = rollout.metadata
    body["metadata"] = {
        "name": meta.name,
        "namespace": meta.namespace,
        "labels": dict(meta.labels),
        "annotations": dict(meta.annotations),
    }
    try:
        if cluster.create_new(MODEL_ROLLOUTS, meta.namespace, body):
            return "created"
    except (PermanentError, TransientError) as exc:
        raise _error(exc, "create") from exc
    patch = {
        "metadata": {
            "labels": body["metadata"]["labels"],
            "annotations": body["metadata"]["annotations"],
        },
        "spec": body["spec"],
    }
    try:
        patched = cluster.update(MODEL_ROLLOUTS, meta.namespace, meta.name, patch)
    except (PermanentError, TransientError) as exc:
        raise _error(exc, "patch") from exc
    if patched is None:
        raise TransientError(f"patch {MODEL_ROLLOUTS.resource}: {rollout.key} was just deleted")
    return "configured"


def _error(exc: PermanentError | TransientError, verb: str) -> Exception:
    from controller.kube.errors import ApiUnavailableError, ForbiddenError
    from controller.runtime.kube_source import MODEL_ROLLOUTS

    where = f"{verb} {MODEL_ROLLOUTS.resource}"
    status = getattr(exc, "status", None)
    if status == 404:
        return PermanentError(f"{where}: the ModelRollout CRD is not installed (install the chart)")
    if isinstance(exc, ForbiddenError):
        return PermanentError(f"{where}: forbidden by RBAC")
    if isinstance(exc, PermanentError):
        return PermanentError(f"{where}: the API server rejected it: {exc}")
    if isinstance(exc, ApiUnavailableError) and status is not None:
        return TransientError(f"{where}: the API server answered {status}: {exc}")
    return TransientError(f"{where}: {exc}")


@contextmanager
def cluster_router(rollout: ModelRollout, settings: Settings) -> Iterator[TrafficRouter]:
    """The router the controller would use for `rollout`, on the cluster of `settings`."""
    from controller.kube.client import kube_client
    from controller.kube.cluster import Cluster
    from controller.routing.registry import router_for

    api = kube_client(settings)
    try:
        yield router_for(rollout, Cluster(api))
    finally:
        api.close()  # type: ignore[no-untyped-call]  # the client has no annotations


def prometheus_at(url: str, settings: Settings) -> PrometheusProvider:
    """The Prometheus provider a controller with `settings` would use, at `url`."""
    from controller.metrics.prometheus import PrometheusProvider

    return PrometheusProvider(
        url,
        token=settings.prometheus_token,
        ca_file=settings.prometheus_ca_file,
        timeout_seconds=settings.prometheus_timeout_seconds,
        custom_queries=settings.custom_queries,
        tenant_label=settings.tenant_label,
    )


def migrate_store(url: str, revision: str = "head") -> None:
    """Create or migrate the store's tables at `url` to `revision` (Alembic)."""
    from controller.store.sql import migrate

    migrate(url, revision)


def open_existing_store(database: str, *, writable: bool = False) -> SqlStore:
    """The existing store at `database` (a SQLAlchemy URL or a SQLite file), opened so
    that using it cannot create one.

    A SQLite file is opened read-only (`writable` only for the manual commands,
    which add a row but still never create the file); a missing file, an
    in-memory database, a database that does not exist or has no tables is
    refused (`PermanentError`) with how to make one, and nothing is created or changed.
    """
    from sqlalchemy import inspect, make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from controller.store.sql import SqlStore

    url = database if "://" in database else f"sqlite:///{database}"
    shown = redact_url(url)
    upgrade = f"`CANARY_DATABASE_URL={shown} canaryctl db upgrade`"
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise PermanentError(f"{shown} is not a database URL or a SQLite file: {exc}") from exc
    sqlite = parsed.get_backend_name() == "sqlite"
    make = (
        f"run `canaryctl demo` for a demo store, or create an empty one with {upgrade}"
        if sqlite
        else f"create its tables with {upgrade}"
    )
    if sqlite:
        if parsed.database in (None, "", ":memory:"):
            raise PermanentError(f"{shown} is an in-memory database, which holds no store")
        path = Path(parsed.database)
        if not path.is_file():
            raise PermanentError(f"no store at {path}: {make}")
        # SQLite creates a missing file on connect; a `file:` URI with a mode never does
        mode = "rw" if writable else "ro"
        uri = f"file:{quote(str(path.resolve()))}"
        read_only = parsed.set(database=uri, query={**parsed.query, "mode": mode, "uri": "true"})
        url = read_only.render_as_string(hide_password=False)
    store = SqlStore(url)
    try:
        with store.engine.connect() as connection:
            has_tables = inspect(connection).has_table("rollouts")
    except SQLAlchemyError as exc:
        store.close()
        reason = str(getattr(exc, "orig", None) or exc).strip()
        if "does not exist" in reason:  # Postgres: a database that was never created
            reason += f"; create the database, then {make}"
        raise PermanentError(f"cannot open the store at {shown}: {reason}") from exc
    if not has_tables:
        store.close()
        raise PermanentError(f"{shown} is not a canary-controller store (it has no tables): {make}")
    return store
