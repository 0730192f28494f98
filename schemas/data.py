"""Data generator configs, one class per `kind`; each knows its vocabulary size and sequence lengths."""

from __future__ import annotations

import functools
import math
import random
from functools import cache
from itertools import permutations
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from .base import Problems, Strict, kinded, spec_error

IntRange = Annotated[tuple[int, int], Field(description="Inclusive range [low, high].")]


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


class SparseParity(TokenData):
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

    def max_seq_len(self) -> int:
        """Longest example over all splits (what the model's context must hold)."""
        return self.seq_len("eval", max(self.length.train[1], self.length.eval[1]))

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]) of the tokens T of one example of `split`: what FLOPs in the plan need."""
        lo, hi = getattr(self.length, split)
        ts = [self.seq_len(split, n) for n in range(lo, hi + 1)]
        return sum(ts) / len(ts), sum(t * (t + 1) for t in ts) / len(ts)

    def length_bounds(self) -> tuple[int, int]:
        """From k (the planted bits must fit) to the longest length of either range."""
        return self.k_range[1], max(self.length.train[1], self.length.eval[1])


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
        return sum(ts) / len(ts), sum(t * (t + 1) for t in ts) / len(ts)


ConnectivityStrategy = Literal["shortest_path", "path", "dfs", "dfs_backtrack", "walk", "none"]


class Connectivity(TokenData):
    """Graph connectivity (Let Me Think): two disjoint Bridge(d) copies; which of t1, t2 does s reach?

    Prompt `BOS graph : [ u v ... ] task : s to t1 or t2 /`, answer `work : [ n1 .. nk ] decision : [ t ] EOS`
    (strategy none: `decision : [ t ] EOS`); the loss covers the answer only. Lengths are exact: the trace
    length distribution of every strategy is computed by dynamic programming in pure Python.
    """

    kind: Literal["connectivity"] = Field(
        "connectivity",
        description="Bridge(d) graph connectivity with a search trace (docs/papers/let_me_think.md).",
    )
    depth: int = Field(
        5, description="Petals d per Bridge copy: 10d+1 nodes and 11d edges per copy, shortest s-t path 3d."
    )
    strategy: ConnectivityStrategy = Field(
        "dfs",
        description="Trace after `work:`: shortest_path, path (DFS stack at t), dfs (visit order), "
        "dfs_backtrack (DFS walk with backtracking), walk (random walk of <= walk_length steps), none.",
    )
    walk_length: int = Field(
        25,
        description="Strategy walk: a random walk conditioned to hit t within this many steps (>= 3*depth).",
    )

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "eval")
    WORDS: ClassVar[tuple[str, ...]] = (
        "PAD", "BOS", "EOS", "UNK", "/", "graph", "task", "work", "decision", "to", "or",
        ":", "[", "(", ",", ")", "]",
    )  # fmt: skip
    MAX_DEPTH: ClassVar[int] = 100
    MAX_WALK: ClassVar[int] = 1000

    @model_validator(mode="after")
    def _feasible(self) -> Connectivity:
        p = Problems()
        if not 1 <= self.depth <= self.MAX_DEPTH:
            p.add(
                "depth",
                f"depth={self.depth} is not a Bridge depth; need 1 <= depth <= {self.MAX_DEPTH} "
                f"(depth 0 has no path from s to t; depth {self.MAX_DEPTH} already makes {44 * self.MAX_DEPTH + 13}-token prompts)",
            )
        elif self.strategy == "walk" and self.walk_length < 3 * self.depth:
            p.add(
                "walk_length",
                f"walk_length={self.walk_length} is shorter than the shortest s-t path (3*depth = {3 * self.depth}), "
                f"so no walk reaches t; raise walk_length to at least {3 * self.depth}",
            )
        elif self.strategy == "walk" and self.walk_length > self.MAX_WALK:
            p.add("walk_length", f"walk_length={self.walk_length} exceeds {self.MAX_WALK}; lower it")
        p.check()
        return self

    @property
    def nodes(self) -> int:
        """Nodes N of both copies (node ids 0..N-1): 2(10d+1)."""
        return 2 * (10 * self.depth + 1)

    def vocab_tokens(self) -> tuple[str, ...]:
        """Token strings by id: PAD BOS EOS first, then the paper's words and punctuation, then node ids."""
        return self.WORDS + tuple(str(i) for i in range(self.nodes))

    @property
    def vocab_size(self) -> int:
        """Number of token ids the generator emits: 17 words and N node ids (119 at d = 5)."""
        return len(self.WORDS) + self.nodes

    def bridge_edges(self) -> list[tuple[int, int]]:
        """The 11d edges of one Bridge(d) copy in canonical ids (petal i's local node j is 10i + j)."""
        return _bridge_edges(self.depth)

    @property
    def prompt_len(self) -> int:
        """Tokens up to and including `/`: BOS graph : [ 2*22d node ids ] task : s to t1 or t2 /."""
        return 44 * self.depth + 13

    def answer_len(self, work: int) -> int:
        """Answer tokens for a trace of `work` nodes: `work : [ .. ] decision : [ t ] EOS` (none: the last 6)."""
        return 6 if self.strategy == "none" else work + 10

    def work_lengths(self) -> dict[int, float]:
        """The exact distribution of trace nodes k (0 for strategy none): {k: probability}."""
        return dict(_work_lengths(self.depth, self.strategy, self.walk_length))

    def max_seq_len(self) -> int:
        """Longest example: the prompt plus the longest trace the strategy can make (walk: walk_length + 1)."""
        longest = self.walk_length + 1 if self.strategy == "walk" else max(self.work_lengths())
        return self.prompt_len + self.answer_len(longest)

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]), exact from the trace length distribution (the splits share it)."""
        ts = [(self.prompt_len + self.answer_len(k), q) for k, q in self.work_lengths().items()]
        return sum(t * q for t, q in ts), sum(t * (t + 1) * q for t, q in ts)


# One petal (docs/papers/let_me_think.md), ids 0..10: short arc 0-1-2-10, long 0-6-5-4-3-10, dead end 0-9-8-7.
PETAL = ((0, 1), (1, 2), (2, 10), (0, 6), (6, 5), (5, 4), (4, 3), (3, 10), (0, 9), (9, 8), (8, 7))


def _bridge_edges(depth: int) -> list[tuple[int, int]]:
    """The 11d edges of Bridge(depth): petal i's node 10 is petal i+1's node 0 (id 10i + local)."""
    return [(10 * i + u, 10 * i + v) for i in range(depth) for u, v in PETAL]


@cache
def _work_lengths(depth: int, strategy: str, walk_length: int) -> tuple[tuple[int, float], ...]:
    """Exact trace length distribution (nodes) of a Connectivity strategy; see `_dfs_lengths`, `_walk_lengths`."""
    if strategy == "none":
        return ((0, 1.0),)
    if strategy == "shortest_path":
        return ((3 * depth + 1, 1.0),)
    if strategy == "walk":
        return _walk_lengths(depth, walk_length)
    return _dfs_lengths(depth, strategy)


def _dfs_lengths(depth: int, strategy: str) -> tuple[tuple[int, float], ...]:
    """Trace lengths of the randomised DFS from s, petal by petal.

    At each junction (s, then node 10 of every petal) the DFS takes the unvisited neighbours in a uniformly
    random order: the short arc S (2 nodes to the next junction), the long arc L (4), the dead end D (3) and,
    past the first petal, the back arc B (the arc of the previous petal not taken, walked backwards: 4 nodes
    after S, 2 after L). Dead ends before the first of S, L are explored and abandoned; the DFS never returns
    to an earlier junction (t is reachable from every later one). A trace adds per petal: path the forward
    arc and junction; dfs also m nodes per explored dead end of m nodes; dfs_backtrack 2m (there and back).
    """
    dist: dict[tuple[str, int], float] = {("", 1): 1.0}  # (arc taken into the junction, trace nodes) -> prob
    for petal in range(depth):
        options = ("S", "L", "D") + (("B",) if petal else ())
        orders = list(permutations(options))
        step: dict[tuple[str, str, int], float] = {}  # (arc in, arc out, nodes added) -> prob
        for prev in {arc for arc, _ in dist}:
            for order in orders:
                added = 0
                for o in order:
                    if o in ("S", "L"):
                        key = (prev, o, added + (3 if o == "S" else 5))
                        step[key] = step.get(key, 0.0) + 1 / len(orders)
                        break
                    m = 3 if o == "D" else (4 if prev == "S" else 2)
                    added += {"path": 0, "dfs": m, "dfs_backtrack": 2 * m}[strategy]
        new: dict[tuple[str, int], float] = {}
        for (prev, k), q in dist.items():
            for (arc_in, arc_out, added), r in step.items():
                if arc_in == prev:
                    new[(arc_out, k + added)] = new.get((arc_out, k + added), 0.0) + q * r
        dist = new
    out: dict[int, float] = {}
    for (_, k), q in dist.items():
        out[k] = out.get(k, 0.0) + q
    return tuple(sorted(out.items()))


def _walk_lengths(depth: int, walk_length: int) -> tuple[tuple[int, float], ...]:
    """Trace lengths of the walk strategy: a uniform random walk from s conditioned to hit t within L steps.

    Picking each step with probability proportional to P(hit t within the remaining steps) is exactly that
    conditioning (a Doob h-transform), so P(k steps) = P(first hit at step k) / P(first hit <= L).
    """
    size = 10 * depth + 1
    adj: list[list[int]] = [[] for _ in range(size)]
    for u, v in _bridge_edges(depth):
        adj[u].append(v)
        adj[v].append(u)
    target = size - 1
    mass = [0.0] * size
    mass[0] = 1.0
    hits = []
    for _ in range(walk_length):
        new = [0.0] * size
        for v, m in enumerate(mass):
            if m:
                share = m / len(adj[v])
                for u in adj[v]:
                    new[u] += share
        hits.append(new[target])
        new[target] = 0.0
        mass = new
    total = sum(hits)  # hits[i]: first hit at step i + 1, a trace of i + 2 nodes
    return tuple((i + 2, h / total) for i, h in enumerate(hits) if h > 0)


class CopyTask(TokenData):
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

    def max_seq_len(self) -> int:
        """Longest example over all splits."""
        return self.seq_len("eval", max(self.length.train[1], self.length.eval[1]))

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]) of T = 2n + 3 with n uniform over the split's range (exact)."""
        lo, hi = getattr(self.length, split)
        ts = [self.seq_len(split, n) for n in range(lo, hi + 1)]
        return sum(ts) / len(ts), sum(t * (t + 1) for t in ts) / len(ts)

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
            return sum(ts) / len(ts), sum(t * (t + 1) for t in ts) / len(ts)
        t0 = self.SHORTCUT
        ex = [self.FULL_EXTRA.get(c, (0.0, 0.0)) for c in counts]
        mean = sum(m for m, _ in ex) / len(ex)
        square = sum(m2 for _, m2 in ex) / len(ex)
        return t0 + mean, t0 * (t0 + 1) + (2 * t0 + 1) * mean + square


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
        return sum(ts) / len(ts), sum(t * (t + 1) for t in ts) / len(ts)


