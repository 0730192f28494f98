"""Objective configs, one class per `kind`: how a batch and the stage's models become a loss."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from .base import Problems, Strict, kinded
from .evals import Evaluator, Representation
from .masks import MultiBlock
from .models import MLP, Predictor, StepFlops, Transformer, ViT
from .training import Batch, WeightsRef


class TrainingObjective(Strict):
    """What every objective config has: its `kind`, and the rules between it and the rest of its stage."""

    kind: str

    def check(self, stage: Any, p: Problems) -> None:
        """Record what in `stage` (its model, predictor, data) this objective cannot train, at paths in it."""
        raise NotImplementedError

    def check_batch(self, batch: Batch, world: int, at: str, p: Problems) -> None:
        """Record at `at` (the stage's batch) what in its batch sizes under `world` ranks does not fit this
        objective (default: nothing)."""

    def loads(self) -> dict[str, WeightsRef]:
        """The encoders' weights this objective loads, by its field that names them (the spec checks that a
        `{stage: NAME}` is an earlier stage that trains a vit). Default: none."""
        return {}

    def default_evals(self) -> list[Evaluator]:
        """The evaluators of a stage whose spec gives no `evals` (an explicit `evals: []` keeps none).
        Default: none."""
        return []


class NextToken(TrainingObjective):
    """Cross-entropy of the next token on `loss_mask` tokens only, plus the model's auxiliary (MoE) losses."""

    kind: Literal["next_token"] = Field(
        "next_token", description="Next-token cross-entropy on answer tokens."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy.")
    ppc_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of the position-id cross-entropy when the model predicts positions "
        "(position.predict: Predictive Position Coupling); unused otherwise.",
    )

    def step_flops(self, model: Transformer, vocab_size: int, tokens: float, sum_t_t1: float) -> StepFlops:
        """One step over sequences of `tokens` unpadded tokens in all whose T*(T+1) sum to `sum_t_t1`."""
        return model.train_flops(vocab_size, tokens, sum_t_t1)

    def check(self, stage: Any, p: Problems) -> None:
        """The stage trains a transformer."""
        if isinstance(stage.model, MLP):
            p.add("objective.kind", "an mlp trains with hinge (its output is one score, not token logits)")
        elif not isinstance(stage.model, Transformer):
            p.add(
                "objective.kind",
                "a vit trains with pixel_reconstruction, latent_prediction or ema_latent_prediction",
            )


class Hinge(TrainingObjective):
    """The margin loss max(0, 1 - y·f(x)) of a scalar model (mlp) on ±1 labels, averaged over the batch."""

    kind: Literal["hinge"] = Field(
        "hinge", description="Hinge loss max(0, 1 - y f(x)) of an mlp on biased_parity's ±1 labels."
    )

    def check(self, stage: Any, p: Problems) -> None:
        """The stage trains an mlp (whose own check pairs it with its data)."""
        if not isinstance(stage.model, MLP):
            p.add(
                "objective.kind",
                f"hinge trains an mlp's scalar output; a {stage.model.kind} trains with "
                + ("next_token" if isinstance(stage.model, Transformer) else "a masked-video objective"),
            )

    def step_flops(self, model: MLP, examples: float) -> StepFlops:
        """One step over `examples` inputs (the loss itself is negligible)."""
        return model.train_flops(examples)


class MaskedVideo(TrainingObjective):
    """Objectives of a video encoder on masked clips: the rules between their mask generators and the stage's
    predictor and batch.

    Each subclass declares `masks: MultiBlock` itself, where it was: inherited fields would come first,
    changing the order of the JSON schema, of dumped specs and of problems reported together.
    """

    def check(self, stage: Any, p: Problems) -> None:
        """The stage trains a vit, with a predictor that has a mask token per mask generator."""
        if not isinstance(stage.model, ViT):
            p.add(
                "objective.kind",
                f"{self.kind!r} trains a video encoder; "
                + (
                    "an mlp trains with hinge"
                    if isinstance(stage.model, MLP)
                    else "a transformer trains with next_token"
                ),
            )
        elif stage.predictor is None:
            p.add("predictor", f"{self.kind} needs a predictor; add `predictor: {{kind: predictor}}`")
        elif stage.predictor.mask_tokens < len(self.masks.masks):
            p.add(
                "predictor.mask_tokens",
                f"{stage.predictor.mask_tokens} mask tokens for {len(self.masks.masks)} mask generators; need one each",
            )

    def default_evals(self) -> list[Evaluator]:
        """Collapse diagnostics (effective ranks, loss relative to the mean predictor) on held-out clips."""
        return [Representation()]

    def check_batch(self, batch: Batch, world: int, at: str, p: Problems) -> None:
        """Fix `masks.group` when unset (V-JEPA's per-GPU draw: the per-rank micro-batch under `world`, fixed
        by the spec, not the launched world); a micro-batch holds clips of one mask group."""
        if batch.global_ % world:
            return
        if self.masks.group is None:
            self.masks.group = batch.micro or batch.global_ // world
        elif batch.micro is not None and self.masks.group % batch.micro:  # unset: the trainer picks a divisor
            p.add(
                f"{at}.micro",
                f"{batch.micro} clips per forward pass do not divide objective.masks.group={self.masks.group} "
                "(a micro-batch holds clips of one mask group); pick a divisor of the group",
            )

    def frozen_target(self, encoder: ViT, teacher: ViT | None = None) -> ViT | None:
        """The network run forward (frozen) on every whole clip to make the targets, if any."""
        raise NotImplementedError

    def out_dim(self, encoder: ViT, teacher: ViT | None = None) -> int:
        """The width of what the predictor regresses."""
        raise NotImplementedError

    def step_flops(
        self,
        encoder: ViT,
        predictor: Predictor,
        pairs: Sequence[tuple[float, float]],
        clips: int,
        teacher: ViT | None = None,
    ) -> StepFlops:
        """One step; `pairs`: (context, target) tokens of every clip and mask generator (see `masked_flops`)."""
        target = self.frozen_target(encoder, teacher)
        return masked_flops(encoder, predictor, self.out_dim(encoder, teacher), target, pairs, clips)


