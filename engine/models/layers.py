"""Shared building blocks: norms, rotary embeddings, (grouped-query) self-attention and dense MLPs."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------- norms


def make_norm(kind: Literal["rmsnorm", "layernorm"], dim: int, eps: float) -> nn.Module:
    """An RMSNorm (weight [dim]) or a LayerNorm (weight [dim] + bias [dim])."""
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"unknown norm kind {kind!r}; expected 'rmsnorm' or 'layernorm'")


# ----------------------------------------------------------------------------- rotary embeddings
#
# Rotate-half convention (GPT-NeoX / Llama-HF): the head dim is split into two halves [x1, x2] and
# channel i of the first half is paired with channel i of the second, rotated by angle pos * base^(-2i/hd):
#   rope(x) = x * cos + rotate_half(x) * sin,   rotate_half([x1, x2]) = [-x2, x1].
# No parameters and no buffers: the tables are computed from the position ids at each call, in float32.


def rope_cos_sin(positions: Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """cos and sin tables for position ids [L] or [B, L]: each [1, 1, L, hd] or [B, 1, L, hd], float32."""
    inv_freq = base ** (
        -torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    )
    angles = positions.to(torch.float32)[..., None] * inv_freq  # [..., L, hd/2]
    angles = torch.cat([angles, angles], dim=-1)  # [..., L, hd]
    if angles.dim() == 2:
        angles = angles[None]  # [1, L, hd]
    angles = angles[:, None]  # [B or 1, 1, L, hd], broadcasts over heads
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate queries or keys x [B, H, L, hd] by the tables of `rope_cos_sin` (computed in float32)."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (xf * cos + rotated * sin).type_as(x)


# ----------------------------------------------------------------------------- attention


class Attention(nn.Module):
    """Multi-head self-attention through SDPA, with grouped key/value heads (kv_heads divides heads)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        kv_heads: int | None = None,
        bias: bool = False,
        causal: bool = True,
        init_std: float = 0.02,
        out_std: float | None = None,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.kv_heads = kv_heads or heads
        self.head_dim = dim // heads
        self.causal = causal
        self.init_std = init_std
        self.out_std = init_std if out_std is None else out_std
        self.wq = nn.Linear(dim, dim, bias=bias)
        self.wk = nn.Linear(dim, self.kv_heads * self.head_dim, bias=bias)
        self.wv = nn.Linear(dim, self.kv_heads * self.head_dim, bias=bias)
        self.wo = nn.Linear(dim, dim, bias=bias)

    def init_weights(self) -> None:
        """Normal(0, init_std) projections, normal(0, out_std) output projection, zero biases."""
        for lin in (self.wq, self.wk, self.wv, self.wo):
            nn.init.normal_(lin.weight, mean=0.0, std=self.out_std if lin is self.wo else self.init_std)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor, cos: Tensor | None = None, sin: Tensor | None = None) -> Tensor:
        """x [B, L, dim] -> [B, L, dim]; RoPE is applied to q and k when cos/sin are given."""
        B, L, D = x.shape
        q = self.wq(x).view(B, L, self.heads, self.head_dim).transpose(1, 2)  # [B, H, L, hd]
        k = self.wk(x).view(B, L, self.kv_heads, self.head_dim).transpose(1, 2)  # [B, KV, L, hd]
        v = self.wv(x).view(B, L, self.kv_heads, self.head_dim).transpose(1, 2)  # [B, KV, L, hd]
        if cos is not None and sin is not None:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # query head h reads kv head h // (heads // kv_heads)
        gqa = self.kv_heads != self.heads
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=gqa)  # [B, H, L, hd]
        y = y.transpose(1, 2).reshape(B, L, D)
        return self.wo(y)


# ----------------------------------------------------------------------------- dense MLP


class MLP(nn.Module):
    """Dense feed-forward: GELU (w2(gelu(w1 x))) or SwiGLU (w2(silu(w1 x) * w3 x))."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        activation: Literal["gelu", "swiglu"] = "gelu",
        bias: bool = False,
        init_std: float = 0.02,
        out_std: float | None = None,
    ) -> None:
        super().__init__()
        if activation not in ("gelu", "swiglu"):
            raise ValueError(f"unknown activation {activation!r}; expected 'gelu' or 'swiglu'")
        self.activation = activation
        self.init_std = init_std
        self.out_std = init_std if out_std is None else out_std
        self.w1 = nn.Linear(dim, hidden, bias=bias)
        self.w3 = nn.Linear(dim, hidden, bias=bias) if activation == "swiglu" else None
        self.w2 = nn.Linear(hidden, dim, bias=bias)

    def init_weights(self) -> None:
        """Normal(0, init_std) input matrices, normal(0, out_std) output matrix, zero biases."""
        for lin in (self.w1, self.w3, self.w2):
            if lin is None:
                continue
            nn.init.normal_(lin.weight, mean=0.0, std=self.out_std if lin is self.w2 else self.init_std)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x [..., dim] -> [..., dim]."""
        if self.w3 is not None:
            return self.w2(F.silu(self.w1(x)) * self.w3(x))
        return self.w2(F.gelu(self.w1(x)))
