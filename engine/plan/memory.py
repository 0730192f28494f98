"""Memory per rank under FSDP: sharded fp32 state, gathered compute-dtype parameters, block activations."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.models import ParamCount
from schemas.spec import ProbeStage, Resources, TrainStage


@dataclass(frozen=True)
class Memory:
    """Estimated peak bytes per rank under FSDP (an estimate: allocator overhead and buffers are ignored)."""

    estimate: bool
    shards: int  # ranks the fp32 state is sharded over (world under FSDP, else 1)
    bytes_per_el: int  # compute dtype: 2 (bf16) or 4 (fp32)
    micro_batch: int
    seq_len: int  # T_max: the data's longest example
    activation_checkpointing: bool
    params: int  # fp32 master weights, sharded
    grads: int  # fp32 gradients, sharded
    optimizer: int  # AdamW: 2 fp32 states; SGD: momentum buffer or nothing
    gathered: int  # compute-dtype unsharded copies held during forward/backward
    activations: int  # one micro-batch of block activations plus fp32 logits and their gradient
    total: int


def memory_of_nothing() -> Memory:
    """No training state (an evaluate stage): the models' weights are what it holds."""
    return Memory(False, 1, 4, 0, 0, False, 0, 0, 0, 0, 0, 0)


def compute_bytes(stage: TrainStage | ProbeStage, resources: Resources) -> int:
    """Bytes per element of the compute dtype: 2 for bf16 (or auto on CUDA), else 4."""
    precision = stage.distributed.precision
    return 2 if precision == "bf16" or (precision == "auto" and resources.device == "cuda") else 4


def memory(
    stage: TrainStage | ProbeStage,
    resources: Resources,
    *,
    trained: int,
    frozen: int,
    gathered_params: int,
    seq_len: int,
    dim: int,
    depth: int,
    extra_activations: int = 0,
    micro: int | None = None,
) -> Memory:
    """Sharded fp32 state, compute-dtype gathered parameters and one micro-batch of block activations.

    Activations follow Korthikanti et al. (2022) with flash/SDPA attention (no s^2 term): 34*s*b*h bytes per
    layer at 16 bit; with activation checkpointing, the saved block inputs plus one block being recomputed.
    """
    world = resources.world
    sharded = stage.distributed.fsdp and world > 1
    shards = world if sharded else 1
    el = compute_bytes(stage, resources)
    states = 2 if stage.optim.kind == "adamw" else (1 if stage.optim.momentum > 0 else 0)
    micro = micro or stage.batch.micro or stage.batch.global_ // world
    tokens = micro * seq_len
    per_block = 34 * tokens * dim * el // 2
    if stage.distributed.activation_checkpointing:
        blocks = 2 * tokens * dim * depth * el + per_block
    else:
        blocks = per_block * depth
    activations = blocks + extra_activations
    gathered = el * gathered_params if sharded else 0
    p, g, o = 4 * (trained + frozen) // shards, 4 * trained // shards, 4 * states * trained // shards
    return Memory(
        estimate=True,
        shards=shards,
        bytes_per_el=el,
        micro_batch=micro,
        seq_len=seq_len,
        activation_checkpointing=stage.distributed.activation_checkpointing,
        params=p,
        grads=g,
        optimizer=o,
        gathered=gathered,
        activations=activations,
        total=p + g + o + gathered + activations,
    )


def memory_per_rank(stage: TrainStage, resources: Resources, params: ParamCount, vocab_size: int) -> Memory:
    """Estimate the peak memory of one rank of a transformer stage (an estimate; allocator overhead ignored)."""
    cfg = stage.model
    # Blocks in flight: the current one and the prefetched next; without resharding after forward, every
    # block stays gathered until its backward. The root's parameters (embeddings, lm_head, final norm) stay
    # gathered from forward through backward (FSDP2 never reshards the root).
    held = min(2, cfg.depth) if stage.distributed.reshard_after_forward else cfg.depth
    micro = stage.batch.micro or stage.batch.global_ // resources.world
    t_max = stage.data.max_seq_len()
    return memory(
        stage,
        resources,
        trained=params.total,
        frozen=0,
        gathered_params=held * params.largest_block + params.root,
        seq_len=t_max,
        dim=cfg.dim,
        depth=cfg.depth,
        extra_activations=micro * t_max * vocab_size * 4 * 2,  # fp32 logits and their gradient
    )