def _partitions(total: int, parts: int) -> list[tuple[int, ...]]:
    """The ways to write `total` as `parts` positive integers (non-increasing)."""
    if parts == 1:
        return [(total,)]
    out = []
    for first in range(total - parts + 1, 0, -1):
        out += [(first, *rest) for rest in _partitions(total - first, parts - 1) if rest[0] <= first]
    return out


# Tokens per example (START..END, DFS uncut) at the quantiles (k + 0.5) / 32 of 20,000 train examples per count
# (5,000 for count 5) made by engine/data/countdown.py at the paper's ranges; tests check them against samples.
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


MIN_ACCEPT = 0.02  # least share of random graphs that must have a query pair at min_distance
SIM_SIZES = 8  # node counts simulated by _graph_stats (evenly spread over the range)
SIM_GRAPHS = 24  # graphs per simulated node count
SIM_SOURCES = 6  # BFS sources per simulated graph for the mean query distance


def _max_diameter(n: int, m: int) -> int:
    """The largest diameter of a connected graph of n nodes and m edges (Ore 1968: m <= D + (n-D-1)(n-D+4)/2)."""
    best = 1
    for d in range(2, n):
        if m <= d + (n - d - 1) * (n - d + 4) // 2:
            best = d
    return best


def _bfs(adj: list[set[int]], s: int) -> dict[int, int]:
    """BFS distances from s."""
    depth, frontier = {s: 0}, [s]
    while frontier:
        nxt = []
        for u in frontier:
            for v in adj[u] - depth.keys():
                depth[v] = depth[u] + 1
                nxt.append(v)
        frontier = nxt
    return depth


