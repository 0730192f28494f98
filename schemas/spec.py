"""The top of the spec: run, resources and the ordered stages, with the rules that span them."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from .base import Problems, Strict
from .data import Data
from .evals import Eval
from .models import Model
from .objectives import NextToken, Objective
from .training import AdamW, Batch, Checkpointing, Distributed, Logging, Optim, Schedule, StageRef, WeightsRef


class Run(Strict):
    """Identity of the run: its name, where it writes, and the seed everything derives from."""

    name: str = Field(description="Run name (used in logs and the sbatch job name).")
    output: str = Field(description="Run directory: a local path or any fsspec URL (memory://, s3://, ...).")
    seed: int = Field(0, ge=0, description="Seed of model init and of the counter-based data streams.")


class Slurm(Strict):
    """Fields of the generated sbatch script."""

    partition: str | None = Field(None, description="Slurm partition (#SBATCH --partition).")
    account: str | None = Field(None, description="Slurm account (#SBATCH --account).")
    time: str = Field("24:00:00", description="Wall-clock limit (#SBATCH --time).")
    cpus_per_task: int = Field(16, gt=0, description="CPU cores per node's task.")


class Resources(Strict):
    """Where the job runs: the world size is nodes * procs_per_node."""

    nodes: int = Field(1, gt=0, description="Number of nodes.")
    procs_per_node: int = Field(1, gt=0, description="Processes (ranks) per node, one per GPU on CUDA.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="cpu (gloo) or cuda (nccl).")
    slurm: Slurm = Field(default_factory=Slurm, description="sbatch settings for `engine plan`.")

    @property
    def world(self) -> int:
        """Total number of ranks."""
        return self.nodes * self.procs_per_node


class TrainStage(Strict):
    """A training stage: a model trained on a data generator with an objective, evaluated periodically."""

    kind: Literal["train"] = Field("train", description="Stage kind.")
    model: Model = Field(description="The model trained in this stage.")
    init: WeightsRef | None = Field(None, description="Start from these weights instead of a fresh init.")
    data: Data = Field(description="The data generator.")
    objective: Objective = Field(default_factory=NextToken, description="The training objective.")
    optim: Optim = Field(default_factory=AdamW, description="The optimizer.")
    schedule: Schedule = Field(description="Steps and learning-rate schedule.")
    batch: Batch = Field(description="Global and micro batch sizes.")
    distributed: Distributed = Field(default_factory=Distributed, description="Sharding, precision, compile.")
    checkpoint: Checkpointing = Field(
        default_factory=Checkpointing, description="Checkpoint period and retention."
    )
    logging: Logging = Field(default_factory=Logging, description="Metric logging.")
    evals: list[Eval] = Field(
        default_factory=list, description="Evaluations run periodically and at the end."
    )

    @model_validator(mode="after")
    def _model_fits_data(self) -> TrainStage:
        p = Problems()
        m, d = self.model, self.data
        if m.vocab_size is not None and m.vocab_size < d.vocab_size:
            p.add(
                "model.vocab_size",
                f"{m.vocab_size} is smaller than the data's vocabulary ({d.vocab_size}); raise it or leave it unset",
            )
        need = d.max_seq_len()
        if m.context is not None and m.context < need:
            p.add(
                "model.position.max_len",
                f"{m.context} positions cannot hold the data's longest example ({need} tokens); set max_len >= {need}",
            )
        lo, hi = d.k_range[1], max(d.length.train[1], d.length.eval[1])
        for i, ev in enumerate(self.evals):
            bad = [n for n in ev.lengths or [] if not lo <= n <= hi]
            if bad:
                p.add(
                    f"evals.{i}.lengths", f"lengths {bad} lie outside [{lo}, {hi}] (k .. longest data length)"
                )
        p.check()
        return self


Stage = TrainStage

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class Spec(Strict):
    """A whole experiment: run identity, resources, and the stages run in order."""

    extends: str | list[str] | None = Field(
        None,
        description="Spec file(s) deep-merged under this one (resolved by the loader, relative to this file).",
    )
    run: Run = Field(description="Run name, output directory and seed.")
    resources: Resources = Field(
        default_factory=Resources, description="Nodes, processes per node and device."
    )
    stages: dict[str, Stage] = Field(min_length=1, description="Named stages, run in the order written.")

    @model_validator(mode="after")
    def _cross_stage(self) -> Spec:
        p = Problems()
        names = list(self.stages)
        world = self.resources.world
        for i, (name, stage) in enumerate(self.stages.items()):
            if not _NAME.match(name):
                p.add(f"stages.{name}", f"stage name {name!r} must be letters, digits, '_' or '-'")
            if isinstance(stage.init, StageRef) and stage.init.stage not in names[:i]:
                earlier = ", ".join(names[:i]) or "none"
                p.add(
                    f"stages.{name}.init.stage",
                    f"{stage.init.stage!r} is not an earlier stage (earlier stages: {earlier})",
                )
            b = stage.batch
            if b.global_ % world:
                p.add(
                    f"stages.{name}.batch.global",
                    f"{b.global_} is not divisible by the world size {world} (nodes*procs_per_node); use a multiple of {world}",
                )
            elif b.micro is not None and (b.global_ // world) % b.micro:
                p.add(
                    f"stages.{name}.batch.micro",
                    f"{b.micro} does not divide the per-rank batch {b.global_ // world} (global/world); pick a divisor",
                )
        p.check()
        return self
