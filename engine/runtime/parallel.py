"""Sharding and precision: activation checkpointing and torch.compile per block, FSDP2 per block then root."""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from schemas.training import Distributed

from .distributed import Dist

# nn.Linear on a 3D input returns a view, so FSDP2 warns for every module ending in one (the JEPA predictor)
# that an in-place op on the output would skip its pre-backward hook. No engine code modifies a module's
# output in place, so the warning says nothing here; it would print once per rank and stage.
warnings.filterwarnings(
    "ignore", message=r"FSDP2-wrapped module .* returned a view tensor", category=UserWarning
)


def bf16(cfg: Distributed, dist: Dist) -> bool:
    """Whether the stage computes in bf16 (explicitly, or `auto` on CUDA)."""
    return cfg.precision == "bf16" or (cfg.precision == "auto" and dist.device.type == "cuda")


def parallelize(model: nn.Module, cfg: Distributed, dist: Dist, frozen: bool = False) -> nn.Module:
    """Activation checkpointing and torch.compile per block, then FSDP2 per block and on the root.

    A `frozen` model (a teacher) is put in eval mode without gradients and is never checkpointed in
    backward (it has none); it is still sharded, so that its memory is split over the ranks too.
    """
    if frozen:
        model.eval().requires_grad_(False)
    blocks = getattr(model, "blocks", None)
    if blocks is not None:
        for i, block in enumerate(blocks):
            if cfg.activation_checkpointing and not frozen:
                from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

                block = checkpoint_wrapper(block)
            if cfg.compile:
                block = torch.compile(block)
            blocks[i] = block
    if dist.distributed and cfg.fsdp:
        mp = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if bf16(cfg, dist)
            else MixedPrecisionPolicy()
        )
        for block in blocks or []:
            fully_shard(block, mesh=dist.mesh, reshard_after_forward=cfg.reshard_after_forward, mp_policy=mp)
        fully_shard(model, mesh=dist.mesh, reshard_after_forward=cfg.reshard_after_forward, mp_policy=mp)
    else:
        model.to(dist.device)
    return model


def autocast(cfg: Distributed, dist: Dist, sharded: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast for unsharded models (FSDP2's mixed-precision policy covers sharded ones)."""
    if bf16(cfg, dist) and not sharded:
        return torch.autocast(dist.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
