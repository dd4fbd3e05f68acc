"""The scale benchmark's N policies are what the real loader makes of each one's YAML."""

from __future__ import annotations

from bench.scale_controller import generate, policy_text
from controller.policy import load_text


def test_generated_rollouts_equal_the_loaders() -> None:
    generated = generate(3, 5.0)
    loaded = [load_text(policy_text(i, 5.0), f"<{i}>")[0].rollout for i in range(3)]
    assert generated == {r.key: r for r in loaded}
    assert len({r.spec.model for r in generated.values()}) == 3
