"""Config of the phone-book generator (`kind: phonebook`) and its length model."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..base import Problems
from .base import TokenData


class PhoneBook(TokenData):
    """A fixed phone book of `entries` unique name -> number pairs (docs/papers/mixture_of_parrots.md).

    Entry i's name (first, last) and number are computed from i by keyed bijections, so a book of millions
    holds nothing per entry. train = documents of `lines_per_doc` lines `first last : d1..dD ;` (loss on every
    token: pretraining on the book); eval = closed-book queries `BOS first last : d1..dD EOS` over a fixed
    subset of `eval_entries` training entries (loss on the digits).
    """

    kind: Literal["phonebook"] = Field(
        "phonebook",
        description="Phone-book memorisation: names to numbers (docs/papers/mixture_of_parrots.md).",
    )
    entries: int = Field(100_000, ge=1, description="Entries N in the book (the paper: 1e5 to 2e6).")
    book_seed: int = Field(
        0, ge=0, description="Seed of the book: which names and numbers, and the eval subset."
    )
    name_pool: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="First-name and last-name tokens, each (names are pairs: name_pool**2 of them).",
    )
    digits: int = Field(10, ge=1, le=18, description="Digits per number, one token each.")
    lines_per_doc: int = Field(
        32, ge=1, description="Entries (`name : number ;` lines) per training document."
    )
    eval_entries: int | None = Field(
        None,
        ge=1,
        description="Size of the fixed subset of (training) entries that eval asks about; null = min(1000, entries).",
    )

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "eval")
    SPECIALS: ClassVar[tuple[str, ...]] = ("PAD", "BOS", "EOS", ":", ";", *(str(d) for d in range(10)))

    @model_validator(mode="after")
    def _feasible(self) -> PhoneBook:
        p = Problems()
        if self.entries > self.name_pool**2:
            p.add(
                "entries",
                f"{self.entries} entries need unique names but name_pool={self.name_pool} makes only "
                f"{self.name_pool**2} (name_pool**2); raise name_pool to >= {math.isqrt(self.entries - 1) + 1} or lower entries",
            )
        if self.entries > 10**self.digits:
            p.add(
                "entries",
                f"{self.entries} entries need unique numbers but {self.digits} digits make only "
                f"{10**self.digits}; raise digits to >= {len(str(self.entries - 1))} or lower entries",
            )
        if self.eval_entries is not None and self.eval_entries > self.entries:
            p.add(
                "eval_entries",
                f"eval_entries={self.eval_entries} exceeds the book's {self.entries} entries; lower it to <= {self.entries}",
            )
        p.check()
        return self

    @property
    def eval_size(self) -> int:
        """Entries in the eval subset: eval_entries, or min(1000, entries) (the paper's 1000) when unset."""
        return min(1000, self.entries) if self.eval_entries is None else self.eval_entries

    @property
    def vocab_size(self) -> int:
        """Specials, ':' ';', ten digits, then the first-name and last-name pools."""
        return len(self.SPECIALS) + 2 * self.name_pool

    def seq_len(self, split: str) -> int:
        """Tokens of one example: BOS + lines * (first last : digits ;) + EOS, or BOS first last : digits EOS."""
        return 2 + self.lines_per_doc * (self.digits + 4) if split == "train" else self.digits + 5

    def max_seq_len(self) -> int:
        """Longest example over all splits (every example of a split has the same length)."""
        return max(self.seq_len(s) for s in self.SPLITS)

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """Exact: each split has one length T."""
        t = self.seq_len(split)
        return float(t), float(t * (t + 1))
