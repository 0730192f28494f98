"""Config of the RL-Wall solution-tree generator (`kind: solution_tree`) and its length model."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..base import Problems
from .base import IntRange, TokenData, mean_t_t1


class SolutionTree(TokenData):
    """RL-Wall solution trees: plan a path of problem states, then execute its actions on a hidden state table.

    `BOS S s0 P p0 C c0 P p1 ... C c(n-1) P pn I x1 ... I xk : S s0 A a0 S s1 ... A a(n-1) S sn EOS`.
    """

    kind: Literal["solution_tree"] = Field(
        "solution_tree", description="RL-Wall planning/execution task (docs/papers/rl_wall.md)."
    )
    actions: int = Field(20, ge=1, le=1000, description="Number of actions (A).")
    states: int = Field(20, ge=1, le=1000, description="Number of execution states (S), the rows of T[s, a].")
    problem_states: int = Field(
        20, ge=1, le=1000, description="Number of problem states (P); the plan table PT[p, a] needs P >= A."
    )
    contexts: int = Field(20, ge=1, le=1000, description="Number of context values (C), the spurious cues.")
    actions_per_problem: IntRange = Field(
        (5, 10), description="Actions per problem n, drawn uniformly from this inclusive range."
    )
    irrelevant: int = Field(
        10, ge=0, le=1000, description="Irrelevant `I x` values appended to every prompt."
    )
    alpha: float = Field(
        0.3, gt=0, description="Dirichlet concentration of the train policy pi[s] (small = more biased)."
    )
    beta: float = Field(
        0.3, gt=0, description="Dirichlet concentration of the train contexts q[a] (small = more spurious)."
    )
    world_seed: int = Field(
        0, ge=0, description="Seed of the hidden tables and the rl/test prompt pools (not of the sampling)."
    )
    rl_prompts: int = Field(128, ge=1, le=1_000_000, description="Size of the fixed pool of RL prompts.")
    test_prompts: int = Field(512, ge=1, le=1_000_000, description="Size of the fixed pool of test prompts.")

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "rl", "test")
    SPECIAL: ClassVar[tuple[str, ...]] = ("PAD", "BOS", "EOS", ":", "S", "P", "C", "A", "I")

    @model_validator(mode="after")
    def _feasible(self) -> SolutionTree:
        p = Problems()
        lo, hi = self.actions_per_problem
        if lo < 1 or lo > hi:
            p.add(
                "actions_per_problem", f"[{lo}, {hi}] is not a range of action counts; need 1 <= low <= high"
            )
        if self.problem_states < self.actions:
            p.add(
                "problem_states",
                f"{self.problem_states} problem states cannot give each of {self.actions} actions its own next "
                "problem state (the plan must fix the action); need problem_states >= actions",
            )
        if not p.items:
            pool = self.rl_prompts + self.test_prompts
            if self.distinct_prompts(cap=2 * pool) < 2 * pool:
                p.add(
                    "test_prompts",
                    f"rl_prompts + test_prompts = {pool} distinct prompts need a prompt space of at least "
                    f"{2 * pool}, but these sizes make only {self.distinct_prompts()}; lower the pools or raise "
                    "irrelevant, actions_per_problem or the table sizes",
                )
        p.check()
        return self

    @property
    def numbers(self) -> int:
        """Number tokens `0..K-1`: K = the largest of the four table sizes (irrelevant values use all of them)."""
        return max(self.actions, self.states, self.problem_states, self.contexts)

    @property
    def vocab_size(self) -> int:
        """Number of token ids the generator emits: 9 specials and markers, then the number tokens."""
        return len(self.SPECIAL) + self.numbers

    def distinct_prompts(self, cap: int | None = None) -> int:
        """Distinct prompts of the uniform splits: S * P * K^irrelevant * sum_n (A*C)^n (stops early past `cap`)."""
        lo, hi = self.actions_per_problem
        base = self.states * self.problem_states * self.numbers**self.irrelevant
        total = 0
        for n in range(lo, hi + 1):
            total += base * (self.actions * self.contexts) ** n
            if cap is not None and total >= cap:
                break
        return total

    def seq_len(self, n: int) -> int:
        """Tokens of an example with n actions: BOS, 4n+4 in the plan, 2 per irrelevant value, ':', 4n+2, EOS."""
        return 8 * n + 2 * self.irrelevant + 9

    def max_seq_len(self) -> int:
        """Longest example over all splits (what the model's context must hold)."""
        return self.seq_len(self.actions_per_problem[1])

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]) over n ~ U{low..high}: exact for train; for rl/test, the distribution their pools
        are drawn from (a pool's own mean differs by sampling noise, and by dropping repeated short prompts
        when the prompt space is barely larger than the pools)."""
        lo, hi = self.actions_per_problem
        ts = [self.seq_len(n) for n in range(lo, hi + 1)]
        return mean_t_t1(ts)
