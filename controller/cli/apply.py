"""`canaryctl apply` into the directory source (into the cluster:
`controller.runtime.oneshot.apply_to_cluster`).

Nothing is written unless the whole file is valid.
"""

from __future__ import annotations

from pathlib import Path

from controller.policy import ModelRollout


def to_directory(rollout: ModelRollout, source: Path, directory: Path) -> Path:
    """Copy the policy file into the directory source, named after the rollout."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{rollout.metadata.namespace}.{rollout.metadata.name}.yaml"
    temporary = target.with_suffix(".yaml.tmp")
    temporary.write_bytes(source.read_bytes())
    temporary.replace(target)  # atomic: the controller never reads half a file
    return target
