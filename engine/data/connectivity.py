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
`work`, the decision only).

How it is fast. A randomised DFS on Bridge(d) is decided at its d junctions: each takes its unvisited arcs
(short S, long L, dead end D and, past the first, the previous petal's untaken arc B) in a uniformly random
order, exploring dead ones until S or L leads on, and never comes back. So a trace is s followed by one
precomputed node segment per petal, looked up by (arc the petal was entered by, arc order): a gather, no
loop over DFS steps (tests enumerate both laws and find them equal). The walk steps all examples together
through tabled cumulative weights. Every example is a fixed number of raw Philox words drawn from its
chunk's generator (one call per chunk; `sample_chunks` serves the stream's many chunks in one call) and
decoded exactly: permutations as the sort of distinct 31-bit keys, arc orders by Lemire's multiply-shift; an
example with tied keys or a rejected code word (about 5e-6 at d = 5) is drawn again whole. Canonical ids
index a per-example token table (node labels, then words), so the prompt's edges and the answer are
gathers. Blocks of BLOCK examples keep numpy's temporaries small. Bridge(5), dfs, one core, interleaved with
the paper's own generation (graphs and trace, 6-10k examples/s on the shared test machine): about 120-230k
examples/s through the training stream at batch 1000 (chunks of 16), 21-28 times theirs; about 7k/s at
batch 1 (the figures and how they were taken: the paper's page under docs/papers).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from schemas.data import Connectivity as ConnectivityConfig

from .base import Example, Examples, UnknownSplit, Vocab

MAX_DEGREE = 5  # a junction: two arcs in, three out
BLOCK = 256  # examples processed together (bigger blocks spill numpy's temporaries out of cache)
ARC_ORDERS = tuple(itertools.permutations("SLDB"))  # the orders a junction may take its arcs in
ORDERS = len(ARC_ORDERS)  # 24
FORWARD = np.array([1 if o.index("S") < o.index("L") else 2 for o in ARC_ORDERS])  # arc taken on: 1 S, 2 L


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
        N = 2 * self.size
        self.ends = self.edges.ravel()  # end b of edge e at 2e + b
        word = lambda *ts: [N + ids[t] for t in ts]  # noqa: E731  (canonical id of a word: N + token id)
        self.head = np.array(word("work", ":", "["))
        self.tail = np.array(
            word("]", "decision", ":", "[") + [self.target] + word("]") + [N + self.vocab.eos]
        )
        self.pad_id = N + self.vocab.pad  # PAD's canonical id
        M = len(self.edges)
        self.key_index = np.concatenate([np.arange(N), np.arange(M) | 1 << 62])  # see `_decode`
        self.tables, self.seg_len = None, None
        if cfg.strategy in ("shortest_path", "path", "dfs", "dfs_backtrack"):
            self.tables, self.seg_len = self._segments()
        self.cumulative = None
        if cfg.strategy == "walk":
            reach = self._reach_table()
            self.cumulative = np.cumsum(reach[:, self.nbr], axis=2)  # [L+1, size+1, 5]
        # Random 64-bit words per example (see `_decode`): the graph's, holding N + M + 1 32-bit words (the
        # same for every strategy), then the trace's: d 32-bit arc-order codes, or walk_length uniforms.
        self.graph_words = (N + M + 1 + 1) // 2
        self.words = self.graph_words
        if self.tables is not None:
            self.words += (d + 1) // 2
        if cfg.strategy == "walk":
            self.words += cfg.walk_length
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
        if length is not None:
            raise ValueError("connectivity has no length axis; its size is the config's depth")
        return self.sample_chunks([rng], n, split)

    def sample_chunks(self, rngs: list[np.random.Generator], n: int, split: str = "train") -> Examples:
        """n examples from each generator in `rngs`, in order: rows c*n.. are `sample(rngs[c], n)`'s rows.

        Each generator only draws its chunk's random words; the rest runs over blocks of about BLOCK
        examples (whole chunks, or parts of a big one), small enough that numpy's temporaries stay in cache.
        """
        if split not in self.cfg.SPLITS:
            raise UnknownSplit(f"no split {split!r}; connectivity has {', '.join(self.cfg.SPLITS)}")
        if n < 0:
            raise ValueError(f"n={n} examples: need n >= 0")
        if n == 0 or not rngs:
            P, k = self.cfg.prompt_len, np.zeros(0, dtype=np.int64)
            empty = np.zeros((0, P + self.cfg.answer_len(0)), dtype=np.int32)
            meta = {key: k.astype(np.int32) for key in ("source", "target", "decoy")} | {"work_length": k}
            return Examples(empty, empty.astype(bool), k + P, None, meta)
        raw = [r.bit_generator.random_raw(n * self.words) for r in rngs]
        raw = (raw[0] if len(raw) == 1 else np.concatenate(raw)).reshape(len(rngs), n * self.words)
        # A chunk's words: the graphs of its n examples, then their traces' (so the graphs are the same
        # whatever the strategy); views [chunks, n, words] of each.
        G = self.graph_words
        graph, extra = (
            raw[:, : n * G].reshape(len(rngs), n, G),
            raw[:, n * G :].reshape(len(rngs), n, self.words - G),
        )
        C, step = len(rngs), max(1, BLOCK // n)
        parts = []  # (draws, answer in canonical ids, trace nodes) per block
        for c in range(0, C, step):
            for r in range(0, n, BLOCK) if step == 1 else [0]:
                rows = slice(r, r + BLOCK) if step == 1 else slice(None)
                draws = self._draws(graph[c : c + step, rows], extra[c : c + step, rows], rngs[c : c + step])
                parts.append((draws, *self._work(draws)))
        P = self.cfg.prompt_len
        tokens = np.empty((C * n, P + max(w.shape[1] for _, w, _ in parts)), dtype=np.int32)
        ends, at = [], 0
        for draws, work, _ in parts:
            rows = tokens[at : at + len(work)]
            ends.append(self._render(rows, draws, work))
            at += len(work)
        k = np.concatenate([k for _, _, k in parts])
        lengths = P + self.cfg.answer_len(0) + k
        width = np.arange(tokens.shape[1], dtype=np.int16)  # int16 compares fastest (max_seq_len < 7000)
        loss_mask = width < lengths.astype(np.int16)[:, None]
        loss_mask[:, :P] = False
        s_tok, t_tok, x_tok = (np.concatenate(x) for x in zip(*ends, strict=True))
        meta = {
            "source": s_tok - self.node0,  # node labels
            "target": t_tok - self.node0,
            "decoy": x_tok - self.node0,
            "work_length": k,  # trace nodes
        }
        return Examples(tokens, loss_mask, lengths, None, meta)

    def _draws(
        self, graph: np.ndarray, extra: np.ndarray, rngs: list[np.random.Generator]
    ) -> dict[str, np.ndarray]:
        """Every example's choices from its random words [chunks, n, words]; an example that hits a
        rejection (tied sort keys or a rejected code word: probability about 5e-6 at d = 5) is drawn again,
        whole, from its chunk's generator."""
        draws = self._decode(graph, extra)
        n, G = graph.shape[1], self.graph_words
        for r in np.flatnonzero(~draws["ok"]).tolist():
            while True:
                words = rngs[r // n].bit_generator.random_raw(self.words)[None]
                one = self._decode(words[:, :G], words[:, G:])
                if one["ok"][0]:
                    break
            for key, value in one.items():
                draws[key][r] = value[0]
        return draws

    def _decode(self, graph: np.ndarray, extra: np.ndarray) -> dict[str, np.ndarray]:
        """Random 64-bit words [..., G] and [..., T] -> the choices of each example (flattened to rows),
        exactly uniform in the rows that are `ok`.

        The graph words, read as 32-bit words: N label keys (bits 1..31), M edge keys (bits 1..31 order the
        list, bit 0 turns the edge around) and one word whose bit 0 swaps t1 and t2 (the same for every
        strategy). The
        extra words: d arc-order codes in 32-bit words (path, dfs, dfs_backtrack, shortest_path) or
        walk_length uniforms, one per step (walk). A uniform permutation is the argsort of distinct keys (a
        row with a tie is not `ok`); a code in 0..23 is Lemire's multiply-shift of a 32-bit word, which
        rejects the 16 words of 2^32 that would bias it (not `ok` either).
        """
        N, M, d = 2 * self.size, len(self.edges), self.cfg.depth
        u32 = graph.astype("<u8", copy=False).view("<u4")  # the same numbers on any host
        # One sort orders both: key = random bits 1..31 of the word, then the index; the edges' keys carry a
        # high bit so that they sort after the labels'.
        ib = max(N - 1, M - 1).bit_length()
        keys = np.empty((*u32.shape[:-1], N + M), dtype=np.int64)
        np.right_shift(u32[..., : N + M], 1, out=keys, casting="unsafe")
        keys <<= ib
        keys |= self.key_index
        keys.sort(axis=-1)
        keys = keys.reshape(-1, N + M)
        tie = ((keys[:, 1:] ^ keys[:, :-1]) < 1 << ib).any(1)  # equal random parts (sorted: adjacent)
        keys &= (1 << ib) - 1
        edge = keys[:, N:]  # in place: 2e + b, edge e listed here, its end b first
        edge <<= 1
        edge |= np.bitwise_and(u32[..., N : N + M], 1).reshape(-1, M)
        draws = {
            "labels": keys[:, :N],  # canonical node v gets label labels[:, v]: a uniform permutation
            "edge": edge,
            "swap": (u32[..., N + M] & 1).astype(bool).ravel(),  # t1 is the decoy
        }
        extra = extra.reshape(len(keys), extra.shape[-1])
        if self.tables is not None:
            code = extra.astype("<u8", copy=False).view("<u4")[:, :d]
            wide = code.astype(np.uint64) * np.uint64(ORDERS)
            draws["codes"] = (wide >> np.uint64(32)).astype(np.int64)  # [m, d] arc order at each junction
            tie |= ((wide & np.uint64(0xFFFFFFFF)) < np.uint64(2**32 % ORDERS)).any(1)
        if self.cfg.strategy == "walk":
            draws["uniform"] = (extra >> np.uint64(11)) * 2.0**-53  # as Generator.random draws them
        draws["ok"] = ~tie
        return draws

    def _render(
        self, tokens: np.ndarray, draws: dict[str, np.ndarray], work: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Write a block's token rows (gathers of node and word tokens by canonical ids) into `tokens`, and
        return the tokens of s, t and the decoy."""
        labels = draws["labels"]
        n, N, M = len(labels), 2 * self.size, len(self.edges)
        words = len(self.cfg.WORDS)
        ext = np.empty((n, N + words), dtype=np.int32)  # token of canonical id c: nodes 0..N-1, then words
        np.add(labels, self.node0, out=ext[:, :N], casting="unsafe")
        ext[:, N:] = np.arange(words, dtype=np.int32)
        flat = ext.ravel()
        row = (np.arange(n) * (N + words))[:, None]
        P, W = self.cfg.prompt_len, work.shape[1]
        tokens[:, :4] = self.template[:4]
        tokens[:, 4 + 2 * M : P] = self.template[4 + 2 * M :]
        edge = draws["edge"]  # [n, M] 2e + b: edge e listed here, its end b first
        for b, col in ((0, 4), (1, 5)):  # indices are in range by construction: no bounds checks (clip)
            ends = np.take(self.ends, edge ^ b if b else edge, mode="clip")
            ends += row
            tokens[:, col : col + 2 * M : 2] = np.take(flat, ends, mode="clip")
        s_tok, t_tok, x_tok = ext[:, 0], ext[:, self.target], ext[:, self.decoy]
        swap = draws["swap"]
        tokens[:, self.slot_s] = s_tok
        tokens[:, self.slot_t1] = np.where(swap, x_tok, t_tok)
        tokens[:, self.slot_t2] = np.where(swap, t_tok, x_tok)
        work += row
        tokens[:, P : P + W] = np.take(flat, work, mode="clip")
        tokens[:, P + W :] = self.vocab.pad
        return s_tok, t_tok, x_tok

    def _work(self, draws: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The answer in canonical ids (nodes; N + token id for words), [n, k + 10] PAD-padded, and k [n]."""
        n = len(draws["labels"])
        if self.cfg.strategy == "none":
            return np.tile(self.tail[1:], (n, 1)), np.zeros(n, dtype=np.int64)
        if self.cfg.strategy == "walk":
            trace, k = self._walks(draws["uniform"])
        else:
            trace, k = self._traces(draws["codes"])
        K = trace.shape[1]
        work = np.full((n, K + 10), self.pad_id, dtype=np.int64)
        work[:, :3] = self.head
        work[:, 3 : 3 + K] = trace  # padded with PAD's canonical id
        at = (np.arange(n) * (K + 10) + 3 + k)[:, None] + np.arange(len(self.tail))
        work.ravel()[at] = self.tail
        return work, k

    def _traces(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Traces on copy 1 from the arc order at every junction: canonical nodes [n, K] (padded with
        N + PAD, PAD's canonical id) and lengths k [n].

        The DFS takes a junction's unvisited arcs in a uniformly random order (code 0..23 indexes the
        orders of S, L, D, B), exploring dead ones (D; B, the previous petal's arc not taken, walked back)
        until the first of S, L leads on; it never returns past a junction. So a petal adds the node segment
        tabled for (arc it was entered by, code), and a trace is s followed by its d segments.
        """
        n, d = codes.shape
        arc_in = np.zeros_like(codes)
        arc_in[:, 1:] = FORWARD[codes[:, :-1]]  # 1 (S) or 2 (L): how the DFS entered the petal
        idx = arc_in * ORDERS + codes  # [n, d] rows of the segment tables
        lens = self.seg_len[idx]  # [n, d]
        k = 1 + lens.sum(1)
        width = int(k.max(initial=1)) + self.tables.shape[2]  # room for the last segment's padding
        out = np.full((n, width), self.pad_id, dtype=np.int64)
        out[:, 0] = 0  # s
        start = (np.arange(n) * width)[:, None] + 1 + np.cumsum(lens, axis=1) - lens  # [n, d] flat
        span = np.arange(self.tables.shape[2])
        flat = out.ravel()
        for i in range(d):  # later petals overwrite the padding of earlier ones
            flat[start[:, i, None] + span] = self.tables[i, idx[:, i]]
        return out[:, : int(k.max(initial=1))], k

    def _segments(self) -> tuple[np.ndarray, np.ndarray]:
        """The node segment a petal adds to the trace, per (petal, arc in * 24 + code): tables
        [d, 72, longest] (canonical nodes padded with N + PAD) and lengths [72]."""
        strategy, d = self.cfg.strategy, self.cfg.depth
        forward = {"S": [1, 2, 10], "L": [6, 5, 4, 3, 10]}
        rows: list[list[int]] = []
        for arc_in in ("", "S", "L"):
            dead = {"D": [9, 8, 7], "B": [-7, -6, -5, -4] if arc_in == "S" else [-8, -9]}  # from the junction
            for order in ARC_ORDERS:
                seg: list[int] = []
                for arc in order if strategy != "shortest_path" else "S":
                    if arc in forward:
                        seg += forward[arc]
                        break
                    if arc == "B" and not arc_in:
                        continue  # s has no previous petal
                    xs = dead[arc]
                    seg += {"path": [], "dfs": xs, "dfs_backtrack": xs + xs[-2::-1] + [0]}[strategy]
                rows.append(seg)
        longest = max(len(r) for r in rows)
        rel = np.zeros((len(rows), longest), dtype=np.int64)
        real = np.zeros((len(rows), longest), dtype=bool)
        for j, seg in enumerate(rows):
            rel[j, : len(seg)], real[j, : len(seg)] = seg, True
        petal = 10 * np.arange(d)[:, None, None]
        return np.where(real, rel + petal, self.pad_id), real.sum(1)

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

    def _walks(self, uniform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Walks from s, step j drawn by uniform[:, j]: to a neighbour u with probability proportional to
        reach[steps left, u] (inverse CDF over the tabled cumulative weights)."""
        n, L = uniform.shape
        out = np.full((n, L + 1), self.pad_id, dtype=np.int64)  # padded with PAD's canonical id
        out[:, 0] = 0  # s
        k = np.ones(n, dtype=np.int64)
        cur = np.zeros(n, dtype=np.int64)
        live = np.arange(n)
        for step in range(L):
            weight = self.cumulative[L - step - 1, cur[live]]  # [m, 5]
            u = uniform[live, step] * weight[:, -1]
            j = (weight <= u[:, None]).sum(1)  # first j with cumulative weight > u
            j = np.minimum(j, (weight < weight[:, -1:]).sum(1))  # u rounded up to the total: the last one
            nxt = self.nbr[cur[live], j]
            out[live, step + 1] = nxt
            k[live] += 1
            cur[live] = nxt
            live = live[nxt != self.target]
            if not live.size:
                break
        return out[:, : int(k.max(initial=1))], k

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
