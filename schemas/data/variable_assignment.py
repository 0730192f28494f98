"""Config of the pointer-chasing generator (`kind: variable_assignment`) and its length model."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..base import Problems
from .base import IntRange, LengthRanges, TokenData


class VariableAssignment(TokenData):
    """Pointer chasing (docs/papers/length_generalisation.md): m shuffled `a = b ;`/`a = 7 ;`, query `? v =`.

    The answer follows the chain from v to its value: `v u ... 7 EOS`. Every statement defines a distinct
    variable; the statements outside the queried chain form distractor chains.
    """

    kind: Literal["variable_assignment"] = Field(
        "variable_assignment",
        description="Pointer chasing over variable assignments (docs/papers/length_generalisation.md).",
    )
    names: int = Field(
        128,
        ge=1,
        description="Variable-name tokens (a..z, aa, ab, ...); each statement defines a distinct one, so names >= the longest m.",
    )
    length: LengthRanges = Field(
        default_factory=lambda: LengthRanges(train=(4, 16), eval=(17, 64)),
        description="Ranges of the statement count m for training and evaluation.",
    )
    hops: int | IntRange | None = Field(
        None,
        description="Statements in the queried chain (answer = that many variables, the value, EOS): fixed, "
        "[low, high], or null = uniform in 1..m.",
    )
    max_position_id: int = Field(
        520,
        gt=0,
        description="P_max, the largest coupled position id an example may carry (inclusive); training offsets o ~ U{0..P_max-4m-3}. "
        "At least 4 x the longest m + 3.",
    )

    SPECIALS: ClassVar[tuple[str, ...]] = ("PAD", "BOS", "EOS", "=", ";", "?")
    VALUES: ClassVar[int] = 10  # digit values 0..9

    @model_validator(mode="after")
    def _feasible(self) -> VariableAssignment:
        p = Problems()
        longest = max(self.length.train[1], self.length.eval[1])
        shortest = min(self.length.train[0], self.length.eval[0])
        if self.names < longest:
            p.add(
                "names",
                f"{self.names} names cannot give {longest} statements distinct variables; set names >= {longest}",
            )
        if self.hops is not None:
            h_lo, h_hi = self.hops_range
            if h_lo < 1 or h_lo > h_hi:
                p.add("hops", f"hops={self.hops} is not valid; need 1 <= hops (and low <= high for a range)")
            elif h_hi > shortest:
                p.add(
                    "hops",
                    f"a chain of up to {h_hi} statements does not fit in the shortest m ({shortest}); raise the shortest length or lower hops",
                )
        need = 4 * longest + 3
        if self.max_position_id < need:
            p.add(
                "max_position_id",
                f"max_position_id={self.max_position_id} cannot number {longest} statements and the query "
                f"(4 x {longest} + 3 ids); set max_position_id >= {need}",
            )
        p.check()
        return self

    @property
    def hops_range(self) -> tuple[int, int]:
        """hops as an inclusive range (read only when hops is set)."""
        h = self.hops
        return (h, h) if isinstance(h, int) else tuple(h)

    @property
    def vocab_size(self) -> int:
        """PAD BOS EOS = ; ?, the 10 digits and the names."""
        return len(self.SPECIALS) + self.VALUES + self.names

    def chain_range(self, m: int) -> tuple[int, int]:
        """Inclusive range of the queried chain's statement count c for m statements."""
        return (1, m) if self.hops is None else self.hops_range

    def seq_len(self, m: int, c: int) -> int:
        """Tokens of one example: BOS, 4 per statement, `? v =`, c variables, the value, EOS."""
        return 4 * m + 6 + c

    def max_seq_len(self) -> int:
        """Longest example over all splits."""
        longest = max(self.length.train[1], self.length.eval[1])
        return self.seq_len(longest, self.chain_range(longest)[1])

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]) of T = 4m + 6 + c, m uniform over the split's range, c uniform given m (exact)."""
        lo, hi = getattr(self.length, split)
        e_t = e_tt = 0.0
        for m in range(lo, hi + 1):
            a, b = self.chain_range(m)
            e_c = (a + b) / 2
            e_cc = (_squares(b) - _squares(a - 1)) / (b - a + 1)
            base = 4 * m + 6  # T = base + c
            e_t += base + e_c
            e_tt += base * base + base + (2 * base + 1) * e_c + e_cc
        count = hi - lo + 1
        return e_t / count, e_tt / count

    def length_bounds(self) -> tuple[int, int]:
        """From the longest chain (statements must hold it) to the longest m of either range."""
        low = 1 if self.hops is None else self.hops_range[1]
        return low, max(self.length.train[1], self.length.eval[1])


def _squares(x: int) -> int:
    """1^2 + ... + x^2."""
    return x * (x + 1) * (2 * x + 1) // 6
