"""Two-layer ReLU network f(x) = a·ReLU(Wx + b) + c (standard) or a·ReLU(Wx + b) / sqrt(M) + c (ntk), built from
a `schemas.models.MLP` config.

The hidden layer (W, b) is the one entry of `blocks` (so it is sharded like any block); the readout (a, c) is at
the root. With `train_first_layer: false` W and b have requires_grad False from the start: the objective's
optimizer never sees them and they stay at their initialisation (random features).

Init: W ~ N(0, 1/inputs), b ~ N(0, 1), c = 0, a ~ N(0, 1) (ntk) or N(0, 1/M) (standard), from torch's global
generator (the trainer seeds it from the run seed and the stage name).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from schemas.models import MLP as MLPConfig


class MLP(nn.Module):
    """f(x) for x [B, inputs] of ±1 (float): scores [B]."""

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        if cfg.inputs is None:
            raise ValueError("the mlp's inputs are unset; build it from a validated stage (which fills them)")
        self.cfg = cfg
        self.blocks = nn.ModuleList([nn.Linear(cfg.inputs, cfg.width)])  # W [M, n], b [M]
        self.readout = nn.Linear(cfg.width, 1)  # a [1, M], c [1]
        self.scale = 1.0 / math.sqrt(cfg.width) if cfg.parametrization == "ntk" else 1.0
        self.reset_parameters()
        if not cfg.train_first_layer:
            self.blocks.requires_grad_(False)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """W ~ N(0, 1/inputs), b ~ N(0, 1), a ~ N(0, 1) (ntk) or N(0, 1/M) (standard), c = 0."""
        first = self.blocks[0]
        first.weight.normal_(0.0, 1.0 / math.sqrt(self.cfg.inputs))
        first.bias.normal_(0.0, 1.0)
        self.readout.weight.normal_(0.0, 1.0 if self.cfg.parametrization == "ntk" else self.cfg.width**-0.5)
        self.readout.bias.zero_()

    def features(self, x: Tensor) -> Tensor:
        """The hidden layer ReLU(Wx + b) [B, M]."""
        h = x
        for block in self.blocks:
            h = torch.relu(block(h))
        return h

    def forward(self, x: Tensor) -> Tensor:
        """Scores f(x) [B]."""
        return (self.readout(self.features(x) * self.scale)).squeeze(-1)


def build(cfg: MLPConfig, vocab_size: int | None = None) -> MLP:
    """Build the MLP of a config (token models take a vocabulary; this one reads ±1 vectors and ignores it)."""
    return MLP(cfg)
