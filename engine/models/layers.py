"""Shared building blocks: norms, rotary embeddings (1D and 3D), sin-cos tables, attention, MLP."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from schemas.models import rope3d_chunk

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


# ----------------------------------------------------------------------------- 3D positions (video grids)
#
# A video of t x h x w tokens is flattened in (t, h, w) order: flat index n = (ti * h + hi) * w + wi.
#
# 3D RoPE (V-JEPA 2): each head's dim hd is split into three chunks of c = 2 * floor(floor(hd / 3) / 2)
# channels, rotated by the frame, row and column index respectively; the last hd - 3c channels are left
# as they are (hd 64 -> 20/20/20 + 4 unrotated). Within a chunk, pairs are INTERLEAVED: channels
# (2i, 2i+1) rotate together by angle pos * base^(-2i / c). This is the pairing V-JEPA 2 intends (its
# released code repeats the frequency table instead of interleaving it, a known quirk kept there for
# checkpoint compatibility); any fixed pairing gives the same relative-position property.


def grid_coords(idx: Tensor, grid: tuple[int, int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Flat token indices [...] of a (t, h, w) grid -> frame, row and column indices, each [...]."""
    _, h, w = grid
    return idx // (h * w), (idx // w) % h, idx % w


def rope3d_cos_sin(
    idx: Tensor, grid: tuple[int, int, int], head_dim: int, base: float = 10000.0
) -> tuple[Tensor, Tensor]:
    """cos and sin tables for flat indices [L] or [B, L]: each [1 or B, 1, L, 3c], float32, interleaved."""
    c = rope3d_chunk(head_dim)
    inv_freq = base ** (-torch.arange(0, c, 2, device=idx.device, dtype=torch.float32) / c)  # [c/2]
    coords = grid_coords(idx, grid)  # 3 x [..., L]
    angles = torch.cat([p.to(torch.float32)[..., None] * inv_freq for p in coords], dim=-1)  # [..., L, 3c/2]
    angles = angles.repeat_interleave(2, dim=-1)  # [..., L, 3c]: pair (2i, 2i+1) shares angle i
    if angles.dim() == 2:
        angles = angles[None]  # [1, L, 3c]
    angles = angles[:, None]  # [B or 1, 1, L, 3c], broadcasts over heads
    return angles.cos(), angles.sin()