class PixelReconstruction(MaskedVideo):
    """SALT stage 1 (V-Pixel): encoder on the context, predictor to the pixels of the masked tubelets, MSE."""

    kind: Literal["pixel_reconstruction"] = Field(
        "pixel_reconstruction",
        description="Masked pixel reconstruction under multi-block masking (VideoMAE loss).",
    )
    masks: MultiBlock = Field(
        default_factory=MultiBlock, description="Mask generators; one loss per generator, averaged."
    )
    norm_pixels: bool = Field(
        True,
        description="Targets normalised per tubelet patch and channel (mean, unbiased std, eps 1e-6), as VideoMAE.",
    )

    def frozen_target(self, encoder: ViT, teacher: ViT | None = None) -> ViT | None:
        """No network runs on the full clip: the targets are pixels."""
        return None

    def out_dim(self, encoder: ViT, teacher: ViT | None = None) -> int:
        """The predictor regresses a tubelet's pixels."""
        return encoder.patch_dim


class LatentPrediction(MaskedVideo):
    """SALT stage 2: a frozen teacher's latents on the full clip are regressed at the masked positions."""

    kind: Literal["latent_prediction"] = Field(
        "latent_prediction", description="Predict a frozen teacher's latents at masked positions (SALT)."
    )
    teacher: WeightsRef = Field(
        description="The frozen teacher: {stage: NAME} or {checkpoint: URL of a final/}."
    )
    masks: MultiBlock = Field(
        default_factory=MultiBlock, description="Mask generators; one loss per generator, averaged."
    )
    loss: Literal["l1", "l2"] = Field("l1", description="Regression loss on the teacher's latents.")
    target_norm: bool = Field(True, description="Layer-normalise the teacher's outputs without parameters.")

    def loads(self) -> dict[str, WeightsRef]:
        """The frozen teacher."""
        return {"teacher": self.teacher}

    def frozen_target(self, encoder: ViT, teacher: ViT | None = None) -> ViT | None:
        """The teacher runs forward on the full clip (its config: the teacher stage's, or its done.json's)."""
        if teacher is None:
            raise ValueError("latent_prediction counts its teacher's FLOPs: pass the teacher's ViT config")
        return teacher

    def out_dim(self, encoder: ViT, teacher: ViT | None = None) -> int:
        """The predictor regresses the teacher's latents."""
        return self.frozen_target(encoder, teacher).dim


class EMALatentPrediction(MaskedVideo):
    """The V-JEPA baseline: the target encoder is an EMA of the student, on the full clip, no gradients."""

    kind: Literal["ema_latent_prediction"] = Field(
        "ema_latent_prediction",
        description="V-JEPA: predict an EMA target encoder's latents at masked positions.",
    )
    masks: MultiBlock = Field(
        default_factory=MultiBlock, description="Mask generators; one loss per generator, averaged."
    )
    loss: Literal["l1", "l2"] = Field("l1", description="Regression loss on the target encoder's latents.")
    target_norm: bool = Field(True, description="Layer-normalise the targets without parameters.")
    momentum: tuple[float, float] = Field(
        (0.998, 1.0), description="EMA momentum, linear from the first to the second value over the stage."
    )

    def frozen_target(self, encoder: ViT, teacher: ViT | None = None) -> ViT | None:
        """The EMA target encoder (the student's shape) runs forward on the full clip."""
        return encoder

    def out_dim(self, encoder: ViT, teacher: ViT | None = None) -> int:
        """The predictor regresses the target encoder's latents."""
        return encoder.dim


def masked_flops(
    encoder: ViT,
    predictor: Predictor,
    out_dim: int,
    target: ViT | None,
    pairs: Sequence[tuple[float, float]],
    clips: int,
) -> StepFlops:
    """One masked-video step over `clips` clips, one (Kc, Kt) pair per clip and mask generator: the encoder
    trained on Kc tokens, the predictor on Kc + Kt, a frozen `target` run forward on every whole clip."""
    n_enc, n_pred = encoder.params(), predictor.params(encoder.dim, out_dim)
    six_nd = attention = 0.0
    for (kc, kt), n in Counter(pairs).items():  # the clips of a mask group share their pair
        six_nd += 6.0 * (n_enc * kc + n_pred * (kc + kt)) * n
        attention += 3.0 * (encoder.attention_flops(kc) + predictor.attention_flops(kc + kt)) * n
    frozen_2nd = 0.0
    if target is not None:
        frozen_2nd = 2.0 * target.params() * clips * encoder.tokens
        attention += target.attention_flops(encoder.tokens) * clips
    return StepFlops(six_nd, frozen_2nd, attention)


Objective = kinded(
    NextToken,
    PixelReconstruction,
    LatentPrediction,
    EMALatentPrediction,
    Hinge,
    default="next_token",
    description="The training objective of a stage, by `kind` (default next_token).",
)
