"""Exact-match accuracy of the answer per input length, on fixed examples, split evenly over ranks."""

from __future__ import annotations

from functools import partial

import torch

from engine.data.base import Generator
from engine.data.stream import eval_examples
from engine.generate import greedy
from engine.objectives.base import Batch, Objective
from engine.runtime.distributed import Dist
from schemas.evals import AccuracyByLength as AccuracyByLengthConfig

from .sets import rank_share


def default_lengths(train: tuple[int, int], held_out: tuple[int, int]) -> list[int]:
    """Both ends of the training range and four lengths spread evenly over the held-out range."""
    lo, hi = held_out
    spread = [round(lo + i * (hi - lo) / 3) for i in range(4)]
    return sorted(set([train[0], train[1], *spread]))


class AccuracyByLength:
    """`acc/len_<L>` for each length, plus `acc/train` and `acc/eval`: the means over lengths in each range.

    Teacher-forced argmax at every answer token; an example is correct when all of them are. This equals
    greedy decoding of the answer: a greedy decoder emits the gold token at each answer position exactly when
    the teacher-forced argmax there is the gold token, given that all earlier ones were. A model that predicts
    its own position ids (PPC) is decoded instead (`engine.generate`, feeding back the ids it predicts, as at
    inference): teacher forcing would hand it the gold ids.
    """

    def __init__(
        self, cfg: AccuracyByLengthConfig, gen: Generator, data_cfg, seed: int, stage: str, dist: Dist
    ):
        self.cfg, self.gen, self.dist = cfg, gen, dist
        self.train_range = tuple(data_cfg.length.train)
        self.eval_range = tuple(data_cfg.length.eval)
        self.lengths = cfg.lengths or default_lengths(self.train_range, self.eval_range)
        self.sets = {}
        for n in self.lengths:  # every example of a share counts, those past `examples` too
            split = "train" if self.train_range[0] <= n <= self.train_range[1] else "eval"
            self.sets[n], _ = rank_share(
                partial(eval_examples, gen, seed, stage, split, n), cfg.examples, dist
            )

    @torch.no_grad()
    def __call__(self, objective: Objective, step: int) -> dict[str, float]:
        """Evaluate every length; every rank runs the same number of forward passes."""
        counts = torch.zeros(len(self.lengths), 2, dtype=torch.float64)
        decoded = getattr(objective.decoder(), "pos_head", None) is not None
        for i, n in enumerate(self.lengths):
            ex = self.sets[n]
            for start in range(0, len(ex), self.cfg.batch):
                if decoded:
                    examples = [ex[b] for b in range(start, min(start + self.cfg.batch, len(ex)))]
                    new = max(len(e.answer) for e in examples)
                    got = greedy(objective.decoder(), examples, new, self.gen, self.dist).tokens
                    counts[i, 0] += sum(g == e.answer.tolist() for g, e in zip(got, examples, strict=True))
                    counts[i, 1] += len(examples)
                    continue
                batch = Batch.from_examples(
                    ex.slice(start, min(start + self.cfg.batch, len(ex))), self.dist.device
                )
                logits, targets, mask, _ = objective.predict(batch)
                hit = torch.zeros_like(mask, dtype=torch.bool)
                hit[mask] = logits.argmax(-1) == targets
                correct = (hit | ~mask).all(dim=1)  # every answer token right
                counts[i, 0] += correct.sum().item()
                counts[i, 1] += correct.numel()
        self.dist.all_reduce(counts)
        acc = (counts[:, 0] / counts[:, 1]).tolist()
        out = {f"acc/len_{n}": a for n, a in zip(self.lengths, acc, strict=True)}
        for name, (lo, hi) in (("train", self.train_range), ("eval", self.eval_range)):
            inside = [a for n, a in zip(self.lengths, acc, strict=True) if lo <= n <= hi]
            if inside:
                out[f"acc/{name}"] = sum(inside) / len(inside)
        return out
