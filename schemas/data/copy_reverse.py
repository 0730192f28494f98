"""Configs of the copy and reverse generators (`kind: copy`, `kind: reverse`) and their length model."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..base import Problems
from .base import LengthRanges, RangedTokenData


class CopyTask(RangedTokenData):
    """Shared fields of `copy` and `reverse`: `BOS x1..xn SEP y1..yn EOS`, y = x (copy) or x reversed."""

    symbols: int = Field(10, ge=2, description="Alphabet size: each x_i is one of this many symbols, i.i.d.")
    length: LengthRanges = Field(
        default_factory=lambda: LengthRanges(train=(1, 20), eval=(21, 40)),
        description="Ranges of the input length n for training and evaluation.",
    )
    max_position_id: int = Field(
        80,
        gt=0,
        description="P_max, the largest coupled position id an example may carry (inclusive); training offsets o ~ U{0..P_max-n-1}. "
        "At least 2x the longest eval length.",
    )

    SPECIALS: ClassVar[tuple[str, ...]] = ("PAD", "BOS", "EOS", "SEP")

    @model_validator(mode="after")
    def _feasible(self) -> CopyTask:
        p = Problems()
        longest_eval, longest = self.length.eval[1], max(self.length.train[1], self.length.eval[1])
        need = max(2 * longest_eval, longest + 1)
        if self.max_position_id < need:
            p.add(
                "max_position_id",
                f"max_position_id={self.max_position_id} is under 2 x the longest eval length ({longest_eval}) or "
                f"the longest length + 1 ({longest + 1}); set max_position_id >= {need}",
            )
        p.check()
        return self

    @property
    def reverse(self) -> bool:
        """Whether the answer is the input reversed."""
        return self.kind == "reverse"

    @property
    def vocab_size(self) -> int:
        """PAD BOS EOS SEP and the symbols."""
        return len(self.SPECIALS) + self.symbols

    def seq_len(self, split: str, length: int) -> int:
        """Tokens of one example of input length n: BOS, n symbols, SEP, n symbols, EOS."""
        return 2 * length + 3

    def length_bounds(self) -> tuple[int, int]:
        """From 1 to the longest length of either range."""
        return 1, max(self.length.train[1], self.length.eval[1])


class Copy(CopyTask):
    """Copy with coupled positions (docs/papers/length_generalisation.md): y_j = x_j, at x_j's position id."""

    kind: Literal["copy"] = Field(
        "copy", description="Copy the input after SEP (docs/papers/length_generalisation.md)."
    )


class Reverse(CopyTask):
    """Reverse with coupled positions (docs/papers/length_generalisation.md): y_j = x_{n+1-j}, at its id."""

    kind: Literal["reverse"] = Field(
        "reverse", description="Write the input reversed after SEP (docs/papers/length_generalisation.md)."
    )
