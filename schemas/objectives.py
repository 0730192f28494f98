"""Objective configs, one class per `kind`: how a batch and the stage's models become a loss."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Strict, kinded
from .masks import MultiBlock
from .training import WeightsRef


class NextToken(Strict):
    """Cross-entropy of the next token on `loss_mask` tokens only, plus the model's auxiliary (MoE) losses."""

    kind: Literal["next_token"] = Field(
        "next_token", description="Next-token cross-entropy on answer tokens."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy.")


class PixelReconstruction(Strict):
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


class LatentPrediction(Strict):
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


class EMALatentPrediction(Strict):
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


Objective = kinded(
    NextToken,
    PixelReconstruction,
    LatentPrediction,
    EMALatentPrediction,
    default="next_token",
    description="The training objective of a stage, by `kind` (default next_token).",
)
