"""Shared pieces of the data configs: `TokenData` (what the plan, validators and evaluators ask of a token
generator), `LengthRanges` and `IntRange`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from ..base import Strict, spec_error

IntRange = Annotated[tuple[int, int], Field(description="Inclusive range [low, high].")]


def mean_t_t1(ts: Sequence[int]) -> tuple[float, float]:
    """(E[T], E[T*(T+1)]) over equally likely example lengths `ts`: what the plan's FLOPs need."""
    return sum(ts) / len(ts), sum(t * (t + 1) for t in ts) / len(ts)


class LengthRanges(Strict):
    """Separate ranges of input lengths for training and for evaluation."""

    train: IntRange = Field(description="Input lengths seen in training, inclusive [low, high].")
    eval: IntRange = Field(description="Input lengths held out for evaluation, inclusive [low, high].")

    @model_validator(mode="after")
    def _ordered(self) -> LengthRanges:
        for split in ("train", "eval"):
            lo, hi = getattr(self, split)
            if lo < 1 or lo > hi:
                raise spec_error(split, f"[{lo}, {hi}] is not a range of lengths; need 1 <= low <= high")
        return self


class TokenData(Strict):
    """Base of the token generators' configs: what the plan, the validators and the evaluators ask of data.

    A subclass sets `kind`, `SPLITS` and implements `vocab_size`, `max_seq_len` and `length_stats` in pure
    Python (no numpy: validation and planning never run the generator). Generators with an input-length axis
    (`length: LengthRanges`) also give `length_bounds`, which `accuracy_by_length` needs.
    """

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "eval")

    @property
    def vocab_size(self) -> int:
        """Number of token ids the generator emits."""
        raise NotImplementedError

    def max_seq_len(self) -> int:
        """An upper bound on the tokens of one example over all splits (what a model's context must hold)."""
        raise NotImplementedError

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]) of the tokens T of one example of `split`: what FLOPs in the plan need."""
        raise NotImplementedError

    def length_bounds(self) -> tuple[int, int] | None:
        """Input lengths an evaluator may ask for, inclusive; None when the task has no length axis."""
        return None


class RangedTokenData(TokenData):
    """Token data whose input length n is uniform over a range per split (`length: LengthRanges`, declared by
    the subclass after its own fields: an inherited field would come first in the schema and in dumped specs)
    and whose example has `seq_len(split, n)` tokens."""

    def seq_len(self, split: str, length: int) -> int:
        """Tokens of one example of `split` with input length `length`."""
        raise NotImplementedError

    def max_seq_len(self) -> int:
        """Longest example over all splits (what the model's context must hold)."""
        return self.seq_len("eval", max(self.length.train[1], self.length.eval[1]))

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]) over the split's input lengths, equally likely (exact)."""
        lo, hi = getattr(self.length, split)
        return mean_t_t1([self.seq_len(split, n) for n in range(lo, hi + 1)])
