"""Video ViT encoder (V-JEPA 2 / SALT) built from a `schemas.models.ViT` config, and its pre-LN block.

A clip [B, C, T, H, W] is cut into tubelets of (tubelet, patch, patch) pixels by a Conv3d whose kernel equals
its stride; the t x h x w tokens are flattened in (t, h, w) order (flat index (ti * h + hi) * w + wi). There
is no CLS token. Positions are 3D RoPE on queries and keys (default, `layers.rope3d_cos_sin`) or a fixed
3D sin-cos table added after the patch embedding (`layers.sincos3d_table`, a non-persistent buffer).
`forward(video, keep)` runs the blocks on the kept token indices only: the masked tokens never enter them; a
list of keeps embeds the clip once and runs the blocks once per entry.

Parameters: `schemas.models.ViT.params()` counts them from the config in pure Python; tests compare it
with this module's.

Module names follow V-JEPA 2 (patch_embed.proj, blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
mlp.fc2}, norm) so that its checkpoints map by name (its RoPE pairing quirk aside, see layers.py).

Init (V-JEPA): Linear and Conv3d weights ~ trunc-normal(0, init_std) cut at +-2 (absolute, as timm), biases
0, LayerNorms 1/0; then block i's (1-based) attn.proj and mlp.fc2 weights are divided by sqrt(2 * i).
"""

from __future__ import annotations

import math
from typing import overload

import torch
from torch import Tensor, nn

from schemas.models import ViT as ViTConfig

from .layers import MLP, Attention, apply_rope3d, rope3d_cos_sin, sincos3d_table

__all__ = ["Block", "VisionTransformer", "build", "init_vit_weights", "rescale_blocks"]

ROPE_BASE = 10000.0


# ----------------------------------------------------------------------------- block


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp: int, eps: float, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, layout="vjepa", bias=qkv_bias, out_bias=True, rope=apply_rope3d)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp, bias=True, layout="vjepa")

    def forward(self, x: Tensor, cos: Tensor | None = None, sin: Tensor | None = None) -> Tensor:
        """x [B, L, dim] -> [B, L, dim]."""
        x = x + self.attn(self.norm1(x), cos=cos, sin=sin)
        return x + self.mlp(self.norm2(x))


# ----------------------------------------------------------------------------- init (shared with predictor, probe)


@torch.no_grad()
def init_vit_weights(module: nn.Module, std: float) -> None:
    """Trunc-normal(0, std) Linear and Conv3d weights, zero biases, LayerNorm weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv3d):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=std, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            m.reset_parameters()


@torch.no_grad()
def rescale_blocks(blocks: nn.ModuleList) -> None:
    """Divide entry i's (1-based) attn.proj and mlp.fc2 weights by sqrt(2 * i), looking through wrappers."""
    for layer_id, entry in enumerate(blocks, start=1):
        for block in entry.modules():  # an entry may be a checkpointing / compile / FSDP wrapper
            if isinstance(block, Block):
                block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
                block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))


# ----------------------------------------------------------------------------- encoder


class PatchEmbed(nn.Module):
    """Tubelet embedding: a Conv3d with kernel = stride = (tubelet, patch, patch)."""

    def __init__(self, channels: int, dim: int, tubelet: int, patch: int) -> None:
        super().__init__()
        kernel = (tubelet, patch, patch)
        self.proj = nn.Conv3d(channels, dim, kernel_size=kernel, stride=kernel)

    def forward(self, video: Tensor) -> Tensor:
        """Clip [B, C, T, H, W] -> tokens [B, t*h*w, dim], flattened in (t, h, w) order."""
        return self.proj(video).flatten(2).transpose(1, 2)  # [B, dim, t, h, w] -> [B, N, dim]


