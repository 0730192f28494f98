"""Counter-based data: the examples of a step are a pure function of (seed, stage, step, global example index).

The global batch of a step is cut into chunks of `chunk` consecutive examples; chunk c is drawn by a generator
keyed by (seed, stage, step, c), and a rank takes its rows of the chunks that cover them. So every world size
trains on the same global batch, a run resumed on another world size continues the same stream, and a generator
still draws many examples per call (its vectorised cost is paid per chunk, not per example).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import Examples, Generator, cat_meta

TRAIN, EVAL, AUGMENT = 0, 1, 2
LABELLED, EPOCH = 3, 4  # a probe's fixed labelled set and the order of its epochs (engine/data/pool.py)
CHUNK = 16  # examples per counter key, unless the generator says otherwise (`Generator.chunk`)


def stage_key(stage: str) -> int:
    """A stable 32-bit key for a stage name (independent of the stage's position in the spec)."""
    return zlib.crc32(stage.encode())


def counter_rng(*key: int) -> np.random.Generator:
    """A Philox generator keyed by the given non-negative integers (no hidden state carries across calls)."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([int(k) for k in key])))


def chunk_size(gen: Generator) -> int:
    """Examples per counter key for a generator: its own `chunk` (1 for per-example generators), else CHUNK."""
    return int(getattr(gen, "chunk", CHUNK))


def sample_chunks(gen: Generator, rngs: list[np.random.Generator], n: int, split: str) -> Any:
    """n examples from each generator in `rngs`, joined in order (a generator may batch the work itself)."""
    own = getattr(gen, "sample_chunks", None)
    if own is not None:
        return own(rngs, n, split)
    return join([gen.sample(rng, n, split) for rng in rngs])


def join(parts: list[Any]) -> Any:
    """Batches of one type joined in order (`Examples` right-padded to the widest part)."""
    return parts[0] if len(parts) == 1 else type(parts[0]).concat(parts)


class Stream:
    """Training batches: `batch(step)` is this rank's rows [rank * per_rank, (rank + 1) * per_rank) of the step's
    global batch.

    `augment(rng, n)` (e.g. an objective's mask sampler) draws the step's extra randomness for a group of n
    consecutive examples of the global batch (`group` of them; the whole global batch when None) from a
    counter-keyed generator (seed, stage, step, group index); this rank keeps its rows of each array it returns,
    which are added to the batch's `meta` (per-token arrays of groups of different widths padded with -1).
    `split` is the data split drawn (train; an RL stage's prompts come from its own).
    """

    def __init__(
        self,
        gen: Generator,
        seed: int,
        stage: str,
        rank: int,
        per_rank: int,
        world: int = 1,
        augment: Callable[[np.random.Generator, int], dict[str, np.ndarray]] | None = None,
        group: int | None = None,
        split: str = "train",
    ):
        self.gen, self.seed, self.stage = gen, seed, stage_key(stage)
        self.rank, self.per_rank, self.world = rank, per_rank, world
        self.chunk = chunk_size(gen)
        self.augment, self.group, self.split = augment, group, split

    def batch(self, step: int) -> Any:
        """The examples of `step` on this rank; the same whenever, however often and on whatever world size."""
        lo, hi = self.rank * self.per_rank, (self.rank + 1) * self.per_rank
        first, last = lo // self.chunk, (hi - 1) // self.chunk
        rngs = [counter_rng(self.seed, self.stage, TRAIN, step, c) for c in range(first, last + 1)]
        examples = sample_chunks(self.gen, rngs, self.chunk, self.split)
        offset = first * self.chunk
        if offset != lo or len(examples) != hi - lo:
            examples = examples.slice(lo - offset, hi - offset)
        if self.augment is not None:
            examples.meta.update(self._extras(step, lo, hi))
        return examples

    def _extras(self, step: int, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Rows lo..hi-1 of the step's `augment` arrays, drawn group by group."""
        total = self.per_rank * self.world
        size = self.group or total
        parts: list[dict[str, np.ndarray]] = []
        for g in range(lo // size, (hi - 1) // size + 1):
            start, n = g * size, min(size, total - g * size)
            extra = self.augment(counter_rng(self.seed, self.stage, AUGMENT, step, g), n)
            a, b = max(lo, start) - start, min(hi, start + n) - start
            parts.append({k: v[a:b] for k, v in extra.items()})
        return {k: cat_meta([p[k] for p in parts]) for k in parts[0]}


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
    return join(parts).slice(0, n)
