"""canary-controller: safe, stratified, self-judging rollouts of ML / LLM models.

The package is layered so that data flows one way (see the README's
Architecture and the import-linter contracts in pyproject.toml): `policy` is the
user-facing contract, `analysis` and `engine` are pure decision code, the I/O
adapters (`routing`, `metrics`, `store`, `notify`) sit behind narrow protocols,
and `runtime`, `cli` and `api` wire them together.
"""

__version__ = "0.1.0"
