"""The objective contract: what the trainer and the evaluators ask of every objective, how a train stage builds
its model and objective, and the token batch NextToken takes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from engine import registry
from engine.data.base import Examples

if TYPE_CHECKING:
    from engine.runtime.context import BuildContext
    from schemas.spec import TrainStage

log = logging.getLogger("engine")


@dataclass
class Count:
    """What one batch costs, by the papers' convention: examples, tokens, 6ND (+2ND frozen) and attention FLOPs."""

    examples: float
    tokens: float
    flops: float
    attention_flops: float = 0.0


class Objective:
    """Base of every objective: `models` holds every module it checkpoints and writes to final/.

    Subclasses build their extra modules (predictor, EMA target, frozen teacher) from the build context,
    and implement `collate`, `count` and `__call__`, and whichever of `predict`, `decoder` and `logits`
    their stage's evaluators call. Frozen modules (a teacher) are not in `models`: they are loaded from
    their own final/ weights whenever the stage is built.
    """

    models: dict[str, nn.Module]
    # Examples drawn and trimmed together by `augment` (None: the whole global batch); a micro-batch never holds
    # examples of two groups, so the trainer picks micro-batches that divide it.
    batch_group: int | None = None

    def trainable(self) -> dict[str, nn.Module]:
        """The modules the optimizer updates (default: all of `models`)."""
        return self.models

    # Per-step randomness the objective needs (e.g. masks): `augment(rng, n)` gives arrays with leading dimension
    # n for n consecutive examples of the global batch, and each rank adds its rows to its batch's `meta`. None:
    # nothing. It travels to the data worker processes with the stream, so it must pickle without the models
    # (a method of a small helper object, not of the objective).
    augment: Callable[[np.random.Generator, int], dict[str, np.ndarray]] | None = None

    def stream(self, stream: Any) -> Any:
        """The training batches (anything with `batch(step)`): the counter-based `stream` the trainer built
        (the default), or the objective's own built from its seed, stage and rank split (a probe's fixed
        labelled set, walked in epochs)."""
        return stream

    def loss_weight(self, examples: Any) -> float:
        """How many terms the loss of `examples` averages over (default: one per example).

        The trainer weights each micro-batch's loss by it and divides by the step's total over all ranks, so a
        step's gradient is the mean over the whole global batch, whatever the world size and micro-batching.
        """
        return float(len(examples))

    def collate(self, examples: Any, device: torch.device) -> Any:
        """Turn a generator's numpy batch into the tensors `__call__` takes, on `device`."""
        raise NotImplementedError

    def count(self, examples: Any) -> Count:
        """Examples, tokens and FLOPs of one training batch (numpy side, before collation)."""
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called after each optimizer step (e.g. an EMA update); `step` counts completed steps."""

    def __call__(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise and detached metric tensors."""
        raise NotImplementedError

    shows_images: bool = False  # whether `images` has anything to show (the trainer draws a batch for it)

    def images(self, batch: Any) -> dict[str, np.ndarray]:
        """Images of the first example of a collated batch for TensorBoard, HWC uint8 by tag (e.g. a
        reconstruction); the trainer asks every `logging.images_every` steps when `shows_images`."""
        return {}

    def results(self, metrics: dict[str, float]) -> dict[str, Any] | None:
        """What the stage writes to {output}/{stage}/results.json when it ends, from its last evaluation's
        `metrics` (e.g. a probe's top-1 and encoder); None (the default) writes nothing."""
        return None

    # What evaluators call: an objective implements those of the evaluators its stage may have (the spec
    # validator pairs them).

    def predict(
        self, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Teacher-forced next-token logits at the answer positions [M, V], their targets [M], the answer
        mask [B, L-1] and the model's auxiliary outputs (exact_match, accuracy_by_length)."""
        raise NotImplementedError(f"{type(self).__name__} predicts no tokens")

    def decoder(self) -> nn.Module:
        """The token model that generation decodes (`engine.generate`: verified, sampling)."""
        raise NotImplementedError(f"{type(self).__name__} predicts no tokens")

    def logits(self, batch: Any, segments: int = 1) -> torch.Tensor:
        """Class logits [B / segments, classes] of a collated batch of B clips, whose `labels` hold the classes
        (top1). With segments > 1 each run of `segments` consecutive clips is one example, windows of one video
        that the classifier reads together."""
        raise NotImplementedError(f"{type(self).__name__} classifies nothing")

    def represent(self, batch: Any) -> torch.Tensor:
        """The trained encoder's output tokens [B, N, D] of the whole clips of a collated batch, whose masks
        `__call__` also takes (representation)."""
        raise NotImplementedError(f"{type(self).__name__} encodes no clips")

    def classifier_report(self) -> dict[str, float]:
        """Called on every rank before a classification evaluator scores (top1): fixes what the classifier
        chooses on its own validation data (a linear probe's head) and returns what the evaluation reports
        beside its top-1 (the labelled set's size, the choice and what it was based on)."""
        raise NotImplementedError(f"{type(self).__name__} classifies nothing")


def train_stage(stage: TrainStage, ctx: BuildContext) -> Objective:
    """The objective of a train stage over its model: built for the data's vocabulary (token models) from the
    stage's seeded RNG or loaded from `init`, then sharded; the objective builds the rest."""
    model = registry.build_model(stage.model, ctx.vocab_size)
    if stage.init is not None:
        model.load_state_dict(ctx.weights(stage.init))
        log.info("%s: initialised from %s", ctx.name, ctx.final_url(stage.init))
    return registry.build_objective(stage.objective, {"model": ctx.shard(model)}, ctx)


@dataclass
class Batch:
    """Token ids [B, L] (long), answer mask [B, L] (bool), optional coupled position ids [B, L] (long)."""

    tokens: torch.Tensor
    loss_mask: torch.Tensor
    positions: torch.Tensor | None = None

    @classmethod
    def from_examples(cls, ex: Examples, device: torch.device) -> Batch:
        """Move a generator's numpy batch to `device`."""
        nb = device.type == "cuda"
        tokens = torch.from_numpy(ex.tokens).to(device, torch.long, non_blocking=nb)
        mask = torch.from_numpy(ex.loss_mask).to(device, non_blocking=nb)
        pos = (
            None
            if ex.positions is None
            else torch.from_numpy(ex.positions).to(device, torch.long, non_blocking=nb)
        )
        return cls(tokens, mask, pos)
