"""What builders get besides their config: the stage, the run, the process group, sharding and weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from schemas.spec import Spec, TrainStage
from schemas.training import CheckpointRef, StageRef

from .checkpoint import load_final, read_json
from .distributed import Dist
from .parallel import parallelize


@dataclass
class BuildContext:
    """The stage being built, with helpers to shard extra modules and to load weights by reference."""

    spec: Spec
    name: str
    stage: TrainStage
    dist: Dist

    @property
    def output(self) -> str:
        """The run directory URL (no trailing slash)."""
        return self.spec.run.output.rstrip("/")

    def shard(self, module: nn.Module, frozen: bool = False) -> nn.Module:
        """Apply the stage's distributed settings to an extra module (predictor, teacher, EMA target)."""
        return parallelize(module, self.stage.distributed, self.dist, frozen=frozen)

    def final_url(self, ref: StageRef | CheckpointRef) -> str:
        """URL of the final/ directory a weights reference points to."""
        return f"{self.output}/{ref.stage}/final" if isinstance(ref, StageRef) else ref.checkpoint.rstrip("/")

    def done(self, ref: StageRef | CheckpointRef) -> dict[str, Any]:
        """The done.json of a referenced final/ directory (its model config, step and metrics)."""
        return read_json(f"{self.final_url(ref)}/done.json")

    def weights(self, ref: StageRef | CheckpointRef, name: str = "model") -> dict[str, Any]:
        """Consolidated weights `name` of a referenced final/ directory (weights_only loading)."""
        return load_final(self.final_url(ref), name)
