"""Graph connectivity on two Bridge(d) copies with a search trace (Let Me Think, docs/papers/let_me_think.md).

Bridge(d) chains d petals (short arc 0-1-2-10, long arc 0-6-5-4-3-10, dead end 0-9-8-7; petal i's node 10 is
petal i+1's node 0). An example holds two disjoint copies: s is node 0 of copy 1, the target t its node 10d,
the decoy node 10d of copy 2. Node ids are a fresh random permutation of 0..N-1 (N = 2(10d+1)), every edge
is randomly oriented, the edge list shuffled, and t1/t2 put in random order. Rendered (d = 1, strategy dfs):

    graph: [13 4 0 20 9 15 2 12 ...]
    task: 19 to 7 or 5 /
    work: [19 12 2 14 11 17 7]
    decision: [7]

tokenised as `[A-Za-z]+|\\d+|\\S` between BOS and EOS; the loss covers the tokens after `/`. The trace after
`work:` follows the config's strategy: shortest_path (the BFS path, 3d+1 nodes), path (the DFS stack when t
is reached, each step to a random unvisited neighbour), dfs (the DFS visit order, dead ends included),
dfs_backtrack (the DFS as a walk that steps back along the DFS tree), walk (a random walk whose every step is
drawn with probability proportional to P(hit t within the remaining steps), stopping at t) or none (no
`work`, the decision only). Traces are computed on canonical ids and relabelled, all examples at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.data import Connectivity as ConnectivityConfig

from .base import Example, Examples, UnknownSplit, Vocab

MAX_DEGREE = 5  # a junction: two arcs in, three out


class Connectivity:
    """Generator of Bridge(d) connectivity examples; train and eval are the same distribution."""

    # The check a sample's certificate passes, and the score of a decision without one (a coin flip between
    # t1 and t2): Let Me Think's any@N = P(some sample has a certificate) + 0.5 * (1 - that).
    certificate = ("evidence", 0.5)

    def __init__(self, cfg: ConnectivityConfig):
        self.cfg = cfg
        self.vocab = Vocab(cfg.vocab_tokens())
        ids = {
            t: self.vocab.id(t) for t in ("/", "graph", "task", "work", "decision", "to", "or", ":", "[", "]")
        }
        self.ids = ids
        self.node0 = len(cfg.WORDS)  # token id of node label 0
        d = cfg.depth
        self.size = 10 * d + 1  # nodes of one copy; copy 2 is offset by `size`
        self.target, self.decoy = 10 * d, 2 * self.size - 1
        one = np.array(cfg.bridge_edges(), dtype=np.int64)  # [11d, 2]
        self.edges = np.concatenate([one, one + self.size])  # [22d, 2] both copies
        # Neighbours of copy 1, padded with the sentinel `size` (never a real node).
        nbr = [[] for _ in range(self.size)]
        for u, v in one:
            nbr[u].append(v)
            nbr[v].append(u)
        self.degree = np.array([len(a) for a in nbr])
        self.nbr = np.full((self.size + 1, MAX_DEGREE), self.size, dtype=np.int64)  # [size+1, 5]
        for v, a in enumerate(nbr):
            self.nbr[v, : len(a)] = a
        self.shortest = np.array([0] + [10 * i + j for i in range(d) for j in (1, 2, 10)])  # the unique one
        self.reach = self._reach_table() if cfg.strategy == "walk" else None
        # Prompt template: BOS graph : [ <edges> ] task : <s> to <t1> or <t2> /
        e = 4 + 2 * len(self.edges)  # index of ']'
        self.slot_s, self.slot_t1, self.slot_t2 = e + 3, e + 5, e + 7
        template = np.zeros(cfg.prompt_len, dtype=np.int32)
        template[:4] = [self.vocab.bos, ids["graph"], ids[":"], ids["["]]
        template[e : e + 9] = [ids["]"], ids["task"], ids[":"], 0, ids["to"], 0, ids["or"], 0, ids["/"]]
        self.template = template

    # ---- sampling ------------------------------------------------------------------------------------------

    def sample(
        self, rng: np.random.Generator, n: int, split: str = "train", length: int | None = None
    ) -> Examples:
        """n examples of `split` (train | eval: the same distribution, independent draws)."""
        if split not in self.cfg.SPLITS:
            raise UnknownSplit(f"no split {split!r}; connectivity has {', '.join(self.cfg.SPLITS)}")
        if length is not None:
            raise ValueError("connectivity has no length axis; its size is the config's depth")
        N, M = 2 * self.size, len(self.edges)
        labels = rng.permuted(np.broadcast_to(np.arange(N, dtype=np.int32), (n, N)), axis=1)  # [n, N]
        node = self.node0 + labels  # [n, N] token id of each canonical node
        # Edge e's endpoints sit at columns 2e, 2e+1 of `canon`; shuffle the edges, then flip each at random.
        canon = np.take(node, self.edges.ravel(), axis=1)  # [n, 2M] canonical edge order and orientation
        first = rng.permuted(np.broadcast_to(np.arange(0, 2 * M, 2), (n, M)), axis=1)  # [n, M] even columns
        first |= np.frombuffer(rng.bytes(n * M), dtype=np.uint8).reshape(n, M) & 1  # random orientation
        pairs = (first[..., None] ^ np.array([0, 1])).reshape(n, 2 * M)  # [n, 2M] (2e+b, 2e+1-b) per edge
        swap = rng.random(n) < 0.5  # t1 is the decoy
        work, k = self._traces(rng, n)  # [n, K] canonical nodes (padded with 0), [n] trace nodes

        K = int(k.max(initial=0))
        work = work[:, :K]
        P = self.cfg.prompt_len
        width = P + K + (6 if self.cfg.strategy == "none" else 10)
        tokens = np.zeros((n, width), dtype=np.int32)  # PAD = 0
        tokens[:, :P] = self.template
        rows = np.arange(n)
        tokens[:, 4 : 4 + 2 * M] = np.take_along_axis(canon, pairs, axis=1)
        s_tok, t_tok, x_tok = node[:, 0], node[:, self.target], node[:, self.decoy]
        tokens[:, self.slot_s] = s_tok
        tokens[:, self.slot_t1] = np.where(swap, x_tok, t_tok)
        tokens[:, self.slot_t2] = np.where(swap, t_tok, x_tok)
        ids = self.ids
        if self.cfg.strategy == "none":
            start = np.full(n, P)
        else:
            tokens[:, P : P + 3] = [ids["work"], ids[":"], ids["["]]
            trace = np.take_along_axis(node, work, axis=1)  # [n, K]
            tokens[:, P + 3 : P + 3 + K] = np.where(np.arange(K)[None, :] < k[:, None], trace, 0)
            tokens[rows, P + 3 + k] = ids["]"]
            start = P + 4 + k  # where `decision` goes
        for j, tok in enumerate((ids["decision"], ids[":"], ids["["], None, ids["]"], self.vocab.eos)):
            tokens[rows, start + j] = t_tok if tok is None else tok
        lengths = start + 6
        loss_mask = np.arange(width)[None, :] >= P
        loss_mask = loss_mask & (np.arange(width)[None, :] < lengths[:, None])
        meta = {
            "source": s_tok - self.node0,  # node labels
            "target": t_tok - self.node0,
            "decoy": x_tok - self.node0,
            "work_length": k,  # trace nodes
        }
        return Examples(tokens, loss_mask, lengths, None, meta)

    def _traces(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Traces of the configured strategy on copy 1: canonical nodes [n, K] (0-padded) and lengths [n]."""
        strategy = self.cfg.strategy
        if strategy == "none":
            return np.zeros((n, 0), dtype=np.int64), np.zeros(n, dtype=np.int64)
        if strategy == "shortest_path":
            return np.broadcast_to(self.shortest, (n, len(self.shortest))), np.full(n, len(self.shortest))
        if strategy == "walk":
            return self._walks(rng, n)
        return self._dfs(rng, n, strategy)

    def _dfs(self, rng: np.random.Generator, n: int, strategy: str) -> tuple[np.ndarray, np.ndarray]:
        """A randomised DFS from s per example, all examples stepping together until each reaches t.

        Each step looks at the top of the stack: it is recorded (dfs_backtrack every time, dfs the first
        time); then a uniformly random unvisited neighbour is pushed, or the top popped when there is none.
        At t the stack is the `path` trace.
        """
        V, W = self.size, self.size + 1
        stack = np.zeros((n, V), dtype=np.int64)  # [n, V] stack[i, :sp[i]+1], s at the bottom
        sp = np.zeros(n, dtype=np.int64)
        visited = np.zeros(n * W, dtype=bool)  # [n, V+1] flat; column V is the padding sentinel
        visited[V::W] = True
        cap = 2 * V if strategy == "dfs_backtrack" else V
        out = np.zeros((n, cap), dtype=np.int64)
        k = np.zeros(n, dtype=np.int64)
        live = np.arange(n)
        base = live * W  # row offsets into `visited`
        while live.size:
            top = stack[live, sp[live]]
            at = base + top
            if strategy == "dfs_backtrack":
                out[live, k[live]] = top
                k[live] += 1
            elif strategy == "dfs":
                fresh = ~visited[at]
                rec = live[fresh]
                out[rec, k[rec]] = top[fresh]
                k[rec] += 1
            visited[at] = True
            going = top != self.target
            if strategy == "path":
                done = live[~going]
                k[done] = sp[done] + 1
            live, top, base = live[going], top[going], base[going]
            cand = self.nbr[top]  # [m, 5]
            free = ~visited[base[:, None] + cand]
            keys = np.where(free, rng.random(free.shape), -1.0)
            j = keys.argmax(1)
            push = keys[np.arange(len(live)), j] >= 0
            up, down = live[push], live[~push]
            sp[up] += 1
            stack[up, sp[up]] = cand[push, j[push]]
            sp[down] -= 1
        if strategy == "path":
            return stack, k
        return out, k

    def _reach_table(self) -> np.ndarray:
        """reach[r, v] = P(a uniform random walk from v hits t within r steps), r = 0..L; [L+1, size+1]."""
        L, V = self.cfg.walk_length, self.size
        reach = np.zeros((L + 1, V + 1))  # column V: the padding sentinel, never reached
        reach[:, self.target] = 1.0
        real = self.nbr[:V] < V
        for r in range(1, L + 1):
            step = np.where(real, reach[r - 1][self.nbr[:V]], 0.0).sum(1) / self.degree
            step[self.target] = 1.0
            reach[r, :V] = step
        return reach

    def _walks(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Walks from s: each step to a neighbour u with probability proportional to reach[steps left, u]."""
        L = self.cfg.walk_length
        out = np.zeros((n, L + 1), dtype=np.int64)  # out[:, 0] = s = 0
        k = np.ones(n, dtype=np.int64)
        cur = np.zeros(n, dtype=np.int64)
        live = np.arange(n)
        for step in range(L):
            cand = self.nbr[cur[live]]  # [m, 5]
            weight = np.cumsum(self.reach[L - step - 1][cand], axis=1)  # [m, 5]
            u = rng.random(len(live)) * weight[:, -1]
            j = (weight <= u[:, None]).sum(1)  # first j with cumulative weight > u
            j = np.minimum(j, (weight < weight[:, -1:]).sum(1))  # u rounded up to the total: the last one
            nxt = cand[np.arange(len(live)), j]
            out[live, step + 1] = nxt
            k[live] += 1
            cur[live] = nxt
            live = live[nxt != self.target]
            if not live.size:
                break
        return out, k

    # ---- checking ------------------------------------------------------------------------------------------

    def graph(self, example: Example) -> tuple[int, int, int, dict[int, list[int]]]:
        """(s, t1, t2, adjacency) of an example's prompt, in node labels."""
        P = self.cfg.prompt_len
        tok = example.tokens[:P].astype(np.int64) - self.node0
        ends = tok[4 : 4 + 2 * len(self.edges)].reshape(-1, 2)
        adj: dict[int, list[int]] = {}
        for u, v in ends.tolist():
            adj.setdefault(u, []).append(v)
            adj.setdefault(v, []).append(u)
        return int(tok[self.slot_s]), int(tok[self.slot_t1]), int(tok[self.slot_t2]), adj

    def parse(self, completion: Sequence[int]) -> dict[str, list[int]]:
        """Node labels listed in `work : [ .. ]` and `decision : [ .. ]` groups, up to the first EOS.

        As the paper's regex `(work|decision)\\s*:\\s*\\[([\\d\\s]+)\\]`: a group needs at least one node and
        its closing bracket; the nodes of repeated groups add up.
        """
        toks = [int(t) for t in completion]
        if self.vocab.eos in toks:
            toks = toks[: toks.index(self.vocab.eos)]
        ids, lo, hi = self.ids, self.node0, self.node0 + self.cfg.nodes
        found: dict[str, list[int]] = {"work": [], "decision": []}
        i = 0
        while i < len(toks):
            kw = "work" if toks[i] == ids["work"] else "decision" if toks[i] == ids["decision"] else None
            if kw and toks[i + 1 : i + 3] == [ids[":"], ids["["]]:
                j = i + 3
                while j < len(toks) and lo <= toks[j] < hi:
                    j += 1
                if j > i + 3 and j < len(toks) and toks[j] == ids["]"]:
                    found[kw] += [t - lo for t in toks[i + 3 : j]]
                    i = j + 1
                    continue
            i += 1
        return found

    def check(self, example: Example, completion: Sequence[int]) -> dict[str, bool]:
        """`decision`: exactly one decision node, the target reachable from s; `evidence`: the work starts at
        s, ends at t and each node is adjacent to an earlier one (the paper's certificate)."""
        s, t1, t2, adj = self.graph(example)
        seen, frontier = {s}, [s]
        while frontier:
            v = frontier.pop()
            for u in adj.get(v, ()):
                if u not in seen:
                    seen.add(u)
                    frontier.append(u)
        target = t1 if t1 in seen else t2
        found = self.parse(completion)
        decision = found["decision"] == [target]
        work = found["work"]
        evidence = len(work) > 1 and work[0] == s and work[-1] == target
        reachable = {s}
        for v in work if evidence else ():
            if v not in reachable:
                evidence = False
                break
            reachable.update(adj.get(v, ()))
        return {"decision": decision, "evidence": evidence}

    def verify(self, example: Example, completion: Sequence[int]) -> bool:
        """Decision correctness: exactly one decision node, and it is the target connected to s."""
        return self.check(example, completion)["decision"]

    def answer(self, example: Example, completion: Sequence[int]) -> int | None:
        """The decision node, when exactly one is given (what maj@N votes over)."""
        decision = self.parse(completion)["decision"]
        return decision[0] if len(decision) == 1 else None

    def render(self, example: Example) -> str:
        """The paper's text: `graph: [..]`, `task: s to t1 or t2 /`, then `work: [..]` and `decision: [..]`."""
        text = []
        for tok in example.tokens.tolist():
            word = self.vocab.tokens[tok]
            if word in ("BOS", "EOS", "PAD"):
                continue
            if word in ("task", "work", "decision"):
                text.append("\n")
            elif text and text[-1] not in ("\n", "[") and word not in (":", "]"):
                text.append(" ")
            text.append(word)
        return "".join(text)
