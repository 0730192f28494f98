"""Run under `torchrun --nproc_per_node=2`: save two checkpoints, damage rank 1's newer shard, restore."""

from __future__ import annotations

import json
import logging
import os
import sys

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from engine.models.transformer import build
from engine.runtime import checkpoint, distributed
from engine.runtime.checkpoint import Checkpointer
from engine.runtime.parallel import parallelize
from engine.runtime.trainer import build_optimizer
from schemas.models import Transformer
from schemas.training import AdamW, Distributed

VOCAB = 11


def record(calls: list[str], fn):
    """Wrap a checkpoint function of a file URL to note which files this rank read."""

    def wrapped(url, *args):
        calls.append(url.rsplit("/", 1)[-1])
        return fn(url, *args)

    return wrapped


def step(model: torch.nn.Module, optim: torch.optim.Optimizer, seed: int) -> None:
    """One optimizer step on a random batch (the same on both ranks)."""
    tokens = torch.randint(0, VOCAB, (4, 8), generator=torch.Generator().manual_seed(seed))
    logits, _ = model(tokens[:, :-1])
    torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)).backward()
    optim.step()
    optim.zero_grad()


def full(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Consolidated weights (every rank takes part)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def main(out: str) -> None:
    """Save steps 1 and 2, flip a bit in rank 1's shard of step 2, restore a fresh model on both ranks."""
    dist = distributed.init("cpu")
    logging.basicConfig(
        level=logging.INFO if dist.main else logging.WARNING, format="%(message)s", force=True
    )
    hashed: list[str] = []
    verified: list[str] = []
    checkpoint.checksum_file = record(hashed, checkpoint.checksum_file)
    checkpoint.check_file = record(verified, checkpoint.check_file)
    cfg = Transformer(dim=32, depth=2, heads=4)
    torch.manual_seed(0)
    model = parallelize(build(cfg, VOCAB), Distributed(), dist)
    optim = build_optimizer(AdamW(lr=1e-2), {"model": model})
    ck = Checkpointer(f"{out}/ckpt", keep_last=3, dist=dist, name="train")
    for s in (1, 2):
        step(model, optim, s)
        ck.save(s, {"model": model}, optim, {"stage": "train"})
        if s == 1:
            at_1 = full(model)
    saved = list(hashed)
    dist.barrier()
    if dist.main:
        torch.save(at_1, f"{out}/step1.pt")
        shard = f"{out}/ckpt/step-00000002/__1_0.distcp"
        data = bytearray(open(shard, "rb").read())
        data[len(data) // 2] ^= 0x01
        open(shard, "wb").write(data)
    dist.barrier()
    torch.manual_seed(123)
    fresh = parallelize(build(cfg, VOCAB), Distributed(), dist)
    fresh_optim = build_optimizer(AdamW(lr=1e-2), {"model": fresh})
    state = ck.restore({"model": fresh}, fresh_optim)
    weights = full(fresh)
    if dist.main:
        torch.save(weights, f"{out}/restored.pt")
    with open(f"{out}/rank{dist.rank}.json", "w") as f:
        json.dump({"step": state["step"], "hashed": saved, "verified": verified}, f)
    dist.close()


if __name__ == "__main__":
    main(sys.argv[1])
    sys.stdout.flush()
    os._exit(0)  # skip interpreter finalisation, as engine/__main__.py does under torchrun
