"""A look without data is told as a count and the first cell, not as a list of all."""

from __future__ import annotations

import pytest

from controller.analysis.verdicts import Verdict
from controller.engine.decide import no_data_reason
from controller.engine.state import Cell

METRICS = ("refusal-rate", "quality-score", "latency-p95", "error-rate")
COHORTS = ("non-english", "mobile", "power-users", "overall")
GRID = tuple(Cell(m, c, Verdict.NO_DATA) for m in METRICS for c in COHORTS)


@pytest.mark.parametrize(
    ("no_data", "required", "over", "reason"),
    [
        (
            GRID,
            GRID,
            "10m",
            "no data from Prometheus for all 16 cells (4 metrics × 4 cohorts) for 10m; "
            "first: refusal-rate in non-english",
        ),
        (
            GRID,
            GRID,
            "",
            "no data from Prometheus for all 16 cells (4 metrics × 4 cohorts); "
            "first: refusal-rate in non-english",
        ),
        (
            GRID[5:8],
            GRID,
            "1h30m",
            "no data from Prometheus for 3 of 16 cells for 1h30m; first: quality-score in mobile",
        ),
        (
            GRID[3:4],
            GRID,
            "45s",
            "no data from Prometheus for refusal-rate in overall (1 of 16 cells) for 45s",
        ),
        (
            GRID[:1],
            GRID[:1],
            "2h",
            "no data from Prometheus for refusal-rate in non-english for 2h",
        ),
        (
            GRID[:3],
            GRID[:3],
            "10m",
            "no data from Prometheus for all 3 cells for 10m; first: refusal-rate in non-english",
        ),
    ],
    ids=["all", "all-no-duration", "some", "one-of-many", "the-only-one", "all-one-metric"],
)
def test_the_reason_counts_the_cells_and_names_the_first(
    no_data: tuple[Cell, ...], required: tuple[Cell, ...], over: str, reason: str
) -> None:
    assert no_data_reason(no_data, required, over) == reason
    assert len(reason) < 120
