"""Biased k-parity (docs/papers/random_features.md): `BOS x1..xn = y EOS`, bits written `-`/`+`, x_i = +1 with
probability p, y = the product of x_i over the fixed subset S."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.data import BiasedParity as BiasedParityConfig

from .base import Example, Examples, UnknownSplit, Vocab

VOCAB = Vocab(BiasedParityConfig.VOCAB)
EQ, MINUS, PLUS = (VOCAB.id(t) for t in ("=", "-", "+"))


def signs(tokens: np.ndarray) -> np.ndarray:
    """±1 values of `-`/`+` tokens (any shape), as int8."""
    return np.where(tokens == PLUS, 1, -1).astype(np.int8)


class BiasedParity:
    """Generator of biased k-parity examples; every split draws from the same distribution (the eval split's
    examples come from their own counter-keyed stream, see engine.data.stream.eval_examples)."""

    vocab = VOCAB

    def __init__(self, cfg: BiasedParityConfig):
        self.cfg = cfg
        self.support = np.asarray(cfg.support, dtype=np.int64)  # S

    def sample(
        self, rng: np.random.Generator, n: int, split: str = "train", length: int | None = None
    ) -> Examples:
        """n examples of `split` (train | eval); `length`, if given, must be the data's n (the only size)."""
        if split not in self.cfg.SPLITS:
            raise UnknownSplit(f"no split {split!r}; biased_parity has {', '.join(self.cfg.SPLITS)}")
        bits = self.cfg.n
        if length is not None and length != bits:
            raise ValueError(f"biased_parity has one input length, n={bits}; asked for {length}")
        x = np.where(rng.random((n, bits)) < self.cfg.p, 1, -1).astype(np.int8)  # [n, bits]
        y = x[:, self.support].prod(axis=1, dtype=np.int8)  # [n]
        L = bits + 4  # BOS, bits, '=', y, EOS
        tokens = np.empty((n, L), dtype=np.int32)
        tokens[:, 0] = VOCAB.bos
        tokens[:, 1 : bits + 1] = np.where(x > 0, PLUS, MINUS)
        tokens[:, bits + 1] = EQ
        tokens[:, bits + 2] = np.where(y > 0, PLUS, MINUS)
        tokens[:, bits + 3] = VOCAB.eos
        loss_mask = np.zeros((n, L), dtype=bool)
        loss_mask[:, bits + 2] = True
        meta = {"label": y.astype(np.int64)}
        return Examples(tokens, loss_mask, np.full(n, L, dtype=np.int64), None, meta)

    def label(self, example: Example) -> int:
        """The product of the example's bits over S (+1 or -1), read from its tokens."""
        x = signs(example.tokens[1 : 1 + self.cfg.n])
        return int(x[self.support].prod())

    def verify(self, example: Example, completion: Sequence[int]) -> bool:
        """Correct iff the first generated token is the sign of the product over S."""
        want = PLUS if self.label(example) > 0 else MINUS
        return len(completion) > 0 and int(completion[0]) == want

    def answer(self, example: Example, completion: Sequence[int]) -> int | None:
        """The first generated token (the label the verifier reads)."""
        return int(completion[0]) if len(completion) else None

    def render(self, example: Example) -> str:
        """`+ - + ... = y`, with S and the bits of S shown."""
        x = example.tokens[1 : 1 + self.cfg.n]
        picked = " ".join(VOCAB.tokens[int(x[i])] for i in self.support)
        return (
            f"{VOCAB.decode(x)} = {VOCAB.decode(example.answer)}   "
            f"(S={list(map(int, self.support))}: {picked}, p={self.cfg.p})"
        )
