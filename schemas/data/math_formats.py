"""Config of the Echo Chamber word-problem generator (`kind: math_formats`), its vocabulary, templates and
length model."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..base import Problems, Strict
from .base import IntRange, TokenData

FORMATS = ("code", "nl", "mixed")
MAX_OPS = 12  # most operations per problem (a program then names at most 13 of the 26 variables)
FILLER_SENTENCES = (4, 12)  # sentences per filler document, inclusive
ADD_MAX, FACTOR_MAX, BOX_MAX = (
    100,
    9,
    12,
)  # largest operand of + and -, of * and / (and box counts), box sizes


class FormatWeights(Strict):
    """Relative weights of the three solution formats (they need not sum to 1)."""

    code: float = Field(1.0, description="Weight of `def solve ( ) : ... ; return v` programs.")
    nl: float = Field(1.0, description="Weight of step sentences ending in `The answer is \\boxed{ N } .`.")
    mixed: float = Field(
        0.0, description="Weight of a step sentence followed by a `<code> ... </code>` block."
    )

    @model_validator(mode="after")
    def _usable(self) -> FormatWeights:
        p = Problems()
        for name in FORMATS:
            w = getattr(self, name)
            if w < 0:
                p.add(
                    name,
                    f"{name} weight {w} is negative; weights are relative shares >= 0 "
                    "(e.g. {code: 1, nl: 1, mixed: 0}); use 0 to leave a format out",
                )
        if not p.items and self.total() <= 0:
            p.add(
                "code",
                "all format weights are 0, so no document has a solution; give at least one of code, nl, "
                "mixed a positive weight (e.g. {code: 1, nl: 1, mixed: 0})",
            )
        p.check()
        return self

    def total(self) -> float:
        """Sum of the weights."""
        return self.code + self.nl + self.mixed

    def shares(self) -> tuple[float, float, float]:
        """The weights of code, nl and mixed normalised to sum to 1."""
        t = self.total()
        return self.code / t, self.nl / t, self.mixed / t


class MathFormats(TokenData):
    """Templated arithmetic word problems, each solved in one of three formats (docs/papers/echo_chamber.md).

    `BOS question : solution EOS`; the solution is `code` (a tiny assignment language), `nl` (one sentence per
    step, `\\boxed{ N }`) or `mixed` (a sentence, then a `<code> ... </code>` block). Numbers are written one
    digit per token. Training documents also include filler text (story sentences, loss on every token).
    """

    kind: Literal["math_formats"] = Field(
        "math_formats", description="Echo Chamber word problems in code / nl / mixed formats."
    )
    formats: FormatWeights | tuple[float, float, float] = Field(
        default_factory=FormatWeights,
        description="Weights of the solution formats: {code, nl, mixed} or three numbers in that order.",
    )
    filler: float = Field(
        0.3, ge=0, lt=1, description="Share of train documents that are filler text (no question, no answer)."
    )
    easy_ops: IntRange = Field(
        (2, 4), description="Operations per problem in train, rl and easy, inclusive [low, high]."
    )
    hard_ops: IntRange = Field(
        (5, 8),
        description="Operations per problem in the hard split (evaluation only), inclusive [low, high].",
    )
    max_value: int = Field(
        10_000, ge=100, le=1_000_000, description="Largest value of any number: start, operand or result."
    )
    world_seed: int = Field(
        0,
        ge=0,
        description="Seed of which (name, item, start value) problems are held out for the easy split.",
    )

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "rl", "easy", "hard")
    NAMES: ClassVar[tuple[str, ...]] = ("Tom", "Ann", "Sam", "Mia")
    ITEMS: ClassVar[tuple[str, ...]] = ("apples", "coins", "books", "stamps")
    VARIABLES: ClassVar[tuple[str, ...]] = tuple("abcdefghijklmnopqrstuvwxyz")
    WORDS: ClassVar[tuple[str, ...]] = (
        "has", "gets", "more", "loses", "times", "as", "many", "keeps", "one", "of", "equal", "parts", "buys",
        "boxes", "How", "does", "have", "plus", "minus", "divided", "by", "is", "The", "answer",
    )  # fmt: skip
    CODE: ClassVar[tuple[str, ...]] = (
        "\\boxed{", "}", "def", "solve", "(", ")", "=", ";", "return", "+", "-", "*", "/", "<code>", "</code>",
    )  # fmt: skip
    VOCAB: ClassVar[tuple[str, ...]] = (
        ("PAD", "BOS", "EOS", *"0123456789", ".", "?", ":") + NAMES + ITEMS + WORDS + CODE + VARIABLES
    )
    # Templates, one token per word; `$` marks a slot: $P name, $I item, $V/$X/$Y values, $N/$A/$B operands.
    STORY: ClassVar[dict[str, str]] = {
        "start": "$P has $V $I .",
        "add": "$P gets $N more .",
        "sub": "$P loses $N .",
        "mul": "$P gets $N times as many .",
        "div": "$P keeps one of $N equal parts .",
        "box": "$P buys $A boxes of $B $I .",
        "question": "How many $I does $P have ?",
    }
    STEP: ClassVar[dict[str, str]] = {  # the nl sentence of one operation: X op N is Y
        "add": "$X plus $N is $Y .",
        "sub": "$X minus $N is $Y .",
        "mul": "$X times $N is $Y .",
        "div": "$X divided by $N is $Y .",
    }
    ANSWER: ClassVar[str] = "The answer is \\boxed{ $Y } ."
    DELIMITER: ClassVar[str] = ":"

    @field_validator("formats", mode="after")
    @classmethod
    def _as_weights(cls, v: FormatWeights | tuple[float, float, float]) -> FormatWeights:
        return v if isinstance(v, FormatWeights) else FormatWeights(code=v[0], nl=v[1], mixed=v[2])

    @model_validator(mode="after")
    def _feasible(self) -> MathFormats:
        p = Problems()
        for name in ("easy_ops", "hard_ops"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi <= MAX_OPS:
                p.add(
                    name,
                    f"[{lo}, {hi}] is not a range of operation counts; need 1 <= low <= high <= {MAX_OPS}",
                )
        if not p.items and self.hard_ops[0] <= self.easy_ops[1]:
            p.add(
                "hard_ops",
                f"hard_ops {list(self.hard_ops)} overlaps easy_ops {list(self.easy_ops)}; hard problems are held "
                f"out by having more operations: set hard_ops low > {self.easy_ops[1]}",
            )
        p.check()
        return self

    @property
    def weights(self) -> FormatWeights:
        """The format weights (always a `FormatWeights` after validation)."""
        assert isinstance(self.formats, FormatWeights)
        return self.formats

    @property
    def vocab_size(self) -> int:
        """Number of token ids the generator emits (89)."""
        return len(self.VOCAB)

    # ---- length model -----------------------------------------------------------------------------------

    def _digits(self) -> dict[str, int]:
        """Most digit tokens of each slot kind (values up to max_value; operands by their own limits)."""
        d = len(str(self.max_value))
        return {
            "P": 1,
            "I": 1,
            "V": d,
            "X": d,
            "Y": d,
            "N": len(str(ADD_MAX)),
            "A": 1,
            "B": len(str(BOX_MAX)),
        }

    def _tokens(self, template: str, nd: dict[str, int] | None = None) -> int:
        """Most tokens of a template: one per word, the most digits per slot."""
        nd = nd or self._digits()
        return sum(nd[w[1]] if w.startswith("$") else 1 for w in template.split())

    def _per_op(self) -> float:
        """Most tokens one operation adds to a document, prompt and solution, over formats and operations
        (a box sentence is two operations)."""
        nd = self._digits()
        small = dict(nd, N=1)  # * and / operands are one digit
        story = {op: self._tokens(self.STORY[op], nd if op in ("add", "sub") else small) for op in self.STORY}
        step = {op: self._tokens(self.STEP[op], nd if op in ("add", "sub") else small) for op in self.STEP}
        statement = {op: 5 + (nd["N"] if op in ("add", "sub") else 1) for op in self.STEP}  # v = u + N ;
        single = max(story[op] + max(step[op], statement[op]) for op in self.STEP)
        box_nl = self._tokens("$A times $B is $Y . $X plus $Y is $Y .", nd)
        box_code = 10 + nd["A"] + nd["B"]  # v = A * B ; w = u + v ;
        return max(single, (story["box"] + max(box_nl, box_code)) / 2)

    def max_seq_len(self) -> int:
        """Longest example over all splits (a bound: every number at its most digits)."""
        nd = self._digits()
        prompt = 1 + self._tokens(self.STORY["start"]) + self._tokens(self.STORY["question"]) + 1  # BOS ... :
        # the solution's fixed part, the largest format's: def solve ( ) : a = V ; return v | <code> ... </code>
        code = 5 + 3 + nd["V"] + 2
        mixed = 2 + 3 + nd["V"] + 2
        nl = self._tokens(self.ANSWER)
        problem = prompt + max(code, mixed, nl) + 1 + int(self.hard_ops[1] * self._per_op() + 0.999)
        story = max(self._tokens(self.STORY[k]) for k in self.STORY if k != "question")
        filler = 1 + FILLER_SENTENCES[1] * story + 1
        return max(problem, filler)

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]) of tokens per example: exact mixtures of per-(format, operations) moments that
        were measured by the generator at max_value 10000 (other values reuse them, rougher)."""
        lo, hi = self.hard_ops if split == "hard" else self.easy_ops
        counts = range(lo, hi + 1)
        t = t2 = 0.0
        for share, fmt in zip(self.weights.shares(), FORMATS, strict=True):
            for n in counts:
                m1, m2 = _LENGTH_MOMENTS[fmt][n - 1]
                t += share * m1 / len(counts)
                t2 += share * m2 / len(counts)
        if split == "train":
            f1, f2 = _FILLER_MOMENTS
            t, t2 = (1 - self.filler) * t + self.filler * f1, (1 - self.filler) * t2 + self.filler * f2
        return t, t2


