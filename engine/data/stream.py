"""Counter-based data: the examples of (seed, stage, step, rank) are a pure function of those four numbers."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

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
    """Training batches: `batch(step)` is this rank's share of the global batch of that step.

    `augment(rng, examples)` (e.g. an objective's mask sampler) draws from the same counter-keyed generator
    right after the examples, so everything random about a step is a pure function of the step.
    """

    def __init__(
        self,
        gen: Generator,
        seed: int,
        stage: str,
        rank: int,
        per_rank: int,
        augment: Callable[[np.random.Generator, Any], Any] | None = None,
    ):
        self.gen, self.seed, self.stage, self.rank, self.per_rank = (
            gen,
            seed,
            stage_key(stage),
            rank,
            per_rank,
        )
        self.augment = augment

    def batch(self, step: int) -> Examples:
        """The examples of `step` on this rank; the same whenever and however often it is asked for."""
        rng = counter_rng(self.seed, self.stage, TRAIN, step, self.rank)
        examples = self.gen.sample(rng, self.per_rank, "train")
        return examples if self.augment is None else self.augment(rng, examples)


EVAL_CHUNK = 64  # evaluation examples drawn per counter key


def eval_examples(gen: Generator, seed: int, stage: str, split: str, length: int | None, n: int) -> Examples:
    """The fixed evaluation set of a split (at one length, when given): the same at every step and world size.

    Examples are drawn in chunks of `EVAL_CHUNK`, each keyed by its index, so the first m of n examples do not
    depend on n: a world size that rounds n up (to split it evenly over ranks) only appends examples. Without
    a length, the key holds the split's name instead (offset past any length), so splits draw independently.
    """
    chunks = max(1, -(-n // EVAL_CHUNK))
    which = length if length is not None else 2**32 + stage_key(split)
    parts = [
        gen.sample(counter_rng(seed, stage_key(stage), EVAL, which, c), EVAL_CHUNK, split, length=length)
        for c in range(chunks)
    ]
    return _concat(parts, gen.vocab.pad).slice(0, n)


def _cat_meta(arrays: list[np.ndarray]) -> np.ndarray:
    """Per-example metadata of several parts, stacked; per-token arrays ([n, L, ...]) of different widths L
    are right-padded with -1 (integers) or False, as `sources` and `target_positions` are."""
    if arrays[0].ndim < 2 or len({a.shape[1] for a in arrays}) == 1:
        return np.concatenate(arrays)
    width = max(a.shape[1] for a in arrays)
    fill = False if arrays[0].dtype == bool else -1
    pads = [((0, 0), (0, width - a.shape[1])) + ((0, 0),) * (a.ndim - 2) for a in arrays]
    return np.concatenate([np.pad(a, w, constant_values=fill) for a, w in zip(arrays, pads, strict=True)])


def _concat(parts: list[Examples], pad: int) -> Examples:
    """The examples of `parts` in order, right-padded (tokens with `pad`) to the widest part."""
    width = max(p.tokens.shape[1] for p in parts)

    def cat(arrays: list[np.ndarray], value: int | bool) -> np.ndarray:
        padded = [np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=value) for a in arrays]
        return np.concatenate(padded)

    positions = None if parts[0].positions is None else cat([p.positions for p in parts], 0)
    meta = {k: _cat_meta([p.meta[k] for p in parts]) for k in parts[0].meta}
    return Examples(
        cat([p.tokens for p in parts], pad),
        cat([p.loss_mask for p in parts], False),
        np.concatenate([p.lengths for p in parts]),
        positions,
        meta,
    )
