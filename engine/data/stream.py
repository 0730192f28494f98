"""Counter-based data: the examples of (seed, stage, step, rank) are a pure function of those four numbers."""

from __future__ import annotations

import zlib

import numpy as np

from .base import Examples, Generator

TRAIN, EVAL = 0, 1


def stage_key(stage: str) -> int:
    """A stable 32-bit key for a stage name (independent of the stage's position in the spec)."""
    return zlib.crc32(stage.encode())


def counter_rng(*key: int) -> np.random.Generator:
    """A Philox generator keyed by the given non-negative integers (no hidden state carries across calls)."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([int(k) for k in key])))


class Stream:
    """Training batches: `batch(step)` is this rank's share of the global batch of that step."""

    def __init__(self, gen: Generator, seed: int, stage: str, rank: int, per_rank: int):
        self.gen, self.seed, self.stage, self.rank, self.per_rank = gen, seed, stage_key(stage), rank, per_rank

    def batch(self, step: int) -> Examples:
        """The examples of `step` on this rank; the same whenever and however often it is asked for."""
        return self.gen.sample(counter_rng(self.seed, self.stage, TRAIN, step, self.rank), self.per_rank, "train")


def eval_examples(gen: Generator, seed: int, stage: str, split: str, length: int, n: int) -> Examples:
    """The fixed evaluation set for one length: the same n examples at every step and for every world size."""
    return gen.sample(counter_rng(seed, stage_key(stage), EVAL, length), n, split, length=length)
