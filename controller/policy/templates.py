"""The built-in metric templates a policy can name, and what kind of data each is.

The policy layer only needs to know that a template exists and how its values
behave (to check limits); the PromQL behind each template lives in
`controller.metrics`, which must implement every name listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class MetricKind(StrEnum):
    #: events out of trials (refusals out of requests): judged on the rate
    PROPORTION = "proportion"
    #: a Prometheus histogram: judged on a quantile (tails) or on the mean (scores)
    HISTOGRAM = "histogram"
    #: a plain value with no sample count: compared to its limits as it is
    GAUGE = "gauge"


class Unit(StrEnum):
    RATIO = "ratio"  # 0..1
    SECONDS = "seconds"
    SCORE = "score"  # 0..1, higher is better
    TOKENS = "tokens"


@dataclass(frozen=True)
class Template:
    name: str
    kind: MetricKind
    unit: Unit
    description: str
    #: the quantile judged, for latency tails
    quantile: float | None = None
    #: whether `threshold` applies (quality-score: judge the share of scores below it)
    accepts_threshold: bool = False

    @property
    def bounded(self) -> bool:
        """Values lie in 0..1, so absolute limits outside that range are mistakes."""
        return self.unit in (Unit.RATIO, Unit.SCORE)


#: the kinds of `llm_feedback_total{kind}`: what users did with an answer besides reading it
FEEDBACK_KINDS = ("regenerate", "thumbs_down", "thumbs_up", "abandon", "escalate")

#: the implicit-feedback templates: each the share of requests that drew one kind of
#: feedback, judged like refusals (`thumbs_up` is praise, not harm: no template)
FEEDBACK_TEMPLATES: dict[str, tuple[str, str]] = {
    "regenerate-rate": ("regenerate", "the user asked to be answered again"),
    "thumbs-down-rate": ("thumbs_down", "the user rated the answer down"),
    "abandon-rate": ("abandon", "the user left the conversation unfinished after"),
    "escalation-rate": ("escalate", "the user escalated to a human"),
}

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "refusal-rate",
            MetricKind.PROPORTION,
            Unit.RATIO,
            "share of requests the model refused (llm_refusals_total / llm_requests_total)",
        ),
        Template(
            "error-rate",
            MetricKind.PROPORTION,
            Unit.RATIO,
            'share of requests that failed (llm_requests_total{outcome="error"})',
        ),
        Template(
            "quality-score",
            MetricKind.HISTOGRAM,
            Unit.SCORE,
            "mean judge / task-success score from llm_quality_score (0..1); with "
            "`threshold`, the share of scores below it",
            accepts_threshold=True,
        ),
        Template(
            "latency-p95",
            MetricKind.HISTOGRAM,
            Unit.SECONDS,
            "95th percentile of llm_request_duration_seconds",
            quantile=0.95,
        ),
        Template(
            "latency-p99",
            MetricKind.HISTOGRAM,
            Unit.SECONDS,
            "99th percentile of llm_request_duration_seconds",
            quantile=0.99,
        ),
        Template(
            "ttft-p95",
            MetricKind.HISTOGRAM,
            Unit.SECONDS,
            "95th percentile of llm_time_to_first_token_seconds",
            quantile=0.95,
        ),
        Template(
            "ttft-p99",
            MetricKind.HISTOGRAM,
            Unit.SECONDS,
            "99th percentile of llm_time_to_first_token_seconds",
            quantile=0.99,
        ),
        *(
            Template(
                name,
                MetricKind.PROPORTION,
                Unit.RATIO,
                f"share of requests {meaning} "
                f'(llm_feedback_total{{kind="{kind}"}} / llm_requests_total)',
            )
            for name, (kind, meaning) in FEEDBACK_TEMPLATES.items()
        ),
        Template(
            "tokens-per-request",
            MetricKind.GAUGE,
            Unit.TOKENS,
            'output tokens per request (llm_tokens_total{direction="output"} / requests)',
        ),
    )
}

#: placeholders a custom query may use; each value is escaped before substitution
PLACEHOLDERS = ("model", "version", "cohort", "window", "namespace")