def apply_rope3d(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first 3c channels of x [B, H, L, hd] by `rope3d_cos_sin` tables; the rest pass through."""
    n = cos.shape[-1]
    xr = x[..., :n].float()
    x1, x2 = xr.unflatten(-1, (-1, 2)).unbind(-1)  # each [B, H, L, n/2]: the two channels of each pair
    rotated = torch.stack([-x2, x1], dim=-1).flatten(-2)  # [B, H, L, n]
    out = (xr * cos + rotated * sin).type_as(x)
    return torch.cat([out, x[..., n:]], dim=-1) if n < x.shape[-1] else out


def sincos3d_table(dim: int, grid: tuple[int, int, int], base: float = 10000.0) -> Tensor:
    """Fixed 3D sin-cos absolute positions [t*h*w, dim] in (t, h, w) token order, float32.

    As V-JEPA's `get_3d_sincos_pos_embed(uniform_power=True)`: each axis (frame, row, column) gets
    a = 2 * ceil(dim / 6) channels, [sin(pos * f_i) | cos(pos * f_i)] with f_i = base^(-i / (a / 2)),
    concatenated and truncated to `dim`.
    """
    a = 2 * math.ceil(dim / 6)
    omega = base ** (-torch.arange(a // 2, dtype=torch.float64) / (a / 2))  # [a/2]
    idx = torch.arange(grid[0] * grid[1] * grid[2])
    parts = []
    for pos in grid_coords(idx, grid):
        angles = pos.to(torch.float64)[:, None] * omega  # [N, a/2]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=-1)[:, :dim].to(torch.float32)  # [N, dim]


# ----------------------------------------------------------------------------- KV cache (decoding)


class LayerCache:
    """One layer's keys and values for batched decoding, preallocated at the first write: [B, KV, S, hd].

    `start` is where the keys of the tokens being run go (the same column for every sequence: prompts are
    left-padded), `mask` [B, 1, L, start + L] says which cached keys each new query may read.
    """

    def __init__(self, size: int) -> None:
        self.size = size  # S: prompt + generated tokens at most
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.start = 0
        self.mask: Tensor | None = None

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write the new keys and values k, v [B, KV, L, hd] at `start`; all keys so far [B, KV, start+L, hd]."""
        B, KV, L, hd = k.shape
        if self.k is None:
            self.k = k.new_empty(B, KV, self.size, hd)
            self.v = v.new_empty(B, KV, self.size, hd)
        end = self.start + L
        if end > self.size:
            raise ValueError(f"the KV cache holds {self.size} tokens; cannot write up to {end}")
        self.k[:, :, self.start : end] = k
        self.v[:, :, self.start : end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class KVCache:
    """The caches of a model's layers for B sequences of at most `size` tokens, left-padded to a common column.

    Before each forward, `step(real)` is told which of the next L columns hold real tokens ([B, L] bool:
    False at left padding); it sets every layer's write column and attention mask.
    """

    def __init__(self, layers: int, batch: int, size: int, device: torch.device) -> None:
        self.layers = [LayerCache(size) for _ in range(layers)]
        self.real = torch.zeros(batch, size, dtype=torch.bool, device=device)  # columns holding real tokens
        self.length = 0  # columns written so far

    def step(self, real: Tensor) -> None:
        """Prepare the next forward over L new columns, `real` [B, L] marking the non-padding ones."""
        start, L = self.length, real.shape[1]
        self.real[:, start : start + L] = real
        col = torch.arange(start + L, device=real.device)
        row = torch.arange(start, start + L, device=real.device)
        causal = col[None, :] <= row[:, None]  # [L, start + L]: query i reads keys up to its own column
        mask = self.real[:, None, None, : start + L] & causal  # [B, 1, L, start + L]
        # a padding query reads itself, so that no row of the mask is empty (its output is never used)
        mask = mask | (col[None, :] == row[:, None])
        for layer in self.layers:
            layer.start, layer.mask = start, mask
        self.length = start + L


# ----------------------------------------------------------------------------- attention
#
# Parameter layouts, named as the checkpoints each model loads:
#   "llama" (token transformer): wq, wk, wv, wo, one projection each
#   "vjepa" (ViT, predictor, probe): self-attention fused qkv and proj; cross-attention q and fused kv, and
#           no output projection with out_proj=False (V-JEPA 2's attentive pooler)


class Attention(nn.Module):
    """Multi-head self- or cross-attention through SDPA: causal or not, RoPE on q and k, grouped kv heads.

    `kv_heads` divides `heads` (llama layout only). `bias` is for the q/k/v projections, `out_bias` (default
    `bias`) for the output one, which `out_proj=False` leaves out. `rope` rotates q and k by the tables given
    to forward (`apply_rope`, or `apply_rope3d` with `rope3d_cos_sin` tables).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        kv_heads: int | None = None,
        layout: Literal["llama", "vjepa"] = "llama",
        cross: bool = False,
        causal: bool = False,
        bias: bool = False,
        out_bias: bool | None = None,
        out_proj: bool = True,
        rope: Callable[[Tensor, Tensor, Tensor], Tensor] = apply_rope,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.kv_heads = kv_heads or heads
        self.head_dim = dim // heads
        self.layout = layout
        self.cross = cross
        self.causal = causal
        self.rope = rope
        self.out_proj = out_proj
        out_bias = bias if out_bias is None else out_bias
        if layout == "llama":
            kv_dim = self.kv_heads * self.head_dim
            self.wq = nn.Linear(dim, dim, bias=bias)
            self.wk = nn.Linear(dim, kv_dim, bias=bias)
            self.wv = nn.Linear(dim, kv_dim, bias=bias)
            if out_proj:
                self.wo = nn.Linear(dim, dim, bias=out_bias)
        elif layout == "vjepa":
            if self.kv_heads != heads:
                raise ValueError("grouped kv heads need the 'llama' layout (separate k and v projections)")
            if cross:
                self.q = nn.Linear(dim, dim, bias=bias)
                self.kv = nn.Linear(dim, 2 * dim, bias=bias)
            else:
                self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
            if out_proj:
                self.proj = nn.Linear(dim, dim, bias=out_bias)
        else:
            raise ValueError(f"unknown attention layout {layout!r}; expected 'llama' or 'vjepa'")

    def forward(
        self,
        x: Tensor,
        ctx: Tensor | None = None,
        cos: Tensor | None = None,
        sin: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        """x [B, L, dim] attends to itself, or to ctx [B, S, dim] if cross -> [B, L, dim].

        q and k are rotated by `rope` when the tables cos, sin are given (self-attention: one set of positions).
        With a `cache` (causal self-attention, decoding), x holds the new tokens only: their keys and values are
        appended to the cache and the queries attend to every cached key that `cache.mask` allows.
        """
        if (ctx is not None) != self.cross:
            raise ValueError("cross-attention takes ctx, self-attention does not")
        B, L, D = x.shape
        src = x if ctx is None else ctx  # keys and values come from here
        S = src.shape[1]
        H, KV, hd = self.heads, self.kv_heads, self.head_dim
        if self.layout == "llama":
            q = self.wq(x).view(B, L, H, hd).transpose(1, 2)  # [B, H, L, hd]
            k = self.wk(src).view(B, S, KV, hd).transpose(1, 2)  # [B, KV, S, hd]
            v = self.wv(src).view(B, S, KV, hd).transpose(1, 2)  # [B, KV, S, hd]
        elif self.cross:
            q = self.q(x).view(B, L, H, hd).transpose(1, 2)  # [B, H, L, hd]
            k, v = self.kv(src).view(B, S, 2, H, hd).permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, S, hd]
        else:
            qkv = self.qkv(x).view(B, L, 3, H, hd).permute(2, 0, 3, 1, 4)  # [3, B, H, L, hd]
            q, k, v = qkv.unbind(0)  # each [B, H, L, hd]
        if cos is not None and sin is not None:
            q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        # y [B, H, L, hd]; with grouped kv heads, query head h reads kv head h // (heads // kv_heads)
        if cache is not None:
            k, v = cache.extend(k, v)  # [B, KV, start + L, hd]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=cache.mask, enable_gqa=KV != H)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=KV != H)
        y = y.transpose(1, 2).reshape(B, L, D)  # [B, L, dim]
        if not self.out_proj:
            return y
        return self.wo(y) if self.layout == "llama" else self.proj(y)


# ----------------------------------------------------------------------------- MLP


class MLP(nn.Module):
    """Feed-forward: down(gelu(up x)), or gated with SiLU (SwiGLU): down(silu(up x) * gate x).

    Names by layout: "llama" w1 (up), w3 (gate), w2 (down); "vjepa" (timm's Mlp) fc1 (up), fc2 (down), never gated.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        activation: Literal["gelu", "swiglu"] = "gelu",
        bias: bool = False,
        layout: Literal["llama", "vjepa"] = "llama",
    ) -> None:
        super().__init__()
        if activation not in ("gelu", "swiglu"):
            raise ValueError(f"unknown activation {activation!r}; expected 'gelu' or 'swiglu'")
        self.layout = layout
        if layout == "llama":
            self.w1 = nn.Linear(dim, hidden, bias=bias)
            self.w3 = nn.Linear(dim, hidden, bias=bias) if activation == "swiglu" else None
            self.w2 = nn.Linear(hidden, dim, bias=bias)
        elif layout == "vjepa":
            if activation != "gelu":
                raise ValueError("the 'vjepa' MLP layout (fc1, fc2) has no gate; use activation 'gelu'")
            self.fc1 = nn.Linear(dim, hidden, bias=bias)
            self.fc2 = nn.Linear(hidden, dim, bias=bias)
        else:
            raise ValueError(f"unknown MLP layout {layout!r}; expected 'llama' or 'vjepa'")

    def forward(self, x: Tensor) -> Tensor:
        """x [..., dim] -> [..., dim]."""
        if self.layout == "vjepa":
            return self.fc2(F.gelu(self.fc1(x)))
        if self.w3 is not None:
            return self.w2(F.silu(self.w1(x)) * self.w3(x))
        return self.w2(F.gelu(self.w1(x)))
