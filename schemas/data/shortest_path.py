"""Config of the shortest-path generator (`kind: shortest_path`) and the seeded pure-Python simulation of its
graphs that validation and the length model read."""

from __future__ import annotations

import functools
import math
import random
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..base import Problems
from .base import IntRange, TokenData

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
