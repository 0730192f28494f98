"""Objective configs, one class per `kind`: how a batch and the stage's models become a loss."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Strict, kinded


class NextToken(Strict):
    """Cross-entropy of the next token on `loss_mask` tokens only, plus the model's auxiliary (MoE) losses."""

    kind: Literal["next_token"] = Field(
        "next_token", description="Next-token cross-entropy on answer tokens."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy.")


Objective = kinded(
    NextToken, default="next_token", description="The training objective of a stage, by `kind`."
)
