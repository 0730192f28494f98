"""Run under `torchrun --nproc_per_node=2`: FSDP2 gradients, a step, a DCP checkpoint and full weights."""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from engine.models.transformer import build
from engine.runtime import distributed
from engine.runtime.checkpoint import Checkpointer
from engine.runtime.parallel import parallelize
from engine.runtime.trainer import build_optimizer
from schemas.models import Transformer
from schemas.training import AdamW, Distributed

CONFIGS = {
    "dense": Transformer(dim=32, depth=2, heads=4, kv_heads=2),
    "moe": Transformer(dim=32, depth=2, heads=4, ffn={"kind": "moe", "experts": 4, "top_k": 2, "hidden": 32}),
}
VOCAB, BATCH, LENGTH = 11, 8, 12


def batch() -> torch.Tensor:
    """A fixed batch of token ids, the same on every rank and in the single-process reference."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, VOCAB, (BATCH, LENGTH), generator=g)


def loss_of(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy plus the auxiliary loss."""
    logits, aux = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)) + aux["aux_loss"]


def main(out: str, kind: str) -> None:
    """Shard, run forward/backward on this rank's half of the batch, save grads, step, checkpoint."""
    dist = distributed.init("cpu")
    torch.manual_seed(0)
    model = parallelize(build(CONFIGS[kind], VOCAB), Distributed(), dist)
    tokens = batch().chunk(dist.world)[dist.rank]
    loss_of(model, tokens).backward()
    grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
    if dist.main:
        torch.save(grads, f"{out}/grads.pt")
    optim = build_optimizer(AdamW(lr=1e-2, weight_decay=0.1), {"model": model})
    optim.step()
    Checkpointer(f"{out}/ckpt", keep_last=2, dist=dist).save(1, {"model": model}, optim, {"step": 1})
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.main:
        torch.save(full, f"{out}/full.pt")
    dist.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    sys.stdout.flush()
    os._exit(0)  # skip interpreter finalisation, as engine/__main__.py does under torchrun
