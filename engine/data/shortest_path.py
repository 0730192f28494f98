"""Shortest paths in random graphs (docs/papers/mixture_of_parrots.md): the reasoning task.

A graph has n ~ U[nodes] nodes with distinct labels (tokens of `labels`) and is connected: a random recursive
spanning tree (node k joins a uniform earlier node) plus uniform extra edges, max(n-1, round(mean_degree*n/2))
edges in all. The prompt lists the edges in random order and orientation, then the query; the answer is a
shortest path from s to t (loss on it and on EOS):

    BOS 12 40 40 7 3 12 ... 33 3 | 12 33 ? 12 3 33 EOS

The query (s, t) is uniform over the ordered pairs at BFS distance >= min_distance (a graph with none is drawn
again). The generator's path steps, at each hop, to the smallest-label neighbour one step closer to t (the
lexicographically smallest shortest path; `tie_break: random` picks a uniform such neighbour instead); the
verifier accepts every shortest path. Everything is batched over graphs: adjacency matrices [B, N, N], the
pairs closer than min_distance by boolean matrix products, BFS from t by frontier expansion, one hop per step.

Splits: a labelled graph is an eval graph iff `split_hash(edge set) < eval_fraction`, where the hash is
splitmix64 of the wrapping sum of splitmix64(min_label * labels + max_label) over its edges (a function of the
edge set only, not of the order or orientation in the prompt, the query or the path). eval draws only graphs
below the cut and train only graphs at or above it, so no eval graph (under any query) is ever trained on.
Isomorphic graphs with other labels are different graphs under this rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.data import ShortestPath as ShortestPathConfig

from .base import Example, Examples, UnknownSplit, Vocab, mix64

BAR, QUERY = 3, 4  # ids of '|' and '?'
LABEL0 = len(ShortestPathConfig.SPECIALS)  # id of label 0
FAR = 1 << 30  # distance of an unreachable node (padding nodes)
MAX_CANDIDATES = 4096  # graphs drawn per round (memory: [c, N, N] adjacency and [c, N(N-1)/2] keys)
MAX_ROUNDS = 10_000  # candidate batches before giving up; validation keeps the acceptance >= MIN_ACCEPT


def split_fraction(edge_sum: np.ndarray) -> np.ndarray:
    """The split hash in [0, 1) of graphs whose edges' mix64(min_label * labels + max_label) sum to edge_sum."""
    return (mix64(edge_sum) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class ShortestPath:
    """Generator of shortest-path examples; the answer is one shortest path, the verifier accepts all of them."""

    def __init__(self, cfg: ShortestPathConfig):
        self.cfg = cfg
        self.vocab = Vocab((*ShortestPathConfig.SPECIALS, *(str(j) for j in range(cfg.labels))))
        self.N = cfg.nodes[1]  # padded node count
        self.edges_of = np.array(cfg.edges_table(), dtype=np.int64)  # [N+1] edges of a graph of n nodes
        self.iu, self.ju = np.triu_indices(self.N, k=1)  # [P] node pairs i < j

    # ---- graphs --------------------------------------------------------------------------------------------

    def _graphs(self, rng: np.random.Generator, c: int) -> tuple[np.ndarray, ...]:
        """c candidate graphs: node counts [c], labels [c, N], adjacency [c, N, N] bool, edge count [c]."""
        N, lo, hi = self.N, *self.cfg.nodes
        n = rng.integers(lo, hi + 1, size=c)  # [c]
        m = self.edges_of[n]  # [c]
        adj = np.zeros((c, N, N), dtype=bool)
        k = np.arange(1, N)
        parent = (rng.random((c, N - 1)) * k).astype(np.int64)  # [c, N-1] node k joins a uniform node < k
        rows, cols = np.nonzero(k[None, :] < n[:, None])
        adj[rows, k[cols], parent[rows, cols]] = True
        adj[rows, parent[rows, cols], k[cols]] = True
        # extra edges: the (m - n + 1) smallest random keys among the free pairs inside the graph
        free = ~adj[:, self.iu, self.ju] & (self.ju[None, :] < n[:, None])  # [c, P]
        keys = np.where(free, rng.random((c, len(self.iu))), np.inf)
        extra = m - (n - 1)
        cut = np.take_along_axis(np.sort(keys, axis=1), np.maximum(extra - 1, 0)[:, None], axis=1)
        chosen = (keys <= cut) & (extra[:, None] > 0)  # [c, P]
        r, p = np.nonzero(chosen)
        adj[r, self.iu[p], self.ju[p]] = True
        adj[r, self.ju[p], self.iu[p]] = True
        labels = np.argsort(rng.random((c, self.cfg.labels)), axis=1)[:, :N]  # [c, N] distinct labels
        return n, labels, adj, m

    def _edge_list(self, adj: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The edges of each graph, flat and grouped by graph: (graph [E], i [E], j [E]) with i < j."""
        g, p = np.nonzero(adj[:, self.iu, self.ju])
        return g, self.iu[p], self.ju[p]

    def _split_of(self, labels: np.ndarray, adj: np.ndarray, m: np.ndarray) -> np.ndarray:
        """The split hash in [0, 1) of each graph [c] (see the module docstring)."""
        g, i, j = self._edge_list(adj)
        a, b = labels[g, i], labels[g, j]
        h = mix64((np.minimum(a, b) * self.cfg.labels + np.maximum(a, b)).astype(np.uint64))
        starts = np.concatenate([[0], np.cumsum(m)[:-1]]).astype(np.int64)  # every graph has m >= 1 edges
        return split_fraction(np.add.reduceat(h, starts, dtype=np.uint64) if len(m) else h[:0])

    @staticmethod
    def within(adj: np.ndarray, steps: int) -> np.ndarray:
        """Pairs at distance <= steps, [B, N, N] bool, by boolean matrix products."""
        B, N, _ = adj.shape
        eye = np.eye(N, dtype=bool)
        if steps < 1:
            return np.broadcast_to(eye, adj.shape)
        reach, a = adj | eye, adj.astype(np.float32)
        for _ in range(steps - 1):
            reach = reach | (np.matmul(reach.astype(np.float32), a) > 0)
        return reach

    @staticmethod
    def distances_to(adj: np.ndarray, t: np.ndarray) -> np.ndarray:
        """BFS distances [B, N] (int64, FAR where unreachable) of every node to node t[b] of graph b."""
        B, N, _ = adj.shape
        dist = np.full((B, N), FAR, dtype=np.int64)
        frontier = np.zeros((B, N), dtype=bool)
        frontier[np.arange(B), t] = True
        seen, step = frontier.copy(), 0
        while frontier.any():
            dist[frontier] = step
            frontier = (adj & frontier[:, :, None]).any(axis=1) & ~seen  # [B, N] unseen neighbours
            seen |= frontier
            step += 1
        return dist

    def _candidates(self, rng: np.random.Generator, c: int, split: str) -> dict[str, np.ndarray]:
        """Graphs of `split` with a query pair among c drawn candidates (fewer come back)."""
        n, labels, adj, m = self._graphs(rng, c)
        held_out = self._split_of(labels, adj, m) < self.cfg.eval_fraction
        keep = held_out if split == "eval" else ~held_out
        n, labels, adj, m = n[keep], labels[keep], adj[keep], m[keep]
        near = self.within(adj, self.cfg.min_distance - 1)  # [c', N, N] pairs closer than min_distance
        inside = np.arange(self.N)[None, :] < n[:, None]  # [c', N]
        ok = ~near & inside[:, :, None] & inside[:, None, :]  # connected: every other pair is far enough
        keys = np.where(ok.reshape(len(n), self.N * self.N), rng.random((len(n), self.N * self.N)), np.inf)
        pair = keys.argmin(axis=1)  # [c'] a uniform ordered pair at distance >= min_distance
        has = np.isfinite(keys.min(axis=1, initial=np.inf))
        s, t = np.divmod(pair, self.N)
        out = {"n": n, "labels": labels, "adj": adj, "m": m, "s": s, "t": t}
        return {k: v[has] for k, v in out.items()}

    def _paths(self, rng: np.random.Generator, g: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The generator's shortest path per graph: node indices [B, dmax+1] (-1 after t), distance [B]."""
        B, rows = len(g["n"]), np.arange(len(g["n"]))
        to_t = self.distances_to(g["adj"], g["t"])  # [B, N] distance of every node to t
        d = to_t[rows, g["s"]]  # [B]
        dmax = int(d.max(initial=0))
        path = np.full((B, dmax + 1), -1, dtype=np.int64)
        path[:, 0] = cur = g["s"]
        for step in range(1, dmax + 1):
            closer = g["adj"][rows, cur] & (to_t == (to_t[rows, cur] - 1)[:, None])  # [B, N] next-hop options
            if self.cfg.tie_break == "smallest":
                score = np.where(closer, g["labels"], np.iinfo(np.int64).max)
            else:
                score = np.where(closer, rng.random(closer.shape), np.inf)
            nxt = score.argmin(axis=1)
            walking = step <= d
            cur = np.where(walking, nxt, cur)
            path[walking, step] = cur[walking]
        return path, d

    # ---- the contract --------------------------------------------------------------------------------------

    def sample(
        self, rng: np.random.Generator, n: int, split: str = "train", length: int | None = None
    ) -> Examples:
        """n examples of `split` (train | eval); `length` is not used (graph sizes come from `nodes`)."""
        if split not in ShortestPathConfig.SPLITS:
            raise UnknownSplit(
                f"no split {split!r}; shortest_path has {', '.join(ShortestPathConfig.SPLITS)}"
            )
        share = self.cfg.eval_fraction if split == "eval" else 1 - self.cfg.eval_fraction
        parts, have, drawn, kept = [], 0, 0, 0
        for _ in range(MAX_ROUNDS):
            if have >= n:
                break
            rate = max((kept + 1) / (drawn + 1), 1e-3) if drawn else share  # usable share of candidates
            c = min(int((n - have) / rate * 1.1) + 8, MAX_CANDIDATES)
            part = self._candidates(rng, c, split)
            drawn, kept = drawn + c, kept + len(part["n"])
            parts.append(part)
            have += len(part["n"])
        else:
            raise RuntimeError(
                f"shortest_path: {kept} of {drawn} graphs usable; the config's validator failed"
            )
        g = {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}
        return self._encode(rng, g)

    def _encode(self, rng: np.random.Generator, g: dict[str, np.ndarray]) -> Examples:
        """Token rows `BOS edges | s t ? path EOS` of the graphs g (each with its query)."""
        B, rows = len(g["n"]), np.arange(len(g["n"]))
        path, d = self._paths(rng, g)
        lab = LABEL0 + g["labels"]  # [B, N] token of each node
        # edges in random order (random keys within each graph) and random orientation, then 2 tokens each
        e, i, j = self._edge_list(g["adj"])  # [E] grouped by graph, m of them each
        order = np.argsort(e + rng.random(len(e)), kind="stable")  # a uniform shuffle inside each graph
        e, i, j = e[order], i[order], j[order]
        flip = rng.random(len(e)) < 0.5
        i, j = np.where(flip, j, i), np.where(flip, i, j)
        starts = np.concatenate([[0], np.cumsum(g["m"])[:-1]])
        slot = np.arange(len(e)) - starts[e]  # [E] place of each edge in its graph's list
        # the tail: | s t ? path EOS, placed right after each row's edges
        width = 4 + path.shape[1] + 1
        tail = np.zeros((B, width), dtype=np.int64)
        tail[:, 0], tail[:, 3] = BAR, QUERY
        tail[:, 1], tail[:, 2] = lab[rows, g["s"]], lab[rows, g["t"]]
        tail[:, 4 : 4 + path.shape[1]] = np.where(
            path >= 0, np.take_along_axis(lab, np.maximum(path, 0), 1), 0
        )
        tail[rows, 5 + d] = self.vocab.eos
        lengths = 2 * g["m"] + d + 7
        L = int(lengths.max(initial=0))
        tokens = np.zeros((B, L), dtype=np.int32)
        loss_mask = np.zeros((B, L), dtype=bool)
        tokens[:, 0] = self.vocab.bos
        tokens[e, 1 + 2 * slot] = lab[e, i]
        tokens[e, 2 + 2 * slot] = lab[e, j]
        r, k = np.nonzero(np.arange(width)[None, :] < (6 + d)[:, None])  # the tail's real tokens
        col = 1 + 2 * g["m"][r] + k
        tokens[r, col] = tail[r, k]
        loss_mask[r, col] = k >= 4  # the path and EOS
        meta = {"nodes": g["n"], "edges": g["m"], "distance": d}
        return Examples(tokens, loss_mask, lengths, None, meta)

    # ---- checking ------------------------------------------------------------------------------------------

    def parse(self, example: Example) -> tuple[list[tuple[int, int]], int, int]:
        """(edges as token pairs, s, t) read from the prompt `BOS edges | s t ?`."""
        prompt = [int(x) for x in example.prompt]
        bar = prompt.index(BAR)
        edges = list(zip(prompt[1:bar:2], prompt[2:bar:2], strict=True))
        return edges, prompt[bar + 1], prompt[bar + 2]

    def verify(self, example: Example, completion: Sequence[int]) -> bool:
        """Whether the tokens before the first EOS (or all, without one) are a shortest s-t path of the graph.

        The graph and the query are read from the prompt; the BFS distance is computed here, so any shortest
        path is accepted, and a broken walk, a longer path or one with the wrong ends is rejected.
        """
        edges, s, t = self.parse(example)
        out = [int(x) for x in completion]
        walk = out[: out.index(self.vocab.eos)] if self.vocab.eos in out else out
        adj: dict[int, set[int]] = {}
        for a, b in edges:
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)
        if not walk or walk[0] != s or walk[-1] != t:
            return False
        if any(b not in adj.get(a, ()) for a, b in zip(walk, walk[1:], strict=False)):
            return False
        return len(walk) - 1 == bfs_distance(adj, s, t)

    def answer(self, example: Example, completion: Sequence[int]) -> tuple[int, ...]:
        """The walk before the first EOS (all of it without one): the path the verifier checks."""
        out = [int(x) for x in completion]
        return tuple(out[: out.index(self.vocab.eos)] if self.vocab.eos in out else out)

    def render(self, example: Example) -> str:
        """The prompt, then `->` and the answer path, with the graph's size and the query's distance."""
        meta = example.meta
        return (
            f"{self.vocab.decode(example.prompt)} -> {self.vocab.decode(example.answer)}   "
            f"(nodes={int(meta['nodes'])}, edges={int(meta['edges'])}, distance={int(meta['distance'])})"
        )


def bfs_distance(adj: dict[int, set[int]], s: int, t: int) -> int:
    """Edges on a shortest s-t path of the graph `adj` (-1 when t is unreachable)."""
    depth, frontier = {s: 0}, [s]
    while frontier and t not in depth:
        nxt = []
        for u in frontier:
            for v in adj.get(u, ()):
                if v not in depth:
                    depth[v] = depth[u] + 1
                    nxt.append(v)
        frontier = nxt
    return depth.get(t, -1)
