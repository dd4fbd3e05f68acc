"""The PromQL behind every built-in metric template, over the LLM metric contract.

The contract (docs/policy.md, "The metric contract") a model server exports:

    llm_requests_total{model, version, cohort, outcome}
    llm_refusals_total{model, version, cohort}
    llm_quality_score            histogram, 0..1
    llm_request_duration_seconds histogram
    llm_time_to_first_token_seconds histogram
    llm_tokens_total{model, version, cohort, direction}
    llm_feedback_total{model, version, cohort, kind}  regenerate, thumbs_down, thumbs_up,
                                                      abandon, escalate

Each template is a set of counters read per version and grouped `by (cohort)`,
so one query answers for every cohort at once, and the overall value is their
sum. Counts are exact increases since the analysis started
(`promql.counter_increase`). Selectors are written with the same placeholders
as custom queries and rendered through `promql.render`, so their values are
escaped the same way.

`QUERIES` must cover every name in `controller.policy.TEMPLATES`; a test checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from controller.policy.templates import FEEDBACK_TEMPLATES


class Reading(StrEnum):
    """How a template's counters become a sample."""

    PROPORTION = "proportion"  # events / trials
    HISTOGRAM = "histogram"  # buckets, count, sum
    RATIO_GAUGE = "ratio-gauge"  # numerator / denominator, with the denominator as samples
    GAUGE = "gauge"  # a custom query's value as it is


_ONE_VERSION = 'version="{{version}}"'
_ANY_VERSION = 'version=~"{{version}}"'
_VERSION = f'model="{{{{model}}}}",{_ONE_VERSION}'


@dataclass(frozen=True)
class TemplateQuery:
    """The counters one template reads (selectors with placeholders)."""

    reading: Reading
    #: PROPORTION: events, trials; HISTOGRAM: the metric family; RATIO_GAUGE: num, den
    counters: tuple[str, ...]

    @property
    def versions_counters(self) -> tuple[str, ...]:
        """The same counters for any of several versions: `{{version}}` in a regex
        matcher, for a query grouped by version that measures them all at once."""
        return tuple(c.replace(_ONE_VERSION, _ANY_VERSION) for c in self.counters)


def _histogram(family: str) -> TemplateQuery:
    return TemplateQuery(Reading.HISTOGRAM, (f"{family}{{{_VERSION}}}",))


QUERIES: dict[str, TemplateQuery] = {
    "refusal-rate": TemplateQuery(
        Reading.PROPORTION,
        (f"llm_refusals_total{{{_VERSION}}}", f"llm_requests_total{{{_VERSION}}}"),
    ),
    "error-rate": TemplateQuery(
        Reading.PROPORTION,
        (
            f'llm_requests_total{{{_VERSION},outcome="error"}}',
            f"llm_requests_total{{{_VERSION}}}",
        ),
    ),
    **{
        name: TemplateQuery(
            Reading.PROPORTION,
            (
                f'llm_feedback_total{{{_VERSION},kind="{kind}"}}',
                f"llm_requests_total{{{_VERSION}}}",
            ),
        )
        for name, (kind, _) in FEEDBACK_TEMPLATES.items()
    },
    "quality-score": _histogram("llm_quality_score"),
    "latency-p95": _histogram("llm_request_duration_seconds"),
    "latency-p99": _histogram("llm_request_duration_seconds"),
    "ttft-p95": _histogram("llm_time_to_first_token_seconds"),
    "ttft-p99": _histogram("llm_time_to_first_token_seconds"),
    "tokens-per-request": TemplateQuery(
        Reading.RATIO_GAUGE,
        (
            f'llm_tokens_total{{{_VERSION},direction="output"}}',
            f"llm_requests_total{{{_VERSION}}}",
        ),
    ),
}


def histogram_series(selector: str) -> tuple[str, str, str]:
    """The `_bucket`, `_count` and `_sum` selectors of a histogram family selector."""
    name, _, matchers = selector.partition("{")
    return (f"{name}_bucket{{{matchers}", f"{name}_count{{{matchers}", f"{name}_sum{{{matchers}")


def sample_counter(template: str | None) -> str | None:
    """The counter of a template's samples when they are not one per request: a
    histogram's `_count` (a judge may score a share of the requests); None otherwise."""
    query = QUERIES.get(template or "")
    if query is None or query.reading is not Reading.HISTOGRAM:
        return None
    name = query.counters[0].partition("{")[0]
    return f"{name}_count"
