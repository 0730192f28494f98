"""Config of the CountDown generator (`kind: countdown`): token bounds per line and the table of lengths
measured from engine/data/countdown.py that its length model reads."""

from __future__ import annotations

import random
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..base import Problems
from .base import IntRange, TokenData, mean_t_t1


class Countdown(TokenData):
    """CountDown: reach a target from `count` inputs with +, x, larger-smaller, exact larger/smaller.

    Text = `START trace END` with the paper's 46-token vocabulary (digits one token each, no whitespace
    tokens); the prompt is START plus the trace's first line `Current State: T:[inputs], Operations: []`.
    """

    kind: Literal["countdown"] = Field(
        "countdown", description="CountDown search traces (docs/papers/backtrack.md)."
    )
    trace: Literal["optimal", "dfs"] = Field(
        "optimal",
        description="optimal = the direct path to a solution; dfs = the heuristic DFS with backtracking.",
    )
    count: int = Field(4, ge=3, le=5, description="Input numbers per problem (the paper: 4).")
    max_number: int = Field(99, ge=12, le=999, description="Inputs are drawn uniformly from 1..max_number.")
    targets: IntRange = Field((10, 100), description="Targets, inclusive [low, high], drawn uniformly.")
    held_out_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the targets held out of train and eval (split held_out)."
    )
    target_seed: int = Field(
        4, ge=0, description="Seed of the held-out targets (Python's random.shuffle; 4 = the paper's data)."
    )
    max_len: int = Field(
        4096,
        gt=0,
        description="Context limit in tokens: a longer DFS trace is cut after its last whole line, then END.",
    )

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "eval", "held_out")
    WORDS: ClassVar[tuple[str, ...]] = (
        "Exploring", "found", "Solution", "solution", "equal", "unequal", "Resulting", "to", "Operations",
        "Reached", "No", "Current", "Operation", "Node", "Moving", "Generated", "from", "State", "Numbers",
        "Goal",
    )  # fmt: skip
    VOCAB: ClassVar[tuple[str, ...]] = ("PAD", "START", "END", *"0123456789", *WORDS, *"+-*/=[]#,:.'", "UNK")

    @model_validator(mode="after")
    def _feasible(self) -> Countdown:
        p = Problems()
        lo, hi = self.targets
        if not 2 <= lo <= hi <= 1000:
            p.add("targets", f"[{lo}, {hi}] is not a range of targets; need 2 <= low <= high <= 1000")
        elif hi > (self.count - 1) * self.max_number:
            p.add(
                "targets",
                f"targets up to {hi} have few or no problems with {self.count} inputs <= {self.max_number} "
                f"(the limit is (count - 1) * max_number = {(self.count - 1) * self.max_number}); "
                "lower targets or raise max_number or count",
            )
        else:
            held, n = self.held_out_count, hi - lo + 1
            if not 1 <= held < n:
                p.add(
                    "held_out_fraction",
                    f"{self.held_out_fraction} of {n} targets holds out {held}; need 1 to {n - 1} "
                    "held-out targets: widen targets or change the fraction",
                )
        if not p.items and self.max_len < self.optimal_bound():
            p.add(
                "max_len",
                f"{self.max_len} tokens cannot hold the longest optimal trace ({self.optimal_bound()}); "
                f"set max_len >= {self.optimal_bound()}",
            )
        p.check()
        return self

    @property
    def held_out_count(self) -> int:
        """How many targets are held out: floor(fraction * number of targets), as the paper's len // 10."""
        return int(self.held_out_fraction * (self.targets[1] - self.targets[0] + 1) + 1e-9)

    def held_out_targets(self) -> tuple[int, ...]:
        """The held-out targets, sorted: the first ones of the target range shuffled by `target_seed`.

        The paper's generator does the same with Python's `random` (seed 4 gives its held-out targets).
        """
        order = list(range(self.targets[0], self.targets[1] + 1))
        random.Random(self.target_seed).shuffle(order)
        return tuple(sorted(order[: self.held_out_count]))

    @property
    def vocab_size(self) -> int:
        """Number of token ids the generator emits (the paper's 46)."""
        return len(self.VOCAB)

    def _digits(self, inputs: int) -> int:
        """Most digits of a value built from `inputs` inputs: v + 1 <= (max_number + 1) ** inputs."""
        return len(str((self.max_number + 1) ** inputs - 1))

    def _list_digits(self, level: int) -> int:
        """Most digits of the c - level numbers after `level` operations (one group of inputs each)."""
        parts = self.count - level
        return max(sum(self._digits(j) for j in p) for p in _partitions(self.count, parts))

    def _op_len(self, level: int) -> int:
        """Most tokens of `a?b=r` at a level: the operands come from at most level + 1 inputs together."""
        best = max(
            self._digits(a) + self._digits(b) + self._digits(a + b)
            for a in range(1, level + 1)
            for b in range(1, level + 2 - a)
        )
        return best + 2

    def _line_bounds(self, level: int) -> dict[str, int]:
        """Most tokens of each line kind about a node after `level` operations (0 = the inputs)."""
        dt = len(str(self.targets[1]))
        nums = 2 + self._list_digits(level) + self.count - level - 1  # [a, b, c]
        ops = 2 + sum(self._op_len(k) + 2 for k in range(1, level + 1)) + max(level - 1, 0)
        branch = [0] + [2 * (self.count - k + 1) * (self.count - k) for k in range(1, self.count)]
        idx = 1 + sum(1 + len(str(branch[k] - 1)) for k in range(1, level + 1))  # 0,r1,r2
        op = self._op_len(level) if level else 0
        return {
            "current": 3 + dt + 1 + nums + 3 + ops,  # Current State: T:[..], Operations: [..]
            "exploring": 3 + op + 4 + nums,  # Exploring Operation: op, Resulting Numbers: [..]
            "generated_dfs": 3
            + idx
            + 1
            + dt
            + 1
            + nums
            + 2
            + op,  # Generated Node #0,1: T:[..] Operation: op
            "generated_opt": 3 + len(str(level + 1)) + 1 + nums + 3 + op,  # Generated Node #2: [..] from ..
            "moving": 4 + idx,  # Moving to Node #0,1
            "end": self._digits(self.count) + 1 + dt + 4,  # r,T equal: Goal Reached | unequal: No Solution
        }

    def optimal_bound(self) -> int:
        """Most tokens of an optimal-trace example: START, the first line, count - 1 steps, END."""
        b = [self._line_bounds(k) for k in range(self.count)]
        steps = sum(
            b[k]["exploring"] + b[k]["generated_opt"] + b[k]["current"] for k in range(1, self.count - 1)
        )
        return 1 + b[0]["current"] + steps + b[-1]["exploring"] + b[-1]["end"] + 1

    def dfs_bound(self) -> int:
        """Most tokens of an uncut DFS example: every node of the full tree with all its lines."""
        total, nodes = 2 + self._line_bounds(0)["current"], 1
        for k in range(1, self.count):
            nodes *= 2 * (self.count - k + 1) * (self.count - k)
            b, up = self._line_bounds(k), self._line_bounds(k - 1)
            enter = b["exploring"] + (
                b["end"] if k == self.count - 1 else b["generated_dfs"] + b["moving"] + b["current"]
            )
            total += nodes * (enter + up["moving"] + up["current"])
        return total

    def max_seq_len(self) -> int:
        """Longest example over all splits: the optimal bound, or a DFS trace cut to max_len."""
        if self.trace == "optimal":
            return self.optimal_bound()
        return min(self.max_len, self.dfs_bound())

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]) of tokens per example: an estimate from lengths measured by the generator.

        `_LENGTH_QUANTILES` holds 32 quantiles of the uncut length per count and trace, measured at the
        paper's ranges (inputs 1..99, targets 10..100); DFS lengths are capped at max_len. Other ranges reuse
        them (rougher). Splits differ little, so every split gets the same estimate.
        """
        qs = _LENGTH_QUANTILES[self.trace][self.count]
        ts = [min(q, self.max_len) for q in qs]
        return mean_t_t1(ts)


def _partitions(total: int, parts: int) -> list[tuple[int, ...]]:
    """The ways to write `total` as `parts` positive integers (non-increasing)."""
    if parts == 1:
        return [(total,)]
    out = []
    for first in range(total - parts + 1, 0, -1):
        out += [(first, *rest) for rest in _partitions(total - first, parts - 1) if rest[0] <= first]
    return out


# Tokens per example (START..END, DFS uncut) at the quantiles (k + 0.5) / 32 of 20,000 train examples per count
# (5,000 for count 5) made by engine/data/countdown.py at the paper's ranges; tests/test_countdown.py checks
# every quantile against fresh samples (test_length_table_is_what_the_generator_makes).
# fmt: off
_LENGTH_QUANTILES: dict[str, dict[int, tuple[int, ...]]] = {
    "optimal": {
        3: (109, 113, 115, 117, 117, 117, 117, 117, 117, 119, 119, 120, 120, 120, 120, 120, 124, 124, 124,
            124, 124, 124, 124, 124, 124, 124, 124, 127, 131, 131, 131, 131),
        4: (196, 201, 202, 203, 206, 208, 208, 209, 209, 210, 212, 213, 213, 213, 213, 213, 213, 215, 215,
            218, 220, 220, 220, 220, 223, 224, 227, 229, 231, 234, 238, 254),
        5: (303, 309, 312, 315, 317, 319, 319, 321, 322, 323, 325, 326, 327, 329, 329, 329, 332, 333, 336,
            337, 339, 341, 343, 346, 348, 350, 354, 357, 364, 370, 376, 386),
    },
    "dfs": {
        3: (23, 122, 127, 128, 128, 128, 128, 128, 130, 130, 131, 135, 135, 135, 135, 135, 265, 301, 329,
            339, 396, 432, 471, 488, 533, 543, 557, 659, 756, 921, 1127, 1461),
        4: (25, 25, 26, 26, 26, 231, 238, 239, 246, 470, 490, 590, 656, 734, 966, 1272, 1621, 1896, 2111,
            2429, 2922, 3557, 4299, 5299, 6435, 7906, 9638, 11375, 13358, 15637, 18441, 23585),
        5: (27, 28, 28, 29, 29, 29, 29, 374, 821, 1777, 3065, 5301, 8052, 11276, 14934, 18443, 22083,
            27844, 33999, 41096, 48788, 59455, 72163, 85886, 105592, 133755, 162853, 203743, 255012,
            314763, 404088, 533814),
    },
}
# fmt: on
