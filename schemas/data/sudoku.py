"""Config of the sudoku generator (`kind: sudoku`), its measured tables (TRIES, FULL_EXTRA) and length model."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..base import Problems
from .base import IntRange, TokenData, mean_t_t1


class Sudoku(TokenData):
    """Sudoku (docs/papers/backtrack.md): the givens, the strategy solver's trace, the solved grid.

    Example = `START original : n` + one `(r, c) = v n` line per given + `solving n` (the prompt), the trace
    lines, `SOL_S n` + 81 `(r, c) = v n` lines + `SOL_E END`; the loss covers everything after the prompt.
    Lengths: 6 + 4 per given (prompt), 4 per line of the shortcut trace (one per empty cell), 328 (answer).
    """

    kind: Literal["sudoku"] = Field(
        "sudoku", description="Sudoku with strategy-solver traces (docs/papers/backtrack.md)."
    )
    clues: IntRange = Field(
        (22, 36),
        description="Givens per puzzle, drawn uniformly from [low, high]; fewer is harder (20 <= low <= high <= 80).",
    )
    tries: int = Field(
        100,
        ge=1,
        description="Local-search rounds per puzzle to reach its clue count; fewer than 27 givens need more (see TRIES).",
    )
    bank: int = Field(
        1000,
        ge=0,
        description=(
            "Base puzzles per clue count and split. Each is made once, on first draw, under a fixed key of its "
            "clue count, split, tries and the high end of clues (never the run's seed), and kept in memory and "
            "in $ENGINE_CACHE/sudoku (else ~/.cache/engine/sudoku); an example is a random base puzzle of its "
            "split under a random transform that keeps sudokus valid (digits relabelled, rows and columns "
            "permuted within bands and stacks, bands and stacks permuted, transposition: up to 9!*6^8*2 = "
            "1.2e12 variants), solved afresh for its trace. Variants of one base share its givens pattern up to "
            "symmetry and its hardest strategy; their guess counts and traces differ. Train and eval banks "
            "share no base puzzle. About 25x the paper's pipeline once built; 0: a fresh puzzle per example "
            "(about 2x, every example a new base)."
        ),
    )
    trace: Literal["full", "shortcut", "none"] = Field(
        "shortcut",
        description="Trace before the answer: full (guesses, dead ends, reverts), shortcut (reverted branches dropped), none.",
    )
    max_tokens: int = Field(
        4096,
        ge=1,
        description="Context limit per example: a puzzle whose full trace makes it longer is redrawn.",
    )

    VOCAB: ClassVar[tuple[str, ...]] = (
        *("MASK", "START", "END", *"0123456789"),
        *("original", "solving", "guess", "revert", "nocand", "invalid", "=", ":", "[", "]"),
        *(f"({r}, {c})" for r in range(9) for c in range(9)),
        *(",", "n", "none", "SOL_S", "SOL_E"),
    )
    STRATEGIES: ClassVar[tuple[str, ...]] = (
        *("lone_single", "hidden_single", "naked_pair", "naked_triplet", "locked_candidate", "xy_wing"),
        *("unique_rectangle", "guess"),
    )
    PROMPT: ClassVar[int] = 6  # START original : n ... solving n, plus 4 per given
    ANSWER: ClassVar[int] = 328  # SOL_S n, 81 lines of 4, SOL_E END
    SHORTCUT: ClassVar[int] = 658  # PROMPT + 4 * 81 + ANSWER: every cell is one line, given or solved
    FULL_MIN: ClassVar[int] = 1024  # smallest max_tokens for full traces
    # Rounds that 99% of puzzles need to reach a clue count (measured over 300 puzzles per count, 150 below
    # 22, times ~1.25); counts of 27 and more are reached by the first removal pass.
    TRIES: ClassVar[dict[int, int]] = {20: 2200, 21: 190, 22: 52, 23: 32, 24: 10, 25: 4, 26: 2}
    # Full traces: (E[X], E[X^2]) of the tokens X beyond SHORTCUT (guess, nocand, revert lines and the
    # assignments of dead branches) per clue count, measured over 400 puzzles each (150 at 20-21) without a
    # token limit; about none from 38 givens up. A max_tokens that cuts the tail makes these a little high.
    FULL_EXTRA: ClassVar[dict[int, tuple[float, float]]] = {
        20: (32.5, 11838), 21: (32.2, 8229), 22: (32.3, 10779), 23: (43.2, 18769), 24: (46.4, 19698),
        25: (44.5, 22753), 26: (27.3, 6228), 27: (21.2, 6007), 28: (16.8, 4128), 29: (12.0, 2980),
        30: (5.5, 885), 31: (5.5, 834), 32: (2.7, 518), 33: (2.1, 245), 34: (1.1, 99), 35: (0.7, 68),
        36: (0.4, 40), 37: (0.3, 49),
    }  # fmt: skip

    @model_validator(mode="after")
    def _feasible(self) -> Sudoku:
        p = Problems()
        lo, hi = self.clues
        if lo < 17:
            p.add(
                "clues",
                f"[{lo}, {hi}]: no sudoku with fewer than 17 givens has a unique solution; raise the low end",
            )
        elif lo < 20:
            p.add(
                "clues",
                f"[{lo}, {hi}]: random removal with local search does not reach fewer than 20 givens in practice; raise the low end to >= 20",
            )
        if lo > hi or hi > 80:
            p.add("clues", f"[{lo}, {hi}] is not a range of clue counts; need 20 <= low <= high <= 80")
        need = self.TRIES.get(lo, 1) if lo >= 20 else None
        if need is not None and self.tries < need:
            p.add(
                "tries",
                f"tries={self.tries} cannot reliably reach {lo} givens: {lo} needs tries >= {need} (99% of puzzles get there in that many rounds); raise tries or the low end of clues",
            )
        floor = self.FULL_MIN if self.trace == "full" else self.seq_len(hi)
        if self.max_tokens < floor:
            why = {
                "full": "full traces are 658 tokens plus their guesses, and a shorter limit redraws most puzzles that need one",
                "shortcut": "every shortcut example is 658 tokens",
                "none": f"an answer-only example with {hi} givens is {floor} tokens",
            }[self.trace]
            p.add(
                "max_tokens", f"max_tokens={self.max_tokens} is too small: {why}; set max_tokens >= {floor}"
            )
        p.check()
        return self

    @property
    def vocab_size(self) -> int:
        """Number of token ids the generator emits."""
        return len(self.VOCAB)

    def seq_len(self, clues: int) -> int:
        """Tokens of an example with `clues` givens and a shortcut trace or none (full traces are longer)."""
        return self.SHORTCUT if self.trace != "none" else self.PROMPT + 4 * clues + self.ANSWER

    def max_seq_len(self) -> int:
        """Longest example: 658 (shortcut trace), 334 + 4 * high (none), max_tokens (full)."""
        return self.max_tokens if self.trace == "full" else self.seq_len(self.clues[1])

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]), clue counts uniform: exact for shortcut and none, from FULL_EXTRA for full."""
        lo, hi = self.clues
        counts = range(lo, hi + 1)
        if self.trace != "full":
            ts = [self.seq_len(c) for c in counts]
            return mean_t_t1(ts)
        t0 = self.SHORTCUT
        ex = [self.FULL_EXTRA.get(c, (0.0, 0.0)) for c in counts]
        mean = sum(m for m, _ in ex) / len(ex)
        square = sum(m2 for _, m2 in ex) / len(ex)
        return t0 + mean, t0 * (t0 + 1) + (2 * t0 + 1) * mean + square
