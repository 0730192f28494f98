"""Attentive probe (V-JEPA 2's AttentiveClassifier) on a frozen encoder's tokens -> class logits.

Layout, following the V-JEPA 2 authors' src/models/attentive_pooler.py:
  blocks   `depth` pre-LN self-attention blocks over the tokens (no positions: the encoder put them in),
           width = the encoder's, MLP hidden int(width * mlp_ratio). V-JEPA 2's `depth` counts the
           cross-attention block too: its 4 probe blocks are our depth 3.
  cross    one learned query token attends to the tokens: q + xattn(q, norm1(tokens)), where xattn has
           q and kv projections (with biases) and NO output projection, and only the tokens are normalised;
           then q + mlp(norm2(q)).
  head     Linear(width -> classes) on the pooled query; no LayerNorm before it (V-JEPA 2 has none).
LayerNorm eps is cfg.norm_eps (1e-5, torch's default, as V-JEPA 2's pooler).

Parameters: `schemas.models.AttentiveProbe.params(in_dim, classes)` counts them from the config in pure
Python; tests compare it with this module's. `classes` is cfg.classes when set, else the builder's
argument (the data's number of classes).

Init (V-JEPA 2): trunc-normal(0, init_std) query and Linear weights, zero biases, LayerNorms 1/0; block
i's (1-based) attn.proj and mlp.fc2 weights divided by sqrt(2 i), and the cross block's mlp.fc2 by
sqrt(2 max(depth, 1)) (V-JEPA 2 reuses the last block's id). Unlike V-JEPA 2, whose classifier Linear
keeps torch's default init, the head is trunc-normal(init_std) with a zero bias.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from schemas.models import AttentiveProbe as ProbeConfig
from schemas.models import probe_classes

from .layers import MLP, Attention
from .vit import Block, init_vit_weights, rescale_blocks

__all__ = ["AttentiveProbe", "build"]


class CrossAttentionBlock(nn.Module):
    """q + xattn(q, norm1(x)), then + mlp(norm2(q))."""

    def __init__(self, dim: int, heads: int, mlp: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.xattn = Attention(dim, heads, layout="vjepa", cross=True, bias=True, out_proj=False)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp, bias=True, layout="vjepa")

    def forward(self, q: Tensor, x: Tensor) -> Tensor:
        """Queries q [B, Q, dim], tokens x [B, N, dim] -> [B, Q, dim]."""
        q = q + self.xattn(q, ctx=self.norm1(x))
        return q + self.mlp(self.norm2(q))


class AttentiveProbe(nn.Module):
    """Self-attention `blocks`, attentive pooling by one learned query, linear classifier."""

    def __init__(self, cfg: ProbeConfig, in_dim: int, classes: int | None = None) -> None:
        super().__init__()
        classes = probe_classes(cfg, classes)
        if in_dim % cfg.heads:
            raise ValueError(
                f"probe heads={cfg.heads} does not divide the encoder width {in_dim}; "
                "pick heads with width % heads == 0"
            )
        self.cfg = cfg
        hidden = int(in_dim * cfg.mlp_ratio)
        self.query = nn.Parameter(torch.zeros(1, 1, in_dim))  # [1, 1, D]
        self.blocks = nn.ModuleList(
            [Block(in_dim, cfg.heads, hidden, cfg.norm_eps, qkv_bias=True) for _ in range(cfg.depth)]
        )
        self.cross = CrossAttentionBlock(in_dim, cfg.heads, hidden, cfg.norm_eps)
        self.head = nn.Linear(in_dim, classes)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re)initialise every parameter from the torch RNG (module docstring)."""
        init_vit_weights(self, self.cfg.init_std)
        rescale_blocks(self.blocks)
        self.cross.mlp.fc2.weight.div_(math.sqrt(2.0 * max(self.cfg.depth, 1)))
        nn.init.trunc_normal_(self.query, mean=0.0, std=self.cfg.init_std, a=-2.0, b=2.0)

    def forward(self, tokens: Tensor) -> Tensor:
        """Frozen encoder tokens [B, N, in_dim] -> class logits [B, classes]."""
        x = tokens
        for block in self.blocks:
            x = block(x)
        q = self.cross(self.query.expand(x.shape[0], -1, -1), x)  # [B, 1, D]
        return self.head(q[:, 0])  # [B, classes]


def build(cfg: ProbeConfig, in_dim: int, classes: int | None = None) -> AttentiveProbe:
    """Build an attentive probe for tokens of width `in_dim` (classes: cfg.classes, else this argument)."""
    return AttentiveProbe(cfg, in_dim, classes)
