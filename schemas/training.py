"""Training configs shared by every stage: optimizer, schedule, batch, distribution, checkpoints, logging."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from .base import Examples, Steps, Strict, kinded, spec_error


class AdamW(Strict):
    """AdamW; weight decay applies to matrices only (not to biases, norms or 1-d parameters)."""

    kind: Literal["adamw"] = Field("adamw", description="AdamW optimizer.")
    lr: float = Field(3e-4, gt=0, description="Peak learning rate (reached after warmup).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="Adam betas (beta1, beta2).")
    eps: float = Field(1e-8, gt=0, description="Adam epsilon.")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay on matrices and embeddings.")
    weight_decay_end: float | None = Field(
        None,
        ge=0,
        description="Cosine ramp of the weight decay from weight_decay to this over the stage (V-JEPA).",
    )
    grad_clip: float | None = Field(
        1.0, gt=0, description="Clip the global gradient norm to this; null = no clipping."
    )

    @model_validator(mode="after")
    def _betas(self) -> AdamW:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise spec_error("betas", f"betas={list(self.betas)} must lie in [0, 1)")
        return self


class SGD(Strict):
    """Plain (momentum) SGD."""

    kind: Literal["sgd"] = Field("sgd", description="Stochastic gradient descent.")
    lr: float = Field(0.05, gt=0, description="Peak learning rate.")
    momentum: float = Field(0.0, ge=0, lt=1, description="Momentum.")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay on matrices and embeddings.")
    grad_clip: float | None = Field(
        None, gt=0, description="Clip the global gradient norm to this; null = no clipping."
    )


Optim = kinded(AdamW, SGD, default="adamw", description="Optimizer: adamw | sgd (default adamw).")


class Schedule(Strict):
    """Length of the stage and the learning-rate curve: linear warmup, then decay."""

    ON_RESUME: ClassVar[frozenset[str]] = frozenset({"steps"})  # may change on resume (--accept-changes)

    steps: Steps = Field(gt=0, description="Optimizer steps in the stage.")
    warmup: Steps = Field(0, ge=0, description="Linear warmup steps from warmup_start * lr to lr.")
    warmup_start: float = Field(
        0.0, ge=0, le=1, description="Learning rate at step 0, as a fraction of the peak."
    )
    decay: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warmup.")
    min_lr: float = Field(0.0, ge=0, le=1, description="Final learning rate, as a fraction of the peak.")

    @model_validator(mode="after")
    def _warmup_fits(self) -> Schedule:
        if self.warmup > self.steps:
            raise spec_error("warmup", f"warmup={self.warmup} exceeds steps={self.steps}; shorten warmup")
        return self


class Batch(Strict):
    """Examples per optimizer step, and per forward pass on one rank (gradient accumulation in between)."""

    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"micro"})  # accumulation does not change the result

    global_: Examples = Field(
        alias="global", gt=0, description="Examples per optimizer step, summed over all ranks."
    )
    micro: Examples | None = Field(
        None,
        gt=0,
        description="Examples per forward pass on one rank; default global/world (no accumulation).",
    )


class Distributed(Strict):
    """How the stage's models are sharded and compiled."""

    fsdp: bool = Field(
        True, description="Shard with FSDP2 (per block, then the root) when there is more than one rank."
    )
    reshard_after_forward: bool = Field(
        True, description="FSDP2: free gathered parameters after forward (ZeRO-3)."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Compute precision of parameters; auto = bf16 on CUDA, fp32 on CPU."
    )
    activation_checkpointing: bool = Field(
        False, description="Recompute each block's activations in backward."
    )
    compile: bool = Field(False, description="torch.compile each block.")
    deterministic: bool = Field(True, description="Use deterministic kernels (bitwise-reproducible resume).")


class Checkpointing(Strict):
    """Periodic distributed checkpoints for resumption."""

    every: Steps = Field(
        500, gt=0, description="Save a checkpoint every this many steps (and at preemption)."
    )
    keep_last: int = Field(2, gt=0, description="Complete checkpoints to keep; older ones are deleted.")
    url: str | None = Field(
        None, description="Where checkpoints go (any fsspec URL); default {output}/{stage}/checkpoints."
    )


class Logging(Strict):
    """Metrics: console progress, metrics.jsonl and TensorBoard, on rank 0."""

    every: Steps = Field(10, gt=0, description="Log metrics every this many steps.")
    tensorboard: bool = Field(True, description="Write TensorBoard event files to {output}/{stage}/tb.")
    console: bool = Field(True, description="Print a progress line at every log step.")
    images_every: Steps | None = Field(
        1000,
        gt=0,
        description="Write the objective's images (e.g. stage-1 reconstructions) to TensorBoard this often.",
    )


class StageRef(Strict):
    """The final weights of an earlier stage of the same spec."""

    stage: str = Field(description="Name of an earlier stage whose final/ weights to load.")


class CheckpointRef(Strict):
    """Weights at a URL: a final/ directory written by the engine."""

    checkpoint: str = Field(description="fsspec URL of a final/ directory (model.pt + done.json).")


class RandomInit(Strict):
    """A fresh random initialisation of another stage's model: the baseline a probe compares against. Seeded by the
    run seed and that stage's name, so every probe stage of one run that reads `{random: X}` reads one encoder."""

    random: str = Field(description="Name of the stage whose model config to initialise at random.")


WeightsRef = Annotated[
    StageRef | CheckpointRef, Field(description="Weights from {stage: NAME} or {checkpoint: URL}.")
]

EncoderRef = Annotated[
    StageRef | CheckpointRef | RandomInit,
    Field(
        description="The encoder: {stage: NAME}, {checkpoint: URL} or {random: NAME} (random init of that shape)."
    ),
]
