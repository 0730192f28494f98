"""Config of the Bridge(d) connectivity generator (`kind: connectivity`) and the dynamic programs that give
its exact trace length distribution per strategy."""

from __future__ import annotations

from functools import cache
from itertools import permutations
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..base import Problems
from .base import TokenData

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

    def best_of_n_reference(self, samples: list[int]) -> dict[str, list[float]]:
        """Let Me Think's analytic best-of-N at each N: a random DFS visitation is a valid Path with probability
        (2/3)(1/2)^(d-1), and is the shortest path with probability (1/3)(1/4)^(d-1)."""
        d = self.depth
        path, shortest = 2**d / (3 * 4 ** (d - 1)), 1 / (3 * 4 ** (d - 1))
        return {
            "random Path": [1 - (1 - path) ** n for n in samples],
            "random shortest path": [1 - (1 - shortest) ** n for n in samples],
        }

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
