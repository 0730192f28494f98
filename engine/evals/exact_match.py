"""Exact-match accuracy of the answer per data split, on fixed examples, split evenly over ranks."""

from __future__ import annotations

import math

import torch

from engine.data.base import Generator
from engine.data.stream import eval_examples
from engine.objectives.base import Batch
from engine.runtime.distributed import Dist
from schemas.evals import ExactMatch as ExactMatchConfig


class ExactMatch:
    """`acc/<split>` for each configured split: the fraction of examples whose every answer token is right.

    Teacher-forced argmax at every answer token, which equals greedy decoding of the answer (see
    AccuracyByLength). For tasks with many correct answers (any shortest path, any valid trace) this is the
    stricter match against the generator's own answer; sampling plus the generator's `verify` is the other.
    """

    def __init__(self, cfg: ExactMatchConfig, gen: Generator, data_cfg, seed: int, stage: str, dist: Dist):
        self.cfg, self.dist = cfg, dist
        per_rank = math.ceil(cfg.examples / dist.world)  # equal counts: FSDP forwards are collectives
        known = getattr(data_cfg, "SPLITS", cfg.splits)
        unknown = [split for split in cfg.splits if split not in known]
        if unknown:  # the spec validator says so first; this guards direct use
            raise ValueError(f"exact_match: no split {unknown}; the data's splits are {list(known)}")
        self.sets = {}
        for split in cfg.splits:
            full = eval_examples(gen, seed, stage, split, None, per_rank * dist.world)
            self.sets[split] = full.slice(dist.rank * per_rank, (dist.rank + 1) * per_rank)

    @torch.no_grad()
    def __call__(self, objective, step: int) -> dict[str, float]:
        """Evaluate every split; every rank runs the same number of forward passes."""
        counts = torch.zeros(len(self.sets), 2, dtype=torch.float64)
        for i, ex in enumerate(self.sets.values()):
            for start in range(0, len(ex), self.cfg.batch):
                part = ex.slice(start, min(start + self.cfg.batch, len(ex)))
                logits, targets, mask, _ = objective.predict(Batch.from_examples(part, self.dist.device))
                hit = torch.zeros_like(mask, dtype=torch.bool)
                hit[mask] = logits.argmax(-1) == targets
                correct = (hit | ~mask).all(dim=1)  # every answer token right
                counts[i, 0] += correct.sum().item()
                counts[i, 1] += correct.numel()
        self.dist.all_reduce(counts)
        return {
            f"acc/{split}": float(c / t) for split, (c, t) in zip(self.sets, counts.tolist(), strict=True)
        }
