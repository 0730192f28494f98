"""Exact-match accuracy of the answer per data split, on fixed examples, split evenly over ranks."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from engine.data.base import Examples, Generator, UnknownSplit
from engine.data.stream import eval_examples
from engine.objectives.base import Batch, Objective
from engine.runtime.distributed import Dist
from schemas.evals import ExactMatch as ExactMatchConfig

from .sets import rank_share


def _pool(gen: Generator, split: str) -> Examples | None:
    """The generator's fixed pool of `split`, or None when the split is drawn afresh."""
    pool = getattr(gen, "pool", None)
    if pool is None:
        return None
    try:
        return pool(split)
    except UnknownSplit:  # a split without a pool (e.g. train)
        return None


def _repeat_last(pool: Examples, real: int, n: int) -> Examples:
    """The first `real` members of `pool`, then its member `real - 1` repeated, n in all."""
    return pool.take(np.minimum(np.arange(n), real - 1))


def fixed_sets(
    splits: list[str], examples: int, gen: Generator, data_cfg, seed: int, stage: str, dist: Dist
) -> dict[str, tuple[Examples, int]]:
    """Per split, this rank's share of a fixed evaluation set and how many of its examples count.

    Every rank gets the same number of examples (FSDP forwards are collectives). A split that is a finite pool
    gives its first `examples` members, each counted once (padding copies of the last member do not count);
    any other split draws `examples` from the counter-keyed eval stream.
    """
    known = getattr(data_cfg, "SPLITS", splits)
    unknown = [split for split in splits if split not in known]
    if unknown:  # the spec validator says so first; this guards direct use
        raise ValueError(f"no split {unknown}; the data's splits are {list(known)}")
    sets = {}
    for split in splits:
        pool = _pool(gen, split)
        if pool is None:
            sets[split] = rank_share(partial(eval_examples, gen, seed, stage, split, None), examples, dist)
        else:
            real = min(examples, len(pool))
            sets[split] = rank_share(partial(_repeat_last, pool, real), real, dist)
    return sets


class ExactMatch:
    """`acc/<split>` for each configured split: the fraction of examples whose every answer token is right.

    Teacher-forced argmax at every answer token, which equals greedy decoding of the answer (see
    AccuracyByLength). For tasks with many correct answers (any shortest path, any valid trace) this is the
    stricter match against the generator's own answer; the `verified` evaluator (greedy decoding scored by the
    generator's verifier) is the lenient one.

    A split that is a fixed finite pool (the generator's `pool(split)`, e.g. RL-Wall's 512 test prompts) is
    scored on its first `examples` members, each once; otherwise `examples` are drawn from the split.
    """

    def __init__(self, cfg: ExactMatchConfig, gen: Generator, data_cfg, seed: int, stage: str, dist: Dist):
        self.cfg, self.dist = cfg, dist
        self.sets = fixed_sets(cfg.splits, cfg.examples, gen, data_cfg, seed, stage, dist)
        # A generator that knows how well its sources do (kg_experts: the best single expert) is logged beside.
        self.reference = {}
        for split in cfg.splits if hasattr(gen, "best_expert_accuracy") else []:
            try:
                self.reference[split] = float(gen.best_expert_accuracy(split))
            except ValueError:  # a split without queries (training text)
                pass

    @torch.no_grad()
    def __call__(self, objective: Objective, step: int) -> dict[str, float]:
        """Evaluate every split; every rank runs the same number of forward passes."""
        counts = torch.zeros(len(self.sets), 2, dtype=torch.float64)
        for i, (ex, real) in enumerate(self.sets.values()):
            for start in range(0, len(ex), self.cfg.batch):
                part = ex.slice(start, min(start + self.cfg.batch, len(ex)))
                logits, targets, mask, _ = objective.predict(Batch.from_examples(part, self.dist.device))
                hit = torch.zeros_like(mask, dtype=torch.bool)
                hit[mask] = logits.argmax(-1) == targets
                correct = (hit | ~mask).all(dim=1)[: max(0, real - start)]  # every answer token right
                counts[i, 0] += correct.sum().item()
                counts[i, 1] += correct.numel()
        self.dist.all_reduce(counts)
        out = {f"acc/{split}": float(c / t) for split, (c, t) in zip(self.sets, counts.tolist(), strict=True)}
        out.update({f"best_expert/{split}": acc for split, acc in self.reference.items()})
        return out
