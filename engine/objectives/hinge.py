"""Hinge loss max(0, 1 - y f(x)) of an mlp on biased_parity's ±1 bits and labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from engine.data.base import Examples
from engine.data.biased_parity import MINUS, PLUS
from schemas.objectives import Hinge as HingeConfig

from .base import Batch, Count, Objective

if TYPE_CHECKING:
    from engine.runtime.context import BuildContext


@dataclass
class Signs:
    """Inputs x [B, n] (float ±1) and labels y [B] (float ±1)."""

    x: torch.Tensor
    y: torch.Tensor


def signs_of(tokens: torch.Tensor, n: int) -> Signs:
    """x and y of `BOS x1..xn = y EOS` token rows [B, n + 4]."""
    one = torch.ones((), dtype=torch.float32, device=tokens.device)
    x = torch.where(tokens[:, 1 : n + 1] == PLUS, one, -one)
    y = torch.where(tokens[:, n + 2] == PLUS, one, -one)
    return Signs(x, y)


class Hinge(Objective):
    """loss = mean over the batch of max(0, 1 - y f(x)); `acc` = fraction with sign(f) = y (f = 0 counts as -1).

    `predict` answers exact_match: at the label token, logits 0 for `-` and f(x) for `+` (every other token
    -inf), so argmax agrees with `acc` and exact_match's `acc/<split>` is the held-out sign accuracy.
    """

    def __init__(self, cfg: HingeConfig, models: dict[str, nn.Module], ctx: BuildContext) -> None:
        self.cfg, self.models, self.model, self.stage = cfg, models, models["model"], ctx.stage
        self.n = ctx.stage.data.n
        self.vocab_size = ctx.stage.data.vocab_size

    def trainable(self) -> dict[str, nn.Module]:
        """The model; a frozen first layer's parameters have requires_grad False, so the optimizer skips them."""
        return self.models

    def collate(self, examples: Examples, device: torch.device) -> Batch:
        """Token tensors on `device` (x and y are read from them in `__call__`)."""
        return Batch.from_examples(examples, device)

    def count(self, examples: Examples) -> Count:
        """The objective config's `step_flops`; tokens are the examples' n + 4 tokens."""
        n = len(examples)
        f = self.cfg.step_flops(self.stage.model, float(n))
        return Count(n, float(np.sum(examples.lengths)), f.total, 0.0)

    def scores(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """f(x) [B] and the labels y [B] (±1)."""
        s = signs_of(batch.tokens, self.n)
        return self.model(s.x).float(), s.y

    def predict(
        self, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Logits at the label token [B, V] (0 for `-`, f for `+`, -inf elsewhere), the label tokens [B], the
        answer mask [B, L-1] and no auxiliary outputs."""
        f, _ = self.scores(batch)
        logits = torch.full((len(f), self.vocab_size), float("-inf"), device=f.device)
        logits[:, MINUS] = 0.0
        logits[:, PLUS] = f
        mask = batch.loss_mask[:, 1:]
        return logits, batch.tokens[:, 1:][mask], mask, {}

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean hinge loss and detached metrics (hinge, acc, margin)."""
        f, y = self.scores(batch)
        margin = y * f
        loss = torch.relu(1.0 - margin).mean()
        acc = (torch.where(f > 0, 1.0, -1.0) == y).float().mean()
        return loss, {"hinge": loss.detach(), "acc": acc.detach(), "margin": margin.detach().mean()}
