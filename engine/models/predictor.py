"""JEPA predictor (V-JEPA 2 / SALT): context tokens plus learned mask tokens through a narrow ViT with 3D RoPE.

The context tokens (encoder outputs at the kept indices) are projected to the predictor width, `Kt` copies of
one learned mask token (one per mask generator, zero-initialised) stand at the target indices, and both go
through bidirectional pre-LN blocks with 3D RoPE at their grid positions (same scheme as the encoder, from
the predictor's own head dim: 384 / 16 = 24 -> 8/8/8, nothing unrotated). Only the target positions are
normalised and projected to the output width (the teacher's width in SALT).

Parameters: `schemas.models.Predictor.params(in_dim, out_dim)` counts them from the config in pure Python;
tests compare it with this module's. With the paper's predictor (384, 12 blocks, 16 heads, MLP 1536,
2 mask tokens) and out_dim = the teacher's width (ViT-B for B, ViT-L for L/H/g/G) this is 21.886M / 22.083M / 22.181M / 22.230M / 22.329M for the
B / L / H / g / G students: the paper's 21.88 / 22.08 / 22.18 / 22.23 / 22.32M, truncated.

Init as the encoder (trunc-normal Linear weights, zero biases, LayerNorm 1/0, block i's output projections
divided by sqrt(2 * i)); the mask tokens are zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from schemas.models import Predictor as PredictorConfig

from .layers import rope3d_cos_sin
from .vit import ROPE_BASE, Block, init_vit_weights, rescale_blocks

__all__ = ["Predictor", "build"]


class Predictor(nn.Module):
    """Predicts target-token features [B, Kt, out_dim] from context tokens and the target indices."""

    def __init__(self, cfg: PredictorConfig, in_dim: int, out_dim: int, grid: tuple[int, int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.grid = tuple(grid)
        self.embed = nn.Linear(in_dim, cfg.dim)
        self.mask_tokens = nn.Parameter(torch.zeros(cfg.mask_tokens, cfg.dim))  # [m, d]
        self.blocks = nn.ModuleList(
            [Block(cfg.dim, cfg.heads, cfg.mlp, cfg.norm_eps, qkv_bias=True) for _ in range(cfg.depth)]
        )
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.proj = nn.Linear(cfg.dim, out_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """(Re)initialise every parameter from the torch RNG; mask tokens to zero (module docstring)."""
        init_vit_weights(self, self.cfg.init_std)
        rescale_blocks(self.blocks)
        with torch.no_grad():
            self.mask_tokens.zero_()

    def forward(self, ctx: Tensor, ctx_idx: Tensor, tgt_idx: Tensor, mask_id: int = 0) -> Tensor:
        """ctx [B, Kc, in_dim] at grid indices ctx_idx [B, Kc]; targets tgt_idx [B, Kt] -> [B, Kt, out_dim]."""
        if not 0 <= mask_id < self.cfg.mask_tokens:
            raise ValueError(f"mask_id {mask_id} out of range: the predictor has {self.cfg.mask_tokens}")
        B, Kc, _ = ctx.shape
        Kt = tgt_idx.shape[1]
        x = self.embed(ctx)  # [B, Kc, d]
        mask = self.mask_tokens[mask_id].to(x.dtype).expand(B, Kt, -1)  # [B, Kt, d]
        x = torch.cat([x, mask], dim=1)  # [B, Kc + Kt, d]
        idx = torch.cat([ctx_idx, tgt_idx], dim=1)  # [B, Kc + Kt]
        cos, sin = rope3d_cos_sin(idx, self.grid, self.cfg.head_dim, ROPE_BASE)  # [B, 1, Kc + Kt, 3c]
        for block in self.blocks:
            x = block(x, cos, sin)
        x = self.norm(x[:, Kc:])  # [B, Kt, d]: LayerNorm is per token, so only the targets need it
        return self.proj(x)  # [B, Kt, out_dim]


def build(cfg: PredictorConfig, in_dim: int, out_dim: int, grid: tuple[int, int, int]) -> Predictor:
    """Build a predictor reading `in_dim`-wide context tokens and predicting `out_dim`-wide targets."""
    return Predictor(cfg, in_dim, out_dim, grid)