class VisionTransformer(nn.Module):
    """Video ViT: Conv3d tubelet embedding, positions (3D RoPE or sin-cos), `blocks`, final LayerNorm."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.channels, cfg.dim, cfg.tubelet, cfg.patch)
        self.pos_table: Tensor | None
        if cfg.position == "sincos":
            self.register_buffer("pos_table", sincos3d_table(cfg.dim, cfg.grid), persistent=False)  # [N, D]
        else:
            self.pos_table = None
        self.blocks = nn.ModuleList(
            [Block(cfg.dim, cfg.heads, cfg.mlp, cfg.norm_eps, cfg.qkv_bias) for _ in range(cfg.depth)]
        )
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.init_weights()

    def init_weights(self) -> None:
        """(Re)initialise every parameter from the torch RNG and recompute the sin-cos table (module docstring)."""
        init_vit_weights(self, self.cfg.init_std)
        rescale_blocks(self.blocks)
        if self.pos_table is not None:
            with torch.no_grad():
                self.pos_table.copy_(sincos3d_table(self.cfg.dim, self.cfg.grid))

    def grid_of(self, video: Tensor) -> tuple[int, int, int]:
        """The token grid (t, h, w) of a clip [B, C, T, H, W]; raises ValueError on a shape that does not tile."""
        cfg = self.cfg
        if video.dim() != 5 or video.shape[1] != cfg.channels:
            raise ValueError(f"expected a clip [B, {cfg.channels}, T, H, W], got shape {tuple(video.shape)}")
        T, H, W = video.shape[2:]
        if T % cfg.tubelet or H % cfg.patch or W % cfg.patch:
            raise ValueError(
                f"clip of {T} frames at {H}x{W} does not tile into tubelets of {cfg.tubelet} frames and "
                f"{cfg.patch}x{cfg.patch} patches"
            )
        grid = (T // cfg.tubelet, H // cfg.patch, W // cfg.patch)
        if self.pos_table is not None and grid != cfg.grid:
            raise ValueError(
                f"sin-cos positions are fixed to the grid {cfg.grid} ({cfg.frames} frames at "
                f"{cfg.resolution}px), got a clip with grid {grid}; use position: rope for other sizes"
            )
        return grid

    def embed(self, video: Tensor) -> Tensor:
        """Patch embedding only: clip [B, C, T, H, W] -> tokens [B, N, dim] in (t, h, w) order."""
        return self.patch_embed(video)

    @overload
    def forward(self, video: Tensor, keep: Tensor | None = None) -> Tensor: ...

    @overload
    def forward(self, video: Tensor, keep: list[Tensor]) -> list[Tensor]: ...

    def forward(self, video: Tensor, keep: Tensor | list[Tensor] | None = None) -> Tensor | list[Tensor]:
        """Clip [B, C, T, H, W] (+ kept token indices [B, K] into the t*h*w grid) -> [B, K or N, dim].

        `keep` may be a list of index tensors (one per mask): the clip is embedded once and the blocks run
        once per entry, returning a list in the same order. This stays one call of the root module, which is
        where FSDP2 gathers and frees the root's parameters (the patch embedding) around the forward.
        """
        grid = self.grid_of(video)
        x = self.embed(video)  # [B, N, D]
        if self.pos_table is not None:
            x = x + self.pos_table.to(x.dtype)  # [N, D] broadcast over the batch
        if isinstance(keep, list):
            if not keep:
                raise ValueError("keep is an empty list; give one [B, K] index tensor per mask, or None")
            return [self._blocks(x, k, grid) for k in keep]
        return self._blocks(x, keep, grid)

    def _blocks(self, x: Tensor, keep: Tensor | None, grid: tuple[int, int, int]) -> Tensor:
        """Embedded tokens [B, N, D] -> the blocks and final norm on the kept tokens (all when None)."""
        idx = torch.arange(x.shape[1], device=x.device)  # [N]
        if keep is not None:  # only the kept tokens enter the blocks, with the positions of their indices
            if keep.dim() != 2 or keep.shape[0] != x.shape[0]:
                raise ValueError(f"keep must be [B={x.shape[0]}, K] token indices, got {tuple(keep.shape)}")
            x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))  # [B, K, D]
            idx = keep  # [B, K]
        cos = sin = None
        if self.pos_table is None:
            cos, sin = rope3d_cos_sin(idx, grid, self.cfg.head_dim, ROPE_BASE)  # [B or 1, 1, L, 3c]
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.norm(x)


def build(cfg: ViTConfig) -> VisionTransformer:
    """Build the video ViT of a config."""
    return VisionTransformer(cfg)
