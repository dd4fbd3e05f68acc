"""The Prometheus provider: one instant query per metric (both versions at once).

A built-in template's counters are read for the baseline and the candidate in one
query grouped `by (cohort, version)` (`fetch_versions`, which `metrics.collect`
uses): each version's series are then read exactly as a query of its own would
have been (the same samples, the same `NoSeriesError` or `AmbiguousResultError`
for that version alone), for half the requests. A custom query is sent once per
version (`fetch`): it groups as its author wrote it.

One `urllib3` connection pool per provider, shared by every tick (bearer token
and CA bundle from `Settings`, a timeout on every request, never longer than
what is left of the tick's time for queries, no client-side retries: the
controller looks again at the next interval anyway, and a slow retry loop would
only delay a rollback). It reads nothing from the environment (no proxy, netrc
or CA-bundle variables; the settings are the only reader of the environment).
Not `requests`: its session re-merges settings, cookies, hooks and headers on
every call, which cost as much CPU per query as the pool's own work did (0.58
against 0.24-0.31 ms per query of a 1 kB query, measured against the scale
benchmark's stand-in; a tick sends eight). Each query is a POST with the PromQL in a form body, as
Prometheus' API allows: the long queries of the templates are never URL-encoded
into a query string nor limited by a URL's length; the body is encoded by one
`str.translate` (`form_body`), not a Python loop per character. HTTP answers are
turned into typed errors from the status code and Prometheus' own `errorType`,
never by parsing messages:

    connection refused, timeout, 429, 5xx   MetricsUnreachableError (transient)
    400 bad_data, 422 execution             BadQueryError (permanent)
    401, 403, 404, TLS failure              PermanentError
    an empty result                         NoSeriesError (no data)
    two series for one cohort               AmbiguousResultError

Built-in templates count exactly from the start of the analysis
(`promql.counter_increase`), every series part (events and trials; buckets,
count and sum) in one query `by (cohort)`. Custom queries are rendered with
escaped placeholders; for them `{{window}}` is the time since the analysis
started (gauges: the policy's `analysis.window`), so `increase(x[{{window}}])`
counts from the start, with Prometheus' own extrapolation.

Tenants. Every query is sent with the controller's credentials, so with
`custom_queries` `scoped` (the default) or `deny`, every selector of every query
gets `tenant_label="<the rollout's namespace>"` added (`policy.queries.scope`),
built-in templates included: a policy names its own `model`, which could be
another team's. `deny` also refuses custom queries outright; `allow` sends
queries as written.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import urllib3
from pydantic import SecretStr
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import SSLError as Urllib3SSLError

from controller.analysis import Gauge, Histogram, Proportion, Sample, VersionData
from controller.errors import CanaryError, PermanentError
from controller.metrics import promql
from controller.metrics.base import (
    AmbiguousResultError,
    BadQueryError,
    MetricsUnreachableError,
    NoSeriesError,
    QueryContext,
)
from controller.metrics.exemplars import (
    TRACE_LABELS,
    TraceIds,
    TraceQuery,
    exemplar_selector,
    is_bad,
    no_series_reason,
)
from controller.metrics.templates import (
    QUERIES,
    Reading,
    TemplateQuery,
    histogram_series,
    sample_counter,
)
from controller.policy import MetricKind, MetricSpec
from controller.policy.queries import CustomQueries, QueryError, scope
from controller.settings import Settings, redact_url

COHORT = "cohort"
VERSION = "version"
#: a query is not sent with less time than this left in its tick: it could not answer
MIN_QUERY_SECONDS = 0.05
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: template selectors kept per provider (model, version, namespace and template):
#: 2,000 rollouts with 4 templates and 2 versions each need 16,000
SELECTOR_CACHE = 65_536

#: `on_query(seconds, error)`: one query's latency and its error's class name, if any
QueryObserver = Callable[[float, str | None], None]


def _ignore_query(seconds: float, error: str | None) -> None:
    return None


class _Query:
    """A rendered query and how to read its result."""

    def __init__(self, text: str, reading: Reading) -> None:
        self.text = text
        self.reading = reading


class PrometheusProvider:
    """A `MetricProvider` that asks a Prometheus server (HTTP API v1)."""

    def __init__(
        self,
        url: str,
        *,
        token: SecretStr | None = None,
        ca_file: Path | None = None,
        timeout_seconds: float = 10.0,
        step_seconds: float = 15.0,
        lookback_seconds: float = 600.0,
        on_query: QueryObserver | None = None,
        custom_queries: CustomQueries = CustomQueries.SCOPED,
        tenant_label: str = "namespace",
    ) -> None:
        """`step_seconds` is the resolution of exact counts: a counter restart loses
        at most the increments of the step it happened in, so keep it at about the
        scrape interval. `lookback_seconds` is the longest scrape gap bridged.
        `on_query(seconds, error)` is told of every query: its latency and, if it
        failed, the class name of the error raised (for the controller's own metrics).
        `custom_queries` and `tenant_label`: see the module doc."""
        if step_seconds <= 0 or lookback_seconds < step_seconds:
            raise ValueError("need 0 < step_seconds <= lookback_seconds")
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.step_seconds = step_seconds
        self.lookback_seconds = lookback_seconds
        self._on_query = on_query or _ignore_query
        self.custom_queries = custom_queries
        self.tenant_label = tenant_label
        self._headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        # As many pooled connections as the controller has tick threads (10), kept alive;
        # the CA bundle `requests` trusts by default unless the settings name one.
        self._pool = urllib3.PoolManager(
            num_pools=1,
            maxsize=16,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(ca_file) if ca_file is not None else DEFAULT_CA_BUNDLE_PATH,
        )
        # Requests go to the one host's connection pool: `PoolManager.request` would
        # parse the URL and look the pool up again at every query.
        self._http = self._pool.connection_from_url(self.url)
        base_path = urllib3.util.parse_url(self.url).path or ""
        self._query_path = f"{base_path}/api/v1/query"
        self._exemplars_path = f"{base_path}/api/v1/query_exemplars"
        self._selectors: dict[
            tuple[str, str, tuple[str, ...], bool, str, tuple[str, ...]], tuple[str, ...]
        ] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, *, on_query: QueryObserver | None = None, **options: float
    ) -> PrometheusProvider:
        return cls(
            settings.prometheus_url,
            token=settings.prometheus_token,
            ca_file=settings.prometheus_ca_file,
            timeout_seconds=settings.prometheus_timeout_seconds,
            on_query=on_query,
            custom_queries=settings.custom_queries,
            tenant_label=settings.tenant_label,
            **options,
        )

    def close(self) -> None:
        self._pool.clear()

    def __repr__(self) -> str:
        return f"PrometheusProvider({redact_url(self.url)!r})"

    # --- the MetricProvider protocol ---

    def fetch(self, metric: MetricSpec, version: str, context: QueryContext) -> VersionData:
        query = self.query_for(metric, version, context)
        result = self._run(query.text, context)
        return _read(result, query, metric)

    def fetch_versions(
        self, metric: MetricSpec, versions: Sequence[str], context: QueryContext
    ) -> dict[str, VersionData | CanaryError] | None:
        """A built-in template's data for every one of `versions` from one query, grouped
        by version as well as by cohort: half the requests of `fetch` per look (each
        version's series are read as `fetch` reads its own, so each gets the same data,
        or the same error, as from a query of its own; a failure of the query itself is
        every version's). None for a custom query: its text groups as its author wrote
        it, so it is sent once per version (`fetch`)."""
        if metric.template is None:
            return None
        values: dict[str, promql.Value] = {
            "model": context.model,
            "version": promql.OneOf(tuple(dict.fromkeys(versions))),
            "namespace": context.namespace,
            "cohort": promql.OneOf(context.cohorts),
        }
        try:
            query = self._template_query(metric.template, values, context, by_version=True)
            result = self._run(query.text, context)
        except CanaryError as exc:
            return dict.fromkeys(versions, exc)
        found: dict[str, list[dict[str, Any]]] = {v: [] for v in versions}
        for series in result:
            mine = found.get(series.get("metric", {}).get(VERSION))
            if mine is not None:  # (the regex matcher matches these versions only)
                mine.append(series)
        out: dict[str, VersionData | CanaryError] = {}
        for version, series_ in found.items():
            try:
                out[version] = _read(series_, query, metric)
            except CanaryError as exc:
                out[version] = exc
        return out

    def query_for(self, metric: MetricSpec, version: str, context: QueryContext) -> _Query:
        """The PromQL `fetch` sends for `metric` and `version` (for evidence and replay),
        scoped to the rollout's namespace unless custom queries are `allow`ed."""
        if metric.template is None and self.custom_queries is CustomQueries.DENY:
            raise BadQueryError(
                f"custom queries are turned off on this controller (custom_queries=deny); "
                f"{metric.metric_name} is not run"
            )
        query = self._query(metric, version, context)
        if metric.template is not None:
            return query  # its selectors are scoped (`_template_query`)
        return _Query(self._scoped(query.text, context), query.reading)

    def _scoped(self, text: str, context: QueryContext) -> str:
        if self.custom_queries is CustomQueries.ALLOW:
            return text
        try:
            return scope(text, self.tenant_label, context.namespace)
        except QueryError as exc:
            raise BadQueryError(str(exc), query=text) from exc

    def _query(self, metric: MetricSpec, version: str, context: QueryContext) -> _Query:
        values: dict[str, promql.Value] = {
            "model": context.model,
            "version": version,
            "namespace": context.namespace,
            "cohort": promql.OneOf(context.cohorts),
        }
        if metric.template is not None:
            return self._template_query(metric.template, values, context)
        assert metric.query is not None and metric.kind is not None
        if metric.kind is MetricKind.GAUGE:
            values["window"] = promql.Duration(context.window.total_seconds())
            return _Query(promql.render(metric.query, values), Reading.GAUGE)
        # The query is evaluated at the aligned end (see `_run`), so the window is
        # the aligned span: `x - x offset {{window}}` then reads exactly the start.
        window = self._window(context)
        values["window"] = promql.Duration(max(window.end - window.start, self.step_seconds))
        if metric.kind is MetricKind.PROPORTION:
            assert metric.trials is not None
            parts = {
                "events": promql.render(metric.query, values),
                "trials": promql.render(metric.trials, values),
            }
            return _Query(promql.tagged(parts), Reading.PROPORTION)
        return _Query(promql.render(metric.query, values), Reading.HISTOGRAM)

    def _window(self, context: QueryContext) -> promql.CountWindow:
        return promql.CountWindow.aligned(
            context.start.timestamp(),
            context.end.timestamp(),
            self.step_seconds,
            self.lookback_seconds,
        )

    def _template_selectors(
        self,
        name: str,
        template: TemplateQuery,
        values: Mapping[str, promql.Value],
        context: QueryContext,
        *,
        by_version: bool = False,
    ) -> tuple[str, ...]:
        """The template's counter selectors for this model, version and namespace,
        rendered and scoped. The rest of the query is the controller's own text:
        scoping each selector scopes the query. A selector is the same at every look,
        so each is made once per provider (`policy.queries.scope`'s own cache holds
        4,096 queries: at 2,000 rollouts, ten selectors each, it never hit, and every
        look parsed eight queries again)."""
        version = values["version"]
        versions = version.values if isinstance(version, promql.OneOf) else (str(version),)
        key = (name, context.model, versions, by_version, context.namespace, context.cohorts)
        found = self._selectors.get(key)
        if found is None:
            if len(self._selectors) >= SELECTOR_CACHE:
                self._selectors.clear()  # rollouts come and go: start again, rarely
            counters = template.versions_counters if by_version else template.counters
            found = tuple(self._scoped(promql.render(s, values), context) for s in counters)
            self._selectors[key] = found
        return found

    def _template_query(
        self,
        name: str,
        values: Mapping[str, promql.Value],
        context: QueryContext,
        *,
        by_version: bool = False,
    ) -> _Query:
        """The template's query for one version, or with `by_version` for the versions
        `values["version"]` holds (`promql.OneOf`), grouped by version too."""
        template = QUERIES.get(name)
        if template is None:
            raise BadQueryError(f"no PromQL for the template {name!r}")
        window = self._window(context)
        selectors = self._template_selectors(name, template, values, context, by_version=by_version)
        by: tuple[str, ...] = (COHORT, VERSION) if by_version else (COHORT,)
        if template.reading is Reading.HISTOGRAM:
            bucket, count, total = histogram_series(selectors[0])
            parts = {
                "bucket": promql.counter_increase(bucket, (*by, "le"), window),
                "count": promql.counter_increase(count, by, window),
                "sum": promql.counter_increase(total, by, window),
            }
        else:
            names = (
                ("events", "trials") if template.reading is Reading.PROPORTION else ("num", "den")
            )
            parts = {
                part: promql.counter_increase(selector, by, window)
                for part, selector in zip(names, selectors, strict=True)
            }
        return _Query(promql.tagged(parts), template.reading)

    def request_rates(
        self, model: str, version: str, namespace: str, *, over: timedelta, at: datetime
    ) -> dict[str, float]:
        """Requests per second of `version` by cohort label value, averaged over `over`
        before `at` (series without a cohort label under ""), scoped to `namespace` as
        the template queries are. What `canaryctl plan --prometheus` plans with."""
        increases = self.counter_increases(
            "llm_requests_total", model, version, namespace, over=over, at=at
        )
        seconds = over.total_seconds()
        return {cohort: v / seconds for cohort, v in increases.items()}

    def sample_shares(
        self,
        metrics: Sequence[MetricSpec],
        model: str,
        version: str,
        namespace: str,
        *,
        over: timedelta,
        at: datetime,
    ) -> dict[str, float]:
        """Per metric whose template counts its samples (a histogram's `_count`), the
        samples per request of `version` over `over` before `at`, every cohort together,
        scoped like the templates. Metrics with no such count, or no samples, are left
        out (one sample per request is assumed for them)."""
        requests_ = self.counter_increases(
            "llm_requests_total", model, version, namespace, over=over, at=at
        )
        total = sum(requests_.values())
        out: dict[str, float] = {}
        if total <= 0:
            return out
        for metric in metrics:
            counter = sample_counter(metric.template)
            if counter is None:
                continue
            counted = self.counter_increases(counter, model, version, namespace, over=over, at=at)
            samples = sum(counted.values())
            if samples > 0:
                out[metric.metric_name] = min(samples / total, 1.0)
        return out

    def counter_increases(
        self,
        counter: str,
        model: str,
        version: str,
        namespace: str,
        *,
        over: timedelta,
        at: datetime,
    ) -> dict[str, float]:
        """`counter`'s increase for `version` by cohort label value over `over` before `at`
        (series without a cohort label under ""), scoped to `namespace` as the template
        queries are. `request_rates`, and the planner's sample shares (a histogram's
        `_count` over the requests), read it."""
        selector = promql.label_selector(counter, {"model": model, "version": version})
        context = QueryContext(model=model, namespace=namespace, start=at - over, end=at)
        span = promql.Duration(over.total_seconds()).render()
        query = f"sum by ({COHORT}) (increase({self._scoped(selector, context)}[{span}]))"
        result = self._run(query, context, exact_end=True)
        values = _series_values(result, _Query(query, Reading.GAUGE))
        return {cohort or "": max(v, 0.0) for (cohort, _, _), v in values.items()}

    # --- the TraceSource protocol ---

    def trace_ids(self, query: TraceQuery) -> TraceIds:
        """Trace IDs of `query`'s bad requests from `/api/v1/query_exemplars`, newest first.

        The selector is escaped like every query (`exemplars.exemplar_selector`) and
        scoped to the rollout's namespace as the metric's own queries are. A server
        whose exemplar storage is off answers with no exemplars: the reason says so."""
        selector = exemplar_selector(query)
        if selector is None:
            return TraceIds((), reason=no_series_reason(query.metric))
        context = query.context
        if query.metric.template is None and self.custom_queries is CustomQueries.DENY:
            raise BadQueryError("custom queries are turned off on this controller")
        text = self._scoped(selector.text, context)
        timeout = context.time_left(self.timeout_seconds)
        if timeout < MIN_QUERY_SECONDS:
            raise MetricsUnreachableError("no time left for the exemplar query", query=text)
        params = {
            "query": text,
            "start": f"{context.start.timestamp():.3f}",
            "end": f"{context.end.timestamp():.3f}",
        }
        started = time.perf_counter()
        error: str | None = None
        try:
            body = self._post(self._exemplars_path, params, timeout)
        except _HttpError as exc:
            error = type(exc).__name__
            raise exc.typed(text) from exc
        except Urllib3SSLError as exc:
            error = type(exc).__name__
            raise PermanentError(f"TLS to Prometheus failed: {exc}") from exc
        except (Urllib3Error, ValueError) as exc:
            error = type(exc).__name__
            raise MetricsUnreachableError(
                f"Prometheus at {redact_url(self.url)} did not answer the exemplar query: "
                f"{_transport_failure(exc)}",
                query=text,
            ) from exc
        finally:
            self._on_query(time.perf_counter() - started, error)
        return _trace_ids(body, query, text, by_value=selector.by_value)

    # --- HTTP ---

    def _run(
        self, query: str, context: QueryContext, *, exact_end: bool = False
    ) -> list[dict[str, Any]]:
        start = time.perf_counter()
        error: str | None = None
        try:
            return self._ask(query, context, exact_end=exact_end)
        except Exception as exc:
            error = type(exc).__name__
            raise
        finally:
            self._on_query(time.perf_counter() - start, error)

    def _ask(
        self, query: str, context: QueryContext, *, exact_end: bool = False
    ) -> list[dict[str, Any]]:
        """Evaluated at the aligned end of the count (or at `context.end` itself)."""
        evaluation_time = context.end.timestamp() if exact_end else self._window(context).end
        timeout = context.time_left(self.timeout_seconds)
        if timeout < MIN_QUERY_SECONDS:
            raise MetricsUnreachableError(
                "no time left in this tick for another query to Prometheus", query=query
            )
        form = {"query": query, "time": f"{evaluation_time:.3f}", "timeout": _duration(timeout)}
        try:
            result = self._post(self._query_path, form, timeout)["data"]["result"]
        except _HttpError as exc:
            raise exc.typed(query) from exc
        except Urllib3SSLError as exc:
            raise PermanentError(f"TLS to Prometheus failed: {exc}") from exc
        except Urllib3Error as exc:
            raise MetricsUnreachableError(
                f"Prometheus at {redact_url(self.url)} is unreachable: {_transport_failure(exc)}",
                query=query,
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise MetricsUnreachableError(
                f"Prometheus at {redact_url(self.url)} gave an unreadable answer: {exc}",
                query=query,
            ) from exc
        if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
            raise BadQueryError("the query must return an instant vector", query=query)
        return cast(list[dict[str, Any]], result)

    def _post(self, path: str, form: Mapping[str, str], timeout: float) -> Any:
        """The decoded JSON of a 200 answer to a form POST to `path` on the server;
        `_HttpError` for any other status (typed where the query is known), urllib3's
        errors for the transport."""
        response = self._http.urlopen(
            "POST",
            path,
            body=form_body(form),
            headers=self._headers,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,
            redirect=False,
        )
        status = response.status
        if status != 200:
            raise _http_error(status, response.data, response.headers.get("Retry-After"))
        return json.loads(response.data)


def _transport_failure(exc: Exception) -> str:
    """What went wrong on the way to Prometheus, in words an on-call engineer reads
    (the client library's class names say it only to those who know the library)."""
    if isinstance(exc, NewConnectionError):  # (a subclass of ConnectTimeoutError)
        return "could not connect"
    if isinstance(exc, ConnectTimeoutError):
        return "no connection within the timeout"
    if isinstance(exc, ReadTimeoutError):
        return "no answer within the timeout"
    if isinstance(exc, ProtocolError):
        return "the connection broke"
    return type(exc).__name__


def _http_error(status: int, data: bytes, retry_after: str | None) -> _HttpError:
    """A non-200 answer, with Prometheus' own `errorType` and `error` if it sent them."""
    try:
        body = json.loads(data)
        detail = f"{body.get('errorType', '')}: {body.get('error', '')}".strip(": ")
    except (ValueError, AttributeError):
        detail = data[:300].decode("utf-8", "replace")
    return _HttpError(status, f"Prometheus answered {status}: {detail}", _seconds(retry_after))


class _HttpError(Exception):
    """A non-200 answer, raised from the response hook and typed where the query is known."""

    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    def typed(self, query: str) -> Exception:
        if self.status in _TRANSIENT_STATUS:
            return MetricsUnreachableError(self.message, query=query, retry_after=self.retry_after)
        if self.status in (400, 422):
            return BadQueryError(self.message, query=query)
        return PermanentError(self.message)


def _duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds as `4s`, anything else in milliseconds."""
    return f"{seconds:g}s" if seconds == int(seconds) else f"{round(seconds * 1000)}ms"


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


#: `application/x-www-form-urlencoded` as `urllib.parse.urlencode` writes it (the
#: characters it leaves alone, a space as `+`, every other UTF-8 byte as `%XX`), as
#: one translation of the UTF-8 bytes read as Latin-1
_FORM = {
    byte: chr(byte)
    if chr(byte).isascii() and (chr(byte).isalnum() or chr(byte) in "_.-~")
    else "+"
    if byte == 0x20
    else f"%{byte:02X}"
    for byte in range(256)
}


def form_body(fields: Mapping[str, str]) -> str:
    """The form body of `fields`, exactly what `urllib.parse.urlencode` makes of it."""
    return "&".join(f"{_encode(name)}={_encode(value)}" for name, value in fields.items())


def _encode(text: str) -> str:
    return text.encode("utf-8").decode("latin-1").translate(_FORM)


# --- reading results --------------------------------------------------------------

_Key = tuple[str | None, str, str]  # (cohort or None, part, le)


def _series_values(result: Sequence[Mapping[str, Any]], query: _Query) -> dict[_Key, float]:
    """{(cohort, part, le): value} with duplicates refused and NaN series dropped."""
    values: dict[_Key, float] = {}
    for series in result:
        labels = series.get("metric", {})
        raw = series.get("value", [None, "NaN"])[1]
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise BadQueryError(f"not a number: {raw!r}", query=query.text) from None
        if math.isnan(value):
            continue
        key: _Key = (labels.get(COHORT), labels.get(promql.PART_LABEL, ""), labels.get("le", ""))
        if key in values:
            shown = {k: v for k, v in labels.items() if k != promql.PART_LABEL}
            raise AmbiguousResultError(
                f"two series for cohort {key[0]!r}{' ' + key[1] if key[1] else ''}; "
                f"group the query by cohort only (one of them: {shown})",
                query=query.text,
            )
        values[key] = value
    if not values:
        raise NoSeriesError("the query returned no series", query=query.text)
    return values


def _read(result: Sequence[Mapping[str, Any]], query: _Query, metric: MetricSpec) -> VersionData:
    values = _series_values(result, query)
    cohorts = sorted({k[0] for k in values}, key=lambda c: (c is None, c or ""))
    samples: dict[str | None, Sample] = {}
    for cohort in cohorts:
        mine = {(part, le): v for (c, part, le), v in values.items() if c == cohort}
        try:
            sample = _sample(mine, query, metric)
        except ValueError as exc:
            raise AmbiguousResultError(f"cohort {cohort!r}: {exc}", query=query.text) from exc
        if sample is not None:
            samples[cohort] = sample
    total = samples.pop(None, None)
    if total is not None and samples:
        raise AmbiguousResultError(
            "some series have a cohort label and some do not", query=query.text
        )
    by_cohort = {str(c): s for c, s in samples.items()}
    return VersionData(by_cohort=by_cohort, total=total, query=query.text)


def _sample(
    parts: Mapping[tuple[str, str], float], query: _Query, metric: MetricSpec
) -> Sample | None:
    if query.reading is Reading.PROPORTION:
        events = max(parts.get(("events", ""), 0.0), 0.0)
        if ("trials", "") not in parts:
            raise ValueError("events without trials")
        trials = max(parts[("trials", "")], 0.0)
        # Extrapolating custom queries can put events a hair above trials.
        return Proportion(min(events, trials), trials)
    if query.reading is Reading.HISTOGRAM:
        buckets = {float(le): v for (part, le), v in parts.items() if le and part in ("bucket", "")}
        if not buckets:
            raise ValueError("no `le` buckets in the result")
        count = parts.get(("count", ""))
        return Histogram.from_buckets(buckets, total=count, sum=parts.get(("sum", "")))
    if ("num", "") in parts or ("den", "") in parts:
        den = parts.get(("den", ""), 0.0)
        if den <= 0:
            return None
        return Gauge(parts.get(("num", ""), 0.0) / den, den)
    value = parts.get(("", ""))
    return Gauge(value) if value is not None and math.isfinite(value) else None


def _trace_ids(body: Any, query: TraceQuery, text: str, *, by_value: bool) -> TraceIds:
    """The trace IDs in a `query_exemplars` answer, newest first, distinct, at most
    `query.limit`; histograms keep only the exemplars whose value is a bad request."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise MetricsUnreachableError("the exemplar answer has no data", query=text)
    found: list[tuple[float, str]] = []
    exemplars = traced = 0
    for series in data:
        for exemplar in (series.get("exemplars") or []) if isinstance(series, dict) else []:
            exemplars += 1
            labels = exemplar.get("labels") or {}
            trace = next((str(labels[k]) for k in TRACE_LABELS if labels.get(k)), None)
            if trace is None:
                continue
            traced += 1
            try:
                value = float(exemplar.get("value"))
                at = float(exemplar.get("timestamp"))
            except (TypeError, ValueError):
                continue
            if by_value and not is_bad(value, query):
                continue
            found.append((at, trace))
    found.sort(reverse=True)
    traces = tuple(dict.fromkeys(t for _, t in found))[: query.limit]
    if traces:
        return TraceIds(traces, query=text)
    if exemplars == 0:
        reason = (
            "Prometheus has no exemplars for these series in the window: the model server "
            "must attach exemplars with a trace_id to its bad-outcome counters and expose "
            "OpenMetrics, and Prometheus must run with --enable-feature=exemplar-storage"
        )
    elif traced == 0:
        reason = f"the exemplars carry no trace ID label ({', '.join(TRACE_LABELS)})"
    else:
        reason = "no exemplar in the window is worse than the baseline's value"
    return TraceIds((), query=text, reason=reason)
