"""Shared pieces of the data configs: `Loading` (how batches are drawn), `TokenData` (what the plan, validators
and evaluators ask of a token generator), `LengthRanges` and `IntRange`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..base import Strict, spec_error

IntRange = Annotated[tuple[int, int], Field(description="Inclusive range [low, high].")]


def mean_t_t1(ts: Sequence[int]) -> tuple[float, float]:
    """(E[T], E[T*(T+1)]) over equally likely example lengths `ts`: what the plan's FLOPs need."""
    return sum(ts) / len(ts), sum(t * (t + 1) for t in ts) / len(ts)


class Loading(Strict):
    """Base of every data config: how a stage's training batches are drawn, not what they hold (OPERATIONAL:
    a run may change them on resume, and the batches are the same whatever they are).

    Its fields are moved after the subclass's own, so that `kind` stays first in the schema and in dumped specs.
    """

    workers: int | Literal["auto"] = Field(
        "auto",
        description="Worker processes per rank drawing the next steps' batches while the step runs; 0 = drawn "
        "in the training process. auto = 0 on CPU, the rank's share of the cores less one (at most 4) on CUDA.",
    )
    prefetch: int = Field(2, ge=1, le=64, description="Batches each worker keeps ready ahead of the step.")
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"workers", "prefetch"})

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        """`auto` or a whole number of processes, 0 to 64 (one message, not one per member of the union)."""
        if value == "auto" or (type(value) is int and 0 <= value <= 64):
            return value
        raise PydanticCustomError(
            "spec", f"{value!r} is not a number of worker processes; give 0 to 64, or auto"
        )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        fields = cls.__pydantic_fields__
        for name in Loading.model_fields:
            fields[name] = fields.pop(name)
        cls.model_rebuild(force=True)


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


class TokenData(Loading):
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
