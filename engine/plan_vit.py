"""Exact parameter counts of the video ViT, the JEPA predictor and the attentive probe, in pure Python.

Each equals `sum(p.numel() for p in module.parameters())` of the module that `engine.models.vit`,
`engine.models.predictor` and `engine.models.probe` build from the same config (layouts in their docstrings).
"""

from __future__ import annotations

from schemas.models import AttentiveProbe, Predictor, ViT

__all__ = ["block_params", "predictor_params", "probe_classes", "probe_params", "vit_params"]


def block_params(dim: int, mlp: int, qkv_bias: bool = True) -> int:
    """One pre-LN block: two LayerNorms, qkv (+ bias), proj + bias, GELU MLP fc1 + bias, fc2 + bias."""
    norms = 2 * 2 * dim
    attn = dim * 3 * dim + (3 * dim if qkv_bias else 0) + dim * dim + dim
    mlp_ = dim * mlp + mlp + mlp * dim + dim
    return norms + attn + mlp_


def vit_params(cfg: ViT) -> int:
    """Video ViT: Conv3d patch embedding, `depth` blocks, final LayerNorm (sin-cos positions are a buffer)."""
    patch_embed = cfg.patch_dim * cfg.dim + cfg.dim
    return patch_embed + cfg.depth * block_params(cfg.dim, cfg.mlp, cfg.qkv_bias) + 2 * cfg.dim


def predictor_params(cfg: Predictor, in_dim: int, out_dim: int) -> int:
    """Predictor: input Linear, mask tokens, `depth` blocks, LayerNorm, output Linear (biases throughout)."""
    d = cfg.dim
    embed = in_dim * d + d
    blocks = cfg.depth * block_params(d, cfg.mlp, qkv_bias=True)
    return embed + cfg.mask_tokens * d + blocks + 2 * d + d * out_dim + out_dim


def probe_classes(cfg: AttentiveProbe, classes: int | None = None) -> int:
    """The probe's number of classes: cfg.classes if set, else `classes` (the data's); ValueError if neither."""
    if cfg.classes is not None:
        return cfg.classes
    if classes is None:
        raise ValueError("the probe needs a number of classes: set probe.classes or pass the data's classes")
    return classes


def probe_params(cfg: AttentiveProbe, in_dim: int, classes: int | None = None) -> int:
    """Attentive probe: query token, `depth` self-attention blocks, cross-attention block, linear head."""
    D, h, c = in_dim, int(in_dim * cfg.mlp_ratio), probe_classes(cfg, classes)
    cross = 2 * 2 * D + (D * D + D) + (2 * D * D + 2 * D) + (D * h + h + h * D + D)
    return D + cfg.depth * block_params(D, h, qkv_bias=True) + cross + D * c + c
