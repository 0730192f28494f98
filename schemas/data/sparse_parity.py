"""Config of the k-sparse parity generator (`kind: sparse_parity`) and its length model."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..base import Problems
from .base import IntRange, LengthRanges, RangedTokenData


class SparseParity(RangedTokenData):
    """k-sparse parity: `BOS x1..xL = y EOS`; k planted bits are written `0*`/`1*`, y is their XOR."""

    kind: Literal["sparse_parity"] = Field(
        "sparse_parity", description="k-sparse planted parity (docs/papers/length_generalisation.md)."
    )
    k: int | IntRange = Field(
        3, description="Planted positions per example: a fixed k, or [low, high] drawn uniformly per example."
    )
    length: LengthRanges = Field(
        default_factory=lambda: LengthRanges(train=(8, 32), eval=(33, 128)),
        description="Ranges of the bit-string length L for training and evaluation.",
    )
    window: int | None = Field(
        None,
        gt=0,
        description="Keep the planted positions inside a random span of this many bits (locality); null = anywhere.",
    )

    VOCAB: ClassVar[tuple[str, ...]] = ("PAD", "BOS", "EOS", "=", "0", "1", "0*", "1*")

    @model_validator(mode="after")
    def _feasible(self) -> SparseParity:
        p = Problems()
        k_lo, k_hi = (self.k, self.k) if isinstance(self.k, int) else self.k
        if k_lo < 1 or k_lo > k_hi:
            p.add("k", f"k={self.k} is not valid; need 1 <= k (and low <= high for a range)")
        shortest = min(self.length.train[0], self.length.eval[0])
        if k_hi > shortest:
            p.add(
                "k",
                f"k up to {k_hi} cannot be planted in strings of length {shortest}; raise the shortest length or lower k",
            )
        if self.window is not None and self.window < k_hi:
            p.add("window", f"window={self.window} cannot hold k={k_hi} planted bits; need window >= k")
        p.check()
        return self

    @property
    def k_range(self) -> tuple[int, int]:
        """k as an inclusive range."""
        return (self.k, self.k) if isinstance(self.k, int) else tuple(self.k)

    @property
    def vocab_size(self) -> int:
        """Number of token ids the generator emits."""
        return len(self.VOCAB)

    def seq_len(self, split: str, length: int) -> int:
        """Tokens of one example whose bit string has `length` bits: BOS, bits, '=', y, EOS."""
        return length + 4

    def length_bounds(self) -> tuple[int, int]:
        """From k (the planted bits must fit) to the longest length of either range."""
        return self.k_range[1], max(self.length.train[1], self.length.eval[1])
