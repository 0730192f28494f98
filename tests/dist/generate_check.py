"""Run under `torchrun --nproc_per_node=2`: sampled completions of an FSDP2-sharded model, each rank drawing its
share of the (prompt, sample) rows 3 at a time; rank 0 saves every row's completion."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from engine.generate import Sampling, generate, sample_keys
from engine.models.transformer import build
from engine.runtime import distributed
from engine.runtime.parallel import parallelize
from schemas.models import Transformer
from schemas.training import Distributed

CONFIG = Transformer(
    dim=32, depth=2, heads=4, kv_heads=2, init_std=0.2, ffn={"kind": "moe", "experts": 4, "top_k": 2, "hidden": 32}
)
VOCAB, EOS, PAD = 40, 2, 0
SAMPLING = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=10)
ROWS = [(i, j) for i in range(6) for j in range(2)]  # 6 prompts x 2 samples


def prompts() -> list[np.ndarray]:
    """Six prompts of 3..9 tokens, the same everywhere."""
    rng = np.random.default_rng(0)
    return [rng.integers(3, VOCAB, size=int(rng.integers(3, 10))) for _ in range(6)]


def model() -> torch.nn.Module:
    """The seeded model (before sharding)."""
    torch.manual_seed(0)
    return build(CONFIG, VOCAB).eval()


def complete(m: torch.nn.Module, rows: list[tuple[int, int]], batch: int, dist) -> dict[str, list[int]]:
    """Completions of `rows`, `batch` sequences per generate call, keyed "i,j"."""
    ps, out = prompts(), {}
    for lo in range(0, len(rows), batch):
        part = rows[lo : lo + batch]
        keys = sample_keys(0, "stage", "check", np.array([i for i, _ in part]), np.array([j for _, j in part]))
        got = generate(
            m, [ps[i] for i, _ in part], SAMPLING, stop=[EOS], pad=PAD, device=dist.device, keys=keys,
            any_live=dist.any,
        )
        out.update({f"{i},{j}": c for (i, j), c in zip(part, got.tokens, strict=True)})
    return out


def main(out: str) -> None:
    """Each rank takes every other row (rank r: rows r, r+2, ...), 3 per call; rank 0 writes them all, with
    the all-gathers FSDP ran and each rank's decode steps per call."""
    from torch.distributed.fsdp._fully_shard import _fsdp_param_group as group

    dist = distributed.init("cpu")
    m = parallelize(model(), Distributed(), dist)
    gathers = [0]
    real = group.foreach_all_gather

    def counted(*args, **kwargs):
        gathers[0] += 1
        return real(*args, **kwargs)

    group.foreach_all_gather = counted
    steps: list[int] = []
    global generate
    plain = generate

    def recorded(*args, **kwargs):
        done = plain(*args, **kwargs)
        steps.append(done.steps)
        return done

    generate = recorded
    mine = complete(m, ROWS[dist.rank :: dist.world], 3, dist)
    merged = {k: v for part in dist.all_gather_object(mine) for k, v in part.items()}
    counts = dist.all_gather_object({"gathers": gathers[0], "steps": steps})
    if dist.main:
        with open(f"{out}/completions.json", "w") as f:
            json.dump(merged, f)
        with open(f"{out}/gathers.json", "w") as f:
            json.dump(counts, f)
    dist.close()


if __name__ == "__main__":
    main(sys.argv[1])
    sys.stdout.flush()
