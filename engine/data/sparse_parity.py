"""k-sparse parity (docs/papers/length_generalisation.md): `BOS x1..xL = y EOS`, planted bits written
`0*`/`1*`, y = XOR of them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.data import SparseParity as SparseParityConfig

from .base import Example, Examples, UnknownSplit, Vocab

VOCAB = Vocab(SparseParityConfig.VOCAB)
EQ, ZERO, ONE, ZERO_P, ONE_P = (VOCAB.id(t) for t in ("=", "0", "1", "0*", "1*"))


class SparseParity:
    """Generator of k-sparse parity examples; lengths drawn per example from the split's range."""

    vocab = VOCAB

    def __init__(self, cfg: SparseParityConfig):
        self.cfg = cfg

    def sample(
        self, rng: np.random.Generator, n: int, split: str = "train", length: int | None = None
    ) -> Examples:
        """n examples of `split` (train | eval), all of bit length `length` when it is given."""
        if split not in self.cfg.SPLITS:
            raise UnknownSplit(f"no split {split!r}; sparse_parity has {', '.join(self.cfg.SPLITS)}")
        lo, hi = (length, length) if length is not None else getattr(self.cfg.length, split)
        k_lo, k_hi = self.cfg.k_range
        if lo < k_hi:  # fewer than k positions: planted bits would land in the padding
            raise ValueError(f"length {lo} cannot hold k={k_hi} planted bits; need length >= {k_hi}")
        lens = rng.integers(lo, hi + 1, size=n)  # [n] bits per example
        ks = rng.integers(k_lo, k_hi + 1, size=n)  # [n] planted bits per example
        width = int(lens.max(initial=lo))
        bits = rng.integers(0, 2, size=(n, width), dtype=np.int32)  # [n, W]
        col = np.arange(width)
        inside = col[None, :] < lens[:, None]  # [n, W] inside the string
        allowed = inside.copy()  # where planted bits may go
        if self.cfg.window is not None:
            w = np.minimum(self.cfg.window, lens)  # a window never exceeds the string
            start = (rng.random(n) * (lens - w + 1)).astype(np.int64)
            allowed &= (col[None, :] >= start[:, None]) & (col[None, :] < (start + w)[:, None])
        # k distinct planted positions, uniform among the allowed ones: the k smallest random keys.
        keys = np.where(allowed, rng.random((n, width)), np.inf)
        rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
        planted = rank < ks[:, None]  # [n, W]
        y = (bits * planted).sum(1) % 2  # [n] parity of the planted bits

        L = width + 4  # BOS, bits, '=', y, EOS
        tokens = np.zeros((n, L), dtype=np.int32)  # PAD = 0
        tokens[:, 0] = VOCAB.bos
        body = np.where(planted, ZERO_P + bits, ZERO + bits)
        tokens[:, 1 : width + 1] = np.where(inside, body, VOCAB.pad)
        rows = np.arange(n)
        tokens[rows, lens + 1] = EQ
        tokens[rows, lens + 2] = ONE * y + ZERO * (1 - y)
        tokens[rows, lens + 3] = VOCAB.eos
        loss_mask = np.zeros((n, L), dtype=bool)
        loss_mask[rows, lens + 2] = True
        meta = {"length": lens, "k": ks, "parity": y}
        return Examples(tokens, loss_mask, lens + 4, None, meta)

    def verify(self, example: Example, completion: Sequence[int]) -> bool:
        """Correct iff the first generated token is the parity of the planted bits."""
        body = example.tokens[1 : 1 + int(example.meta["length"])]
        parity = int(((body == ONE_P).sum()) % 2)
        return len(completion) > 0 and int(completion[0]) == (ONE if parity else ZERO)

    def answer(self, example: Example, completion: Sequence[int]) -> int | None:
        """The first generated token (the parity bit the verifier reads)."""
        return int(completion[0]) if len(completion) else None

    def render(self, example: Example) -> str:
        """`BOS 0 1* 1 ... = y EOS` with the answer marked."""
        return f"{VOCAB.decode(example.prompt)} -> {VOCAB.decode(example.answer)}   (k={int(example.meta['k'])}, L={int(example.meta['length'])})"
