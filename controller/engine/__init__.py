"""The rollout engine: phases, state and the pure transition function.

It imports nothing but the policy and the analysis verdicts (import-linter
contracts in pyproject.toml): no adapter, no client. The executor that performs
its actions lives in `controller.runtime.executor`.
"""