# (E[T], E[T*(T+1)]) of tokens per problem document by format and number of operations 1..MAX_OPS, and of a
# filler document; measured on 20,000 documents each by engine/data/math_formats.py at max_value 10000
# (tests/test_math_formats.py checks them against fresh samples).
# fmt: off
_LENGTH_MOMENTS: dict[str, tuple[tuple[float, float], ...]] = {
    "code": ((41.71, 1784.0), (53.41, 2913.8), (65.35, 4346.1), (77.27, 6062.2), (89.13, 8049.9),
             (101.06, 10333.8), (112.95, 12893.7), (124.94, 15761.1), (136.77, 18871.5), (148.65, 22278.5),
             (160.6, 25988.1), (172.52, 29972.5)),
    "nl": ((40.86, 1717.1), (55.59, 3164.4), (70.78, 5111.5), (86.02, 7531.2), (101.36, 10437.4),
           (116.85, 13851.0), (132.33, 17746.3), (148.11, 22208.9), (163.67, 27099.0), (179.48, 32561.5),
           (195.3, 38536.3), (211.44, 45144.5)),
    "mixed": ((41.86, 1800.8), (54.01, 2979.4), (65.95, 4427.1), (77.86, 6155.8), (89.73, 8160.1),
              (101.66, 10458.5), (113.51, 13024.2), (125.54, 15913.7), (137.36, 19035.8), (149.25, 22458.6),
              (161.19, 26181.9), (173.12, 30182.7)),
}
_FILLER_MOMENTS: tuple[float, float] = (57.94, 3754.1)
# fmt: on