@functools.lru_cache(maxsize=64)
def _graph_stats(
    lo: int, hi: int, edges: tuple[int, ...], min_distance: int
) -> tuple[dict[int, float], dict[int, float]]:
    """Simulate shortest_path's graphs in pure Python at up to SIM_SIZES node counts n of [lo, hi]: the share of
    graphs with a pair at distance >= min_distance, and the mean distance of a query (a pair at >= min_distance).

    The model of engine/data/shortest_path.py: a random recursive spanning tree plus uniform extra edges.
    Whether a graph has a far pair is judged by a double BFS sweep (exact on trees, a lower bound otherwise);
    the mean distance from SIM_SOURCES random sources. Seeded, so validation and plans are deterministic, and
    cheap (SIM_SIZES * SIM_GRAPHS graphs) whatever the node range.
    """
    rng = random.Random(0)
    sizes = sorted({lo + round(k * (hi - lo) / max(1, SIM_SIZES - 1)) for k in range(SIM_SIZES)})
    accept, dist = {}, {}
    for n in sizes:
        hits, total = 0, 0.0
        for _ in range(SIM_GRAPHS):
            adj: list[set[int]] = [set() for _ in range(n)]
            for k in range(1, n):
                u = rng.randrange(k)
                adj[k].add(u)
                adj[u].add(k)
            for _ in range(edges[n] - (n - 1)):  # uniform among the free pairs (validation leaves some)
                while True:
                    i, j = rng.sample(range(n), 2)
                    if j not in adj[i]:
                        break
                adj[i].add(j)
                adj[j].add(i)
            sweep = _bfs(adj, rng.randrange(n))
            if max(_bfs(adj, max(sweep, key=sweep.get)).values()) < min_distance:
                continue
            far = [d for s in rng.sample(range(n), min(n, SIM_SOURCES)) for d in _bfs(adj, s).values()]
            far = [d for d in far if d >= min_distance]
            if far:
                hits += 1
                total += sum(far) / len(far)
        accept[n] = hits / SIM_GRAPHS
        dist[n] = total / hits if hits else float(min_distance)
    return accept, dist


