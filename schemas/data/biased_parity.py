"""Config of the biased k-parity generator (`kind: biased_parity`): x in {±1}^n, y = product of x over S."""

from __future__ import annotations

import random
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..base import Problems
from .base import TokenData


def default_support(n: int, k: int) -> tuple[int, ...]:
    """The subset S of a config without `subset`: k distinct indices of 0..n-1 drawn from a generator seeded by
    (n, k) alone, so every run with the same n and k (a sweep's members, any seed) shares it."""
    return tuple(sorted(random.Random(f"biased_parity:{n}:{k}").sample(range(n), k)))


class BiasedParity(TokenData):
    """Biased k-parity: `BOS x1..xn = y EOS` with x_i = + with probability p (independently), else -, and
    y = the product of x_i over a fixed subset S of k indices (docs/papers/random_features.md)."""

    kind: Literal["biased_parity"] = Field(
        "biased_parity", description="k-parity of biased ±1 bits (docs/papers/random_features.md)."
    )
    n: int = Field(20, ge=1, le=4096, description="Input bits per example (the MLP's inputs).")
    k: int = Field(2, ge=1, description="Size of the subset S whose product is the label; 1 <= k <= n.")
    p: float = Field(0.5, gt=0, lt=1, description="Probability that a bit is +1 (each bit independently).")
    subset: list[int] | None = Field(
        None,
        description="The indices S (0-based, distinct, < n, k of them); default: drawn once from (n, k), the "
        "same for every run with that n and k whatever its seed.",
    )

    VOCAB: ClassVar[tuple[str, ...]] = ("PAD", "BOS", "EOS", "=", "-", "+")

    @model_validator(mode="after")
    def _feasible(self) -> BiasedParity:
        p = Problems()
        if self.k > self.n:
            p.add(
                "k",
                f"k={self.k} exceeds n={self.n}: S cannot hold more indices than there are bits; need k <= n",
            )
        if self.subset is not None:
            bad = [i for i in self.subset if not 0 <= i < self.n]
            if bad:
                p.add(
                    "subset",
                    f"indices {bad} are outside 0..{self.n - 1}; give indices of the n={self.n} bits",
                )
            if len(set(self.subset)) != len(self.subset):
                p.add("subset", f"{self.subset} repeats an index; give k distinct indices")
            if len(self.subset) != self.k:
                p.add(
                    "subset", f"{len(self.subset)} indices for k={self.k}; give exactly k, or set k to match"
                )
        p.check()
        return self

    @property
    def support(self) -> tuple[int, ...]:
        """S: the given `subset` (sorted), else the one drawn from (n, k)."""
        if self.subset is not None:
            return tuple(sorted(self.subset))
        return default_support(self.n, self.k)

    @property
    def vocab_size(self) -> int:
        """Number of token ids the generator emits."""
        return len(self.VOCAB)

    def max_seq_len(self) -> int:
        """BOS, n bits, '=', y, EOS."""
        return self.n + 4

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """Every example has n + 4 tokens."""
        t = self.n + 4
        return float(t), float(t * (t + 1))
