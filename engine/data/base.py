"""The generator contract: padded token batches with answer masks, a vocabulary, a verifier, a renderer; and
what generators share (`UnknownSplit`, the `mix64` hash)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class UnknownSplit(LookupError):
    """A generator was asked for a split (or pool) it does not have; the message names the ones it has."""


@dataclass(frozen=True)
class Vocab:
    """Token strings by id, with the ids of the special tokens every generator has."""

    tokens: tuple[str, ...]
    pad: int = 0
    bos: int = 1
    eos: int = 2

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        """The id of a token string."""
        return self.tokens.index(token)

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids as space-separated strings."""
        return " ".join(self.tokens[int(i)] for i in ids)


@dataclass
class Example:
    """One example, padding stripped: its tokens, answer mask, optional position ids and metadata."""

    tokens: np.ndarray
    loss_mask: np.ndarray
    positions: np.ndarray | None
    meta: dict[str, Any]

    @property
    def prompt(self) -> np.ndarray:
        """Tokens before the first answer token."""
        return self.tokens[: int(np.argmax(self.loss_mask))] if self.loss_mask.any() else self.tokens

    @property
    def answer(self) -> np.ndarray:
        """The answer tokens (where loss_mask is set)."""
        return self.tokens[self.loss_mask]


@dataclass
class Examples:
    """A batch of n examples: `tokens` int32 [n, L] right-padded, `loss_mask` bool [n, L] on answer tokens.

    `lengths` [n] counts the real (unpadded) tokens; `positions` int32 [n, L] are coupled position ids when the
    task has them; `meta` holds per-example arrays (leading dimension n) such as the input length.
    """

    tokens: np.ndarray
    loss_mask: np.ndarray
    lengths: np.ndarray
    positions: np.ndarray | None = None
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> Example:
        n = int(self.lengths[i])
        pos = None if self.positions is None else self.positions[i, :n]
        return Example(
            self.tokens[i, :n], self.loss_mask[i, :n], pos, {k: v[i] for k, v in self.meta.items()}
        )

    def slice(self, start: int, stop: int) -> Examples:
        """Examples start..stop-1, trimmed to their own longest length."""
        width = int(self.lengths[start:stop].max(initial=0))
        pos = None if self.positions is None else self.positions[start:stop, :width]
        return Examples(
            self.tokens[start:stop, :width],
            self.loss_mask[start:stop, :width],
            self.lengths[start:stop],
            pos,
            {k: v[start:stop] for k, v in self.meta.items()},
        )

    def take(self, rows: np.ndarray) -> Examples:
        """The examples at `rows` (any order, repeats allowed), trimmed to their own longest length."""
        rows = np.asarray(rows, dtype=np.int64)
        width = int(self.lengths[rows].max(initial=0))
        pos = None if self.positions is None else self.positions[rows, :width]
        return Examples(
            self.tokens[rows, :width],
            self.loss_mask[rows, :width],
            self.lengths[rows],
            pos,
            {k: v[rows] for k, v in self.meta.items()},
        )

    @classmethod
    def concat(cls, parts: list[Examples], pad: int = 0) -> Examples:
        """The examples of `parts` in order, right-padded (tokens with `pad`) to the widest part."""
        width = max(p.tokens.shape[1] for p in parts)

        def cat(arrays: list[np.ndarray], value: int | bool) -> np.ndarray:
            padded = [np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=value) for a in arrays]
            return np.concatenate(padded)

        positions = None if parts[0].positions is None else cat([p.positions for p in parts], 0)
        meta = {k: cat_meta([p.meta[k] for p in parts]) for k in parts[0].meta}
        return cls(
            cat([p.tokens for p in parts], pad),
            cat([p.loss_mask for p in parts], False),
            np.concatenate([p.lengths for p in parts]),
            positions,
            meta,
        )


def cat_meta(arrays: list[np.ndarray]) -> np.ndarray:
    """Per-example metadata of several parts, stacked; per-token arrays ([n, L, ...]) of different widths L
    are right-padded with -1 (integers) or False, as `sources` and `target_positions` are."""
    if arrays[0].ndim < 2 or len({a.shape[1] for a in arrays}) == 1:
        return np.concatenate(arrays)
    width = max(a.shape[1] for a in arrays)
    fill = False if arrays[0].dtype == bool else -1
    pads = [((0, 0), (0, width - a.shape[1])) + ((0, 0),) * (a.ndim - 2) for a in arrays]
    return np.concatenate([np.pad(a, w, constant_values=fill) for a, w in zip(arrays, pads, strict=True)])


def through_eos(completion: Sequence[int], eos: int) -> tuple[int, ...]:
    """The tokens of a completion up to and including its first EOS (all of them without one): the `answer`
    of tasks whose verifier reads no further."""
    out = tuple(int(t) for t in completion)
    return out[: out.index(eos) + 1] if eos in out else out


_WORKER: list[int | None] = [None]  # this process's data-worker number, set by the runtime in each worker


def set_worker(index: int | None) -> None:
    """Record that this process is data worker `index` of its rank (engine/runtime/loader.py calls it)."""
    _WORKER[0] = index


def worker() -> int | None:
    """This process's data-worker number, or None in the training process: for generators that write files
    of their own (one per process)."""
    return _WORKER[0]


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective, well-mixed hash of uint64 values (wrapping arithmetic)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class Generator(Protocol):
    """What every data generator provides (docs/design.md, Contracts)."""

    vocab: Vocab
    # Optional: `chunk` (examples per counter key, default engine.data.stream.CHUNK; 1 for generators whose cost
    # is per example) and `sample_chunks(rngs, n, split)` (n examples per generator, joined, in one batched call).

    def sample(
        self, rng: np.random.Generator, n: int, split: str = "train", length: int | None = None
    ) -> Examples:
        """n examples of `split` (`UnknownSplit` if there is no such split); `length` pins the task's size
        parameter (e.g. input length) when given."""
        ...

    def verify(self, example: Example, completion: Sequence[int]) -> bool:
        """Whether `completion` (token ids generated after the prompt) is a correct answer."""
        ...

    def answer(self, example: Example, completion: Sequence[int]) -> Hashable | None:
        """The part of a completion a majority vote is taken over (a decision node, a grid, a path, the tokens
        through EOS), or None when none can be read. Equal answers are judged alike: if `verify` accepts c1 and
        answer(c2) == answer(c1), it accepts c2."""
        ...

    def render(self, example: Example) -> str:
        """Human-readable text of one example."""
        ...
