"""What builders get besides their config: the stage, the run, the process group, sharding, and the model
configs and weights that references point to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel
from torch import nn

from schemas.spec import ProbeStage, Spec, TrainStage
from schemas.training import CheckpointRef, RandomInit, StageRef

from .checkpoint import DONE, CheckpointError, Damaged, exists, load_final, read_done
from .distributed import Dist
from .parallel import parallelize

Config = TypeVar("Config", bound=BaseModel)


@dataclass
class BuildContext:
    """The stage being built, with helpers to shard extra modules and to resolve references to other stages'
    or checkpoints' models: their configs and weights."""

    spec: Spec
    name: str
    stage: TrainStage | ProbeStage
    dist: Dist

    @property
    def output(self) -> str:
        """The run directory URL (no trailing slash)."""
        return self.spec.run.output.rstrip("/")

    @property
    def vocab_size(self) -> int | None:
        """The vocabulary of the stage's model: the model's `vocab_size` if set, else the data's; None when
        the data makes no tokens."""
        return self.stage.vocab_size

    def shard(self, module: nn.Module, frozen: bool = False) -> nn.Module:
        """Apply the stage's distributed settings to an extra module (predictor, teacher, EMA target)."""
        return parallelize(module, self.stage.distributed, self.dist, frozen=frozen)

    def final_url(self, ref: StageRef | CheckpointRef) -> str:
        """URL of the final/ directory a weights reference points to."""
        return f"{self.output}/{ref.stage}/final" if isinstance(ref, StageRef) else ref.checkpoint.rstrip("/")

    def _error(self, ref: StageRef | CheckpointRef, e: Damaged) -> CheckpointError:
        """A user-facing error for referenced weights that are missing or damaged, with how to fix it."""
        url = self.final_url(ref)
        file, _, what = str(e).partition(": ")
        if isinstance(ref, StageRef):
            if not exists(f"{url}/{DONE}"):
                return CheckpointError(
                    f"stage {self.name}: stage {ref.stage} has not finished ({url}/{DONE} does not exist); "
                    f"run stage {ref.stage} first"
                )
            return CheckpointError(
                f"stage {self.name}: the weights of stage {ref.stage} are damaged ({url}/{file}: {what}); "
                f"rerun stage {ref.stage} (the whole spec, or --stage {ref.stage}): it sets the damaged "
                "final/ aside and re-runs from its newest intact checkpoint"
            )
        if not exists(f"{url}/{DONE}"):
            return CheckpointError(
                f"stage {self.name}: {url} is not a complete final/ directory ({DONE} does not exist); point "
                "the checkpoint reference at a final/ directory written by the engine"
            )
        return CheckpointError(
            f"stage {self.name}: the checkpoint {url} is damaged ({url}/{file}: {what}); it was left in "
            "place; point the checkpoint reference at an intact final/ directory"
        )

    def done(self, ref: StageRef | CheckpointRef) -> dict[str, Any]:
        """The verified done.json of a referenced final/ directory (its model config, step and metrics)."""
        try:
            return read_done(self.final_url(ref))
        except Damaged as e:
            raise self._error(ref, e) from None

    def model_config(self, ref: StageRef | CheckpointRef | RandomInit, kind: type[Config]) -> Config:
        """The config (of type `kind`) of the model a reference points to: a stage's from the spec (also for
        `{random: stage}`), a checkpoint's from its verified done.json."""
        if isinstance(ref, CheckpointRef):
            return kind.model_validate(self.done(ref)["model"])
        config = self.spec.stages[ref.stage if isinstance(ref, StageRef) else ref.random].final_model
        if not isinstance(config, kind):  # the spec validator allows only references to such stages
            raise TypeError(f"stage {self.name}: {ref} is a {type(config).__name__}, not a {kind.__name__}")
        return config

    def weights(self, ref: StageRef | CheckpointRef, name: str = "model") -> dict[str, Any]:
        """Consolidated weights `name` of a referenced final/ directory, verified (weights_only loading)."""
        try:
            return load_final(self.final_url(ref), name)
        except Damaged as e:
            raise self._error(ref, e) from None
