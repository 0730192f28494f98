"""A probe's fixed labelled set, drawn once from the train split, and the training batches that walk it in epochs.

The set is drawn in counter-keyed chunks (seed, stage, LABELLED, chunk index), as a step of `Stream` is, so it is
the same on every rank, world size and attempt. `labelled: N` keeps the first N clips drawn; `per_class: k`
keeps drawing chunks until every class has k clips and keeps the first k of each class, in draw order. The set
is held in memory (rendered or decoded once); each clip's index in it is `meta["pool_index"]`.

Epoch e is a permutation of the training clips drawn from (seed, stage, EPOCH, e). The global batch of step s
holds positions s*B .. s*B+B-1 of the concatenated epochs (a batch may straddle two), so it is a pure function
of (seed, stage, s): a resumed run continues exactly and every world size trains on the same global batches,
of which each rank takes its rows, as from `Stream`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .base import Generator
from .stream import EPOCH, LABELLED, Stream, chunk_size, counter_rng, sample_chunks
from .video import Clips

# Draw at most this many times the clips a per_class set keeps before giving up on a class that never shows.
PER_CLASS_DRAWS = 20
CHUNKS_PER_CALL = 8  # keyed chunks drawn per generator call while filling a per_class set


class MissingClass(ValueError):
    """A per_class set cannot be filled: some class did not show within the bounded number of draws."""


def take(clips: Clips, index: np.ndarray) -> Clips:
    """The clips at `index` (any order, repeats allowed)."""
    return Clips(clips.video[index], clips.labels[index], {k: v[index] for k, v in clips.meta.items()})


def draw_labelled(
    gen: Generator,
    seed: int,
    stage: int,
    classes: int,
    labelled: int | None = None,
    per_class: int | None = None,
) -> Clips:
    """The stage's labelled set (stage: its `stage_key`): the first `labelled` train clips drawn, or the first
    `per_class` of each of the `classes` classes; `meta["pool_index"]` numbers them 0..N-1."""
    chunk = chunk_size(gen)

    def chunks(first: int, count: int) -> Clips:
        rngs = [counter_rng(seed, stage, LABELLED, c) for c in range(first, first + count)]
        return sample_chunks(gen, rngs, chunk, "train")

    if (labelled is None) == (per_class is None):
        raise ValueError("give exactly one of labelled and per_class")
    if labelled is not None:
        pool = chunks(0, -(-labelled // chunk)).slice(0, labelled)
    else:
        pool = _per_class(chunks, chunk, classes, per_class)
    pool.meta["pool_index"] = np.arange(len(pool))
    return pool


def _per_class(chunks: Callable[[int, int], Clips], chunk: int, classes: int, k: int) -> Clips:
    """The first k clips of every class, drawn CHUNKS_PER_CALL chunks at a time, kept in draw order."""
    limit = PER_CLASS_DRAWS * k * classes
    kept: list[Clips] = []
    have = np.zeros(classes, np.int64)
    drawn = 0
    while have.min() < k:
        if drawn >= limit:
            short = {c: int(have[c]) for c in range(classes) if have[c] < k}
            raise MissingClass(
                f"per_class={k}: after {drawn} train clips, classes {list(short)} have only "
                f"{list(short.values())} clips; the data rarely or never makes them. Lower per_class, use "
                "labelled: N instead, or change the data's label"
            )
        part = chunks(drawn // chunk, CHUNKS_PER_CALL)
        drawn += len(part)
        keep = []
        for i, label in enumerate(part.labels):
            if have[label] < k:
                have[label] += 1
                keep.append(i)
        kept.append(take(part, np.asarray(keep, np.int64)))
    return Clips.concat(kept)


class PoolStream:
    """Training batches from the first `train` clips of a labelled set, in seeded epochs (module docstring).

    Built from the `Stream` a stage would otherwise use: the same seed, stage key, rank and batch split.
    """

    def __init__(self, pool: Clips, train: int, stream: Stream):
        if not 0 < train <= len(pool):
            raise ValueError(f"train={train} clips is not within the labelled set of {len(pool)}")
        self.pool, self.train = pool, train
        self.seed, self.stage = stream.seed, stream.stage
        self.rank, self.per_rank, self.world = stream.rank, stream.per_rank, stream.world
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        """The training clips' indices in the order epoch `epoch` visits them."""
        if epoch not in self._orders:
            if len(self._orders) > 4:  # a step straddles at most a few epochs; keep the latest only
                self._orders.clear()
            self._orders[epoch] = counter_rng(self.seed, self.stage, EPOCH, epoch).permutation(self.train)
        return self._orders[epoch]

    def indices(self, step: int) -> np.ndarray:
        """Pool indices of this rank's rows of the global batch of `step`."""
        first = step * self.per_rank * self.world + self.rank * self.per_rank
        positions = np.arange(first, first + self.per_rank)
        epochs, within = np.divmod(positions, self.train)
        return np.array([self.order(int(e))[i] for e, i in zip(epochs, within, strict=True)], np.int64)

    def batch(self, step: int) -> Clips:
        """This rank's clips of `step`; the same whenever, however often and on whatever world size."""
        return take(self.pool, self.indices(step))
