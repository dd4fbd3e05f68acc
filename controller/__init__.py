"""canary-controller: safe, stratified, self-judging rollouts of ML / LLM models.

The package is layered so that data flows one way (see docs/design.md and the
import-linter contracts in pyproject.toml): `policy` is the user-facing
contract, `analysis` and `engine` are pure decision code, the I/O adapters
(`routing`, `metrics`, `store`, `notify`, over the one Kubernetes layer `kube`)
sit behind narrow protocols, and `runtime` and `app` wire them together under a
thin `cli` and `api`.
"""

__version__ = "0.1.0"
