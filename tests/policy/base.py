"""A small valid policy with a fixed line layout, for tests that break one line of it."""

from __future__ import annotations

BASE = """\
apiVersion: canary.ai/v1alpha1
kind: ModelRollout
metadata: {name: bot-v2, namespace: llm}
spec:
  model: bot
  baseline: {version: v1, service: bot-v1}
  candidate: {version: v2, service: bot-v2}
  traffic: {router: gateway-api, route: bot}
  cohorts:
    - {name: mobile, match: {header: x-client, value: mobile}}
    - {name: non-english, match: {header: accept-language, regex: "^(de|fr)"}}
  steps:
    - {weight: 5, hold: 10m, cohortWeights: {mobile: 10}}
    - {weight: 50, hold: 10m}
    - {weight: 100}
  analysis:
    interval: 30s
    window: 5m
    metrics:
      - {template: refusal-rate, maxIncrease: 0.02}
      - {template: error-rate, max: 0.01}
"""


def policy(*replacements: tuple[str, str]) -> str:
    """BASE with each (old, new) replaced once; fails loudly if `old` is not there."""
    text = BASE
    for old, new in replacements:
        assert old in text, f"{old!r} is not in the base policy"
        text = text.replace(old, new, 1)
    return text