class ShortestPath(TokenData):
    """Shortest paths in random graphs: `BOS u v ... | s t ? s ... t EOS` (docs/papers/mixture_of_parrots.md).

    A graph of n ~ U[nodes] nodes has a random spanning tree plus uniform extra edges, max(n-1,
    round(mean_degree*n/2)) edges in all, labelled by n distinct tokens of `labels`; the query (s, t) is uniform
    over ordered pairs at distance >= min_distance, the answer a shortest path (loss on it and EOS). A labelled
    graph belongs to eval iff a hash of its edge set falls below `eval_fraction`, so no eval graph is trained on.
    """

    kind: Literal["shortest_path"] = Field(
        "shortest_path", description="Shortest path in a random graph (docs/papers/mixture_of_parrots.md)."
    )
    nodes: IntRange = Field((10, 20), description="Nodes per graph, inclusive [low, high], uniform.")
    labels: int = Field(64, ge=2, description="Node-label tokens; a graph's nodes get distinct labels.")
    mean_degree: float = Field(
        3.0, gt=0, description="Mean degree: a graph of n nodes has round(mean_degree*n/2) edges."
    )
    min_distance: int = Field(
        2, ge=1, description="Least BFS distance between the query's source and target."
    )
    eval_fraction: float = Field(
        0.1,
        ge=0.01,
        le=0.99,
        description="Share of labelled graphs (by a hash of the edge set) that only eval shows; train never does.",
    )
    tie_break: Literal["smallest", "random"] = Field(
        "smallest",
        description="The generator's path among equal shortest ones: each hop to the smallest label, or random.",
    )

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "eval")
    SPECIALS: ClassVar[tuple[str, ...]] = ("PAD", "BOS", "EOS", "|", "?")

    @model_validator(mode="after")
    def _feasible(self) -> ShortestPath:
        p = Problems()
        lo, hi = self.nodes
        if lo < 2 or lo > hi:
            p.add("nodes", f"[{lo}, {hi}] is not a range of node counts; need 2 <= low <= high")
            p.check()
        if self.labels < hi:
            p.add(
                "labels",
                f"{self.labels} labels cannot name the {hi} nodes of the largest graph; need labels >= {hi}",
            )
        least = 2 * (hi - 1) / hi
        if self.mean_degree < least:
            p.add(
                "mean_degree",
                f"{self.mean_degree} is below {least:.3g} = 2(n-1)/n, the least a connected graph of {hi} nodes has; raise it",
            )
        over = [n for n in range(lo, hi + 1) if self.edges(n) > n * (n - 1) // 2 - (self.min_distance > 1)]
        if over:
            n = over[0]
            p.add(
                "mean_degree",
                f"{self.mean_degree} asks {self.edges(n)} edges of a graph of {n} nodes, which has "
                + (f"{n * (n - 1) // 2} pairs" if self.min_distance == 1 else "no pair at distance >= 2 then")
                + f"; lower mean_degree below {n - 1}",
            )
        elif self.min_distance > 1:
            reach = {n: _max_diameter(n, self.edges(n)) for n in range(lo, hi + 1)}
            short = [n for n, d in reach.items() if d < self.min_distance]
            if short:
                n = short[0]
                p.add(
                    "min_distance",
                    f"{self.min_distance} is impossible for graphs of {n} nodes and {self.edges(n)} edges: no two "
                    f"nodes are more than {reach[n]} apart (Ore's bound); lower min_distance, raise nodes or lower "
                    "mean_degree",
                )
            elif self.min_distance > 2:  # possible; check that random graphs reach it often enough to sample
                shares = _graph_stats(lo, hi, self.edges_table(), self.min_distance)[0]
                accept = sum(shares.values()) / len(shares)
                if accept < MIN_ACCEPT:
                    p.add(
                        "min_distance",
                        f"only {accept:.1%} of random graphs with nodes [{lo}, {hi}] and mean_degree "
                        f"{self.mean_degree} have a pair at distance >= {self.min_distance} (need "
                        f"{MIN_ACCEPT:.0%}); lower min_distance, raise nodes or lower mean_degree",
                    )
        p.check()
        return self

    def edges(self, n: int) -> int:
        """Edges of a graph of n nodes: round(mean_degree * n / 2), at least a spanning tree's n - 1."""
        return max(n - 1, math.floor(self.mean_degree * n / 2 + 0.5))

    def edges_table(self) -> tuple[int, ...]:
        """edges(n) for n = 0 .. nodes[1] (what the generator indexes)."""
        return tuple(self.edges(n) if n >= 1 else 0 for n in range(self.nodes[1] + 1))

    @property
    def vocab_size(self) -> int:
        """Specials ('|', '?') then one token per label."""
        return len(self.SPECIALS) + self.labels

    def seq_len(self, nodes: int, distance: int) -> int:
        """Tokens of one example: BOS, 2 per edge, '| s t ?', the d+1 path nodes, EOS."""
        return 2 * self.edges(nodes) + distance + 7

    def max_seq_len(self) -> int:
        """A path visits at most every node once: distance <= nodes - 1."""
        hi = self.nodes[1]
        return self.seq_len(hi, hi - 1)

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """Estimate from a small seeded pure-Python simulation of the graphs (cached, see _graph_stats): node
        counts weighted by their simulated share of graphs with a query pair (the generator redraws the others),
        the path by its simulated mean length at that node count.

        Both splits draw the same graphs (the split hash does not depend on size); a test checks the estimate
        against 2000 sampled examples.
        """
        lo, hi = self.nodes
        accept, dist = _graph_stats(lo, hi, self.edges_table(), self.min_distance)
        weights = accept if any(accept.values()) else dict.fromkeys(accept, 1.0)
        total = sum(weights.values())
        ts = {n: self.seq_len(n, 0) + dist[n] for n in weights}
        mean = sum(w * ts[n] for n, w in weights.items()) / total
        return mean, sum(w * ts[n] * (ts[n] + 1) for n, w in weights.items()) / total


class KgExperts(TokenData):
    """Knowledge-graph experts (docs/papers/transcendence.md): text from corrupted experts, cloze queries.

    A world (from `world_seed`) holds `entities` fictional one-token names in `clusters`, and `relations`
    functional typed relations, each with 2 sentence templates. Each expert sees a corrupted copy of the graph
    according to its per-cluster confidences. `train` = packed blocks of entity paragraphs written by sampled
    experts (loss on every token: pretraining text); `eval`/`test` = cloze queries `the <r> of X is` with the
    true object as the answer (loss on the answer only).
    """

    kind: Literal["kg_experts"] = Field(
        "kg_experts",
        description="Knowledge-graph experts and cloze queries (docs/papers/transcendence.md).",
    )
    mode: Literal["denoising", "selection", "generalization"] = Field(
        "denoising",
        description="denoising: confidences drawn from `confidences`; selection: confidences solve the knowledge-budget LP; generalization: two-hop queries.",
    )
    world_seed: int = Field(
        0, ge=0, description="Seed of the world: names, clusters, true graph, experts' graphs."
    )
    entities: int = Field(
        1000, ge=2, le=1_000_000, description="Fictional entities, one name token each (the paper: 10k)."
    )
    clusters: int = Field(
        10, ge=1, description="Clusters of entities; expertise is per cluster (the paper: 100)."
    )
    relations: int = Field(
        8,
        ge=1,
        le=40,
        description="Functional relations; every entity has one object per relation (the paper: 20).",
    )
    range_fraction: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Each relation's objects come from its own random range of this fraction of entities (its type).",
    )
    experts: int = Field(5, ge=1, description="Experts, each with its own corrupted copy of the graph.")
    entities_per_expert: int | None = Field(
        None,
        ge=1,
        description="Entities of the clusters each expert is confident on (greedy fill in random order); null = all (the paper's denoising).",
    )
    confidences: tuple[float, ...] = Field(
        (0.6, 0.8, 1.0),
        min_length=1,
        description="denoising/generalization: each chosen cluster's confidence c is drawn from these (one value = the authors' runs).",
    )
    knowledge_per_expert: float | None = Field(
        None,
        gt=0,
        description="selection: confidences maximise sum(c) subject to sum(|C|*c) = this; null = half of entities_per_expert.",
    )
    heldout_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="generalization: fraction of entities whose two-hop facts appear only in `test`.",
    )
    two_hop_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="generalization: fraction of training documents that state a two-hop fact (of a non-held-out entity).",
    )
    cot: bool = Field(
        False,
        description="generalization: two-hop answers first write the intermediate fact (chain of thought).",
    )
    text_len: int = Field(
        256,
        ge=2,
        le=65536,
        description="Tokens per training block (BOS, then paragraphs joined by EOS, cut; the paper: 512).",
    )

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "eval", "test")
    RELATION_NAMES: ClassVar[tuple[str, ...]] = (
        "mother", "father", "mentor", "rival", "employer", "neighbour", "doctor", "lawyer",
        "teacher", "partner", "landlord", "banker", "tailor", "barber", "coach", "agent",
        "sponsor", "guardian", "heir", "successor", "pupil", "patron", "friend", "boss",
        "editor", "publisher", "captain", "pilot", "chef", "gardener", "best friend", "old rival",
        "first teacher", "business partner", "favourite author", "piano teacher", "chess coach",
        "family doctor", "tax advisor", "personal trainer",
    )  # fmt: skip
    # Template words (relation words aside); S = subject, O = object, R = relation words, M = intermediate.
    WORDS: ClassVar[tuple[str, ...]] = ("the", "of", "is", "'s", "has", "as", "for", ",", "so")
    QUERY: ClassVar[tuple[str, ...]] = ("the", "R", "of", "S", "is", "O", ".")  # template 0 = the cloze form
    ALT_TEMPLATES: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("S", "'s", "R", "is", "O", "."),
        ("S", "has", "O", "as", "R", "."),
        ("for", "S", ",", "the", "R", "is", "O", "."),
    )  # template 1 of each relation: one of these, chosen by the world seed

    @model_validator(mode="after")
    def _feasible(self) -> KgExperts:
        p = Problems()
        n, k = self.entities, self.clusters
        if k > n:
            p.add(
                "clusters",
                f"clusters={k} exceeds entities={n}; every cluster needs an entity: lower clusters",
            )
        if self.experts > n:
            p.add("experts", f"experts={self.experts} exceeds entities={n}; lower experts or raise entities")
        bad = [c for c in self.confidences if not 0 <= c <= 1]
        if bad:
            p.add(
                "confidences",
                f"{bad} lie outside [0, 1]; a confidence is the probability that a fact survives",
            )
        largest = -(-n // max(k, 1))
        per = self.entities_per_expert
        if per is not None and per > n:
            p.add(
                "entities_per_expert", f"{per} exceeds entities={n}; lower it or leave it null (all entities)"
            )
        elif per is not None and per < largest and k <= n:
            p.add(
                "entities_per_expert",
                f"{per} is smaller than a cluster ({largest} entities), so an expert could get none; raise it to >= {largest}",
            )
        if self.mode == "selection" and not p.items:
            budget, least = self.knowledge_budget, self.selected_at_least
            if budget > least:
                p.add(
                    "knowledge_per_expert",
                    f"{budget:g} cannot be met: an expert's clusters may hold only {least} entities (sum |C|*c <= {least}); "
                    f"lower it to <= {least} or raise entities_per_expert",
                )
        if self.mode == "generalization":
            held = self.heldout_entities
            if held < 1 or held > n - 1:
                p.add(
                    "heldout_fraction",
                    f"{self.heldout_fraction} of {n} entities holds out {held}; need 1 <= held out <= {n - 1}",
                )
        elif self.cot:
            p.add(
                "cot",
                f"cot writes the intermediate fact of two-hop queries; mode {self.mode!r} has none (use generalization)",
            )
        p.check()
        return self

    @property
    def two_hop(self) -> bool:
        """Whether the queries are two-hop (generalization mode)."""
        return self.mode == "generalization"

    @property
    def heldout_entities(self) -> int:
        """Entities whose two-hop facts are held out of training (generalization)."""
        return round(self.heldout_fraction * self.entities)

    @property
    def cluster_sizes(self) -> tuple[int, int]:
        """(smallest, largest) cluster: clusters are balanced."""
        return self.entities // self.clusters, -(-self.entities // self.clusters)

    @property
    def expert_entities(self) -> int:
        """entities_per_expert, null resolved to all entities."""
        return self.entities if self.entities_per_expert is None else self.entities_per_expert

    @property
    def selected_at_least(self) -> int:
        """A guaranteed lower bound on the entities of an expert's clusters (greedy fill in random order).

        The fill skips a cluster only when it does not fit, so it ends within one cluster of the target: either
        every cluster is taken (all entities) or the total exceeds entities_per_expert minus the largest cluster.
        """
        per = self.expert_entities
        return self.entities if per >= self.entities else per - self.cluster_sizes[1] + 1

    @property
    def knowledge_budget(self) -> float:
        """knowledge_per_expert, null resolved to half of the expert's entities."""
        return self.expert_entities / 2 if self.knowledge_per_expert is None else self.knowledge_per_expert

    def relation_words(self) -> tuple[tuple[str, ...], ...]:
        """The words of each relation's name."""
        return tuple(tuple(name.split()) for name in self.RELATION_NAMES[: self.relations])

    def words(self) -> tuple[str, ...]:
        """The template words of the vocabulary, in id order after PAD, BOS, EOS (then '.', then names)."""
        seen = list(self.WORDS)
        for rel in self.relation_words():
            seen += [w for w in rel if w not in seen]
        return tuple(seen)

    @property
    def vocab_size(self) -> int:
        """PAD, BOS, EOS, template words, '.', one token per entity."""
        return 3 + len(self.words()) + 1 + self.entities

    def query_len(self, r1: int, r2: int | None = None) -> int:
        """Tokens of one query example: BOS, prompt, answer, EOS (r2 given: two-hop `the r2 of the r1 of X is`)."""
        w = self.relation_words()
        if r2 is None:
            return len(w[r1]) + 8  # BOS the R of X is Y . EOS
        if self.cot:  # ... is the R1 of X is M , so the R2 of M is Y . EOS
            return 2 * (len(w[r1]) + len(w[r2])) + 21
        return len(w[r1]) + len(w[r2]) + 10  # BOS the R2 of the R1 of X is Y . EOS

    def _query_lens(self) -> list[int]:
        r = range(self.relations)
        return (
            [self.query_len(a, b) for a in r for b in r] if self.two_hop else [self.query_len(a) for a in r]
        )

    def max_seq_len(self) -> int:
        """Training blocks are exactly text_len tokens; queries are at most the longest query."""
        return max(self.text_len, max(self._query_lens()))

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """Exact: blocks are text_len tokens; queries draw their relations uniformly."""
        ts = [self.text_len] if split == "train" else self._query_lens()
        return sum(ts) / len(ts), sum(t * (t + 1) for t in ts) / len(ts)


FloatRange = Annotated[tuple[float, float], Field(description="Inclusive range [low, high].")]
VideoShape = Literal["disc", "square", "triangle", "ring", "cross"]
VideoColour = Literal["red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange"]
VideoTexture = Literal["solid", "stripes", "checker"]
VideoTask = Literal["direction", "speed", "rotation", "shape", "colour", "texture"]


def _distinct(p: Problems, name: str, values: tuple) -> None:
    """Record a problem when `values` is empty or repeats an item."""
    if not values:
        p.add(name, f"{name} is empty; list at least one")
    elif len(set(values)) != len(values):
        p.add(name, f"{name} {list(values)} repeats an item; list each once")


class SyntheticVideo(Strict):
    """Procedural clips (numpy): textured shapes that move, bounce and spin over a noisy background.

    The largest object is the target; motion labels (direction, speed, rotation) are invisible in any single
    frame, appearance labels (shape, colour, texture) are visible in every frame.
    """

    kind: Literal["synthetic_video"] = Field(
        "synthetic_video",
        description="Synthetic moving-shapes clips for SSL and probes (docs/papers/salt.md).",
    )
    frames: int = Field(16, ge=2, le=256, description="Frames per clip (T).")
    resolution: int = Field(64, ge=16, le=1024, description="Frame height and width in pixels (square).")
    channels: Literal[1, 3] = Field(3, description="3 = RGB, 1 = grey (luma).")
    objects: IntRange = Field((1, 3), description="Objects per clip, target included, inclusive [low, high].")
    shapes: tuple[VideoShape, ...] = Field(
        ("disc", "square", "triangle", "ring", "cross"), description="Shapes drawn from (classes of `shape`)."
    )
    colours: tuple[VideoColour, ...] = Field(
        ("red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange"),
        description="Palette; objects of one clip have distinct colours (classes of `colour`).",
    )
    textures: tuple[VideoTexture, ...] = Field(
        ("solid", "stripes", "checker"),
        description="Surface patterns, fixed to the object so they turn with it (classes of `texture`).",
    )
    speeds: tuple[float, ...] = Field(
        (0.0, 0.25, 0.5),
        description="Speed levels: distance travelled over the clip in frame widths; 0 = static (classes of `speed`).",
    )
    spin: float = Field(
        0.5, gt=0, description="Turns made over the clip by a rotating object (cw or ccw; 1/3 do not turn)."
    )
    target_size: FloatRange = Field(
        (0.25, 0.35), description="Diameter of the target as a fraction of the frame, [low, high]."
    )
    distractor_size: FloatRange = Field(
        (0.12, 0.2), description="Diameter of the other objects as a fraction of the frame, [low, high]."
    )
    distractors_move: bool = Field(
        True, description="Other objects move and spin at random too (false: they stand still)."
    )
    background: Literal["noise", "plain"] = Field(
        "noise", description="noise = smooth blotches plus per-pixel grain (static); plain = one flat colour."
    )
    label: VideoTask = Field(
        "direction",
        description="Label task of `labels` (all are in `meta`): direction (8, +static), speed, rotation, shape, colour, texture.",
    )

    TASKS: ClassVar[tuple[str, ...]] = ("direction", "speed", "rotation", "shape", "colour", "texture")
    DIRECTIONS: ClassVar[tuple[str, ...]] = ("E", "NE", "N", "NW", "W", "SW", "S", "SE", "static")
    ROTATIONS: ClassVar[tuple[str, ...]] = ("none", "cw", "ccw")

    @model_validator(mode="after")
    def _feasible(self) -> SyntheticVideo:
        p = Problems()
        lo, hi = self.objects
        if lo < 1 or lo > hi:
            p.add("objects", f"[{lo}, {hi}] is not a range of object counts; need 1 <= low <= high")
        for name in ("shapes", "colours", "textures", "speeds"):
            _distinct(p, name, getattr(self, name))
        if hi > len(self.colours):
            p.add(
                "objects",
                f"up to {hi} objects need {hi} distinct colours but `colours` has {len(self.colours)}; lower objects or add colours",
            )
        if any(s < 0 or s > 2 for s in self.speeds):
            p.add("speeds", f"speeds {list(self.speeds)} must lie in [0, 2] frame widths per clip")
        if self.spin / (self.frames - 1) >= 0.5:
            p.add(
                "spin",
                f"{self.spin} turns over {self.frames} frames is half a turn or more per frame (cw and ccw look alike); lower spin",
            )
        for name in ("target_size", "distractor_size"):
            s_lo, s_hi = getattr(self, name)
            if not 0 < s_lo <= s_hi <= 0.6:
                p.add(name, f"[{s_lo}, {s_hi}] is not a size range; need 0 < low <= high <= 0.6")
        if self.distractor_size[1] >= self.target_size[0]:
            p.add(
                "distractor_size",
                f"distractors up to {self.distractor_size[1]} are not smaller than the target (from {self.target_size[0]}); the target must be the largest object",
            )
        if self.target_size[0] * self.resolution < 6:
            p.add(
                "target_size",
                f"the target is under 6 px at resolution {self.resolution}; raise target_size or resolution",
            )
        if self.distractor_size[0] * self.resolution < 3 and hi > 1:
            p.add(
                "distractor_size",
                f"distractors are under 3 px at resolution {self.resolution}; raise distractor_size or resolution",
            )
        if self.label == "colour" and self.channels == 1:
            p.add("label", "colour cannot be told in grey clips; use channels: 3 or another label")
        p.check()
        return self

    def classes(self, task: str) -> int:
        """Number of classes of one label task."""
        return {
            "direction": 8 + (0.0 in self.speeds),
            "speed": len(self.speeds),
            "rotation": len(self.ROTATIONS),
            "shape": len(self.shapes),
            "colour": len(self.colours),
            "texture": len(self.textures),
        }[task]

    @property
    def num_classes(self) -> int:
        """Number of classes of the configured `label` task."""
        return self.classes(self.label)

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(C, T, H, W) of one clip."""
        return (self.channels, self.frames, self.resolution, self.resolution)


class VideoFiles(Strict):
    """Video files listed in a V-JEPA manifest (`path label` per line), decoded with PyAV (extra `video`)."""

    kind: Literal["video_files"] = Field("video_files", description="Decoded video files with class labels.")
    manifest: str = Field(
        description="Manifest URL (any fsspec URL): `path label` per line; relative paths start at its directory."
    )
    eval_manifest: str | None = Field(
        None, description="Manifest of the eval split; null = the same files as train."
    )
    classes: int = Field(gt=0, description="Number of classes; manifest labels lie in [0, classes).")
    frames: int = Field(16, ge=1, description="Frames per clip (T).")
    frame_step: int = Field(4, ge=1, description="Keep every frame_step-th decoded frame.")
    resolution: int = Field(224, ge=8, description="Output height and width in pixels (square).")
    crop_scale: FloatRange = Field(
        (0.3, 1.0), description="Train random-resized-crop area as a fraction of the frame, [low, high]."
    )
    crop_aspect: FloatRange = Field(
        (0.75, 1.35), description="Train random-resized-crop aspect ratio (width / height), [low, high]."
    )
    flip: bool = Field(True, description="Train: flip clips horizontally with probability 1/2.")
    eval_crop: float = Field(
        0.875,
        gt=0,
        le=1,
        description="Eval: side of the centred square crop as a fraction of the short side (224/256 as in V-JEPA).",
    )
    max_retries: int = Field(
        10, ge=1, description="Consecutive unreadable files tolerated for one clip before the job stops."
    )
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"workers"})  # threads do not change the clips
    workers: int = Field(4, ge=1, description="Threads decoding the clips of one batch.")

    @model_validator(mode="after")
    def _ranges(self) -> VideoFiles:
        p = Problems()
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            p.add("crop_scale", f"[{lo}, {hi}] is not an area range; need 0 < low <= high <= 1")
        lo, hi = self.crop_aspect
        if not 0 < lo <= hi:
            p.add("crop_aspect", f"[{lo}, {hi}] is not an aspect range; need 0 < low <= high")
        p.check()
        return self

    @property
    def num_classes(self) -> int:
        """Number of classes of the labels."""
        return self.classes

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(C, T, H, W) of one clip."""
        return (3, self.frames, self.resolution, self.resolution)


Data = kinded(
    SparseParity,
    SolutionTree,
    Connectivity,
    Copy,
    Reverse,
    VariableAssignment,
    Sudoku,
    Countdown,
    PhoneBook,
    ShortestPath,
    KgExperts,
    SyntheticVideo,
    VideoFiles,
    default=None,
    description="The data generator of a stage, by `kind`.",
)
