"""Knowledge-graph experts (docs/papers/transcendence.md): noisy pretraining text, cloze queries.

A world, fixed by `world_seed`, holds `entities` fictional names (one token each, e.g. `Kavoru`), grouped into
`clusters`, and `relations` functional typed relations: every entity has exactly one object per relation,
drawn from that relation's own range of entities (its type). Each relation has two sentence templates
"<subj> ... <obj> .": template 0 is the cloze form `the <r> of S is O .`, template 1 one of `S 's <r> is O .`,
`S has O as <r> .`, `for S , the <r> is O .`. Vocabulary: PAD, BOS, EOS, template words, '.', entity names.

Experts. Each expert takes clusters in a random order while they fit in `entities_per_expert` (greedy, as the
authors' `select_clusters`) and gives each a confidence c (0 for the others): drawn from `confidences`
(denoising, generalization), or the LP optimum of max sum(c) s.t. sum(|C|*c) = `knowledge_per_expert`, c in
[0, 1] (selection: fill the smallest clusters first). Its graph corrupts every true edge (h, r, t): the edge
survives with probability max(c_h, c_t); otherwise, if c_h > c_t, its tail is redrawn among the true tails of
r (one per true edge of r) with weight 1 - c of the tail's cluster; if c_h < c_t its head is redrawn among all
entities (every entity is a head of r) with weight 1 - c of its cluster; ties pick tail or head at random.
A redraw may return the original entity (as in the authors' code). An expert's graph keeps every edge's
relation, so it has exactly `entities` edges per relation, but a head swap can leave an entity with no object
or several for a relation: the expert then answers with one of them uniformly (none = wrong).

Splits.
- `train`: blocks of exactly `text_len` tokens, `BOS doc EOS doc EOS ...` cut at the end (the paper's packed
  512-token blocks). A document is an entity paragraph of an expert drawn uniformly: an entity drawn
  uniformly, all its out-edges in that expert's graph, each with a random one of its two templates, shuffled
  (empty paragraphs are skipped). In generalization mode a `two_hop_fraction` of documents are instead a
  two-hop statement by the expert, composing its own edges, about a non-held-out entity:
  `the r2 of the r1 of S is [the r1 of S is M , so the r2 of M is] O .` (one it cannot compose, for want of
  an object, becomes a paragraph). Loss on every token but BOS: this is pretraining text, not question
  answering.
- `eval` / `test`: cloze queries `BOS the <r> of X is | Y . EOS` (denoising, selection: both over all
  entities), or `BOS the r2 of the r1 of X is | [chain] Y . EOS` (generalization: eval over the non-held-out
  entities, whose two-hop statements appear in training, test over the held-out ones, whose two-hop facts are
  never stated in training text). Relations are drawn uniformly. The answer is the true object; the loss is on
  the answer tokens up to and including '.'.

`best_expert_accuracy(split)` is the accuracy of the best single expert over all queries of a split, each
expert answering from its own graph (one-hop: the probability that its answer for (X, r) is the truth;
two-hop: composing its own edges), so that transcendence = model accuracy - best expert accuracy.

Rendered test examples (`engine sample --split test`; the default world, then generalization with cot):

    BOS the mentor of Pitu is -> Fuso .   (experts right: 1.00 0.50 1.00 0.00 1.00; best expert 0.91)
    BOS the rival of the mother of Lute is -> the mother of Lute is Kumi , so the rival of Kumi is Zoza .   (...)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.data import KgExperts as KgExpertsConfig

from .base import Example, Examples, UnknownSplit, Vocab

CONSONANTS, VOWELS = "bdfghklmnprstvz", "aeiou"
HOLE, SUBJ, OBJ, MID = -1, -2, -3, -4  # placeholders in the template tables
TEMPLATE_SLOTS = {"S": SUBJ, "O": OBJ, "M": MID}


def world_rng(seed: int, part: int) -> np.random.Generator:
    """An independent generator for one part of the world (names, graph, experts)."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, part])))


def entity_names(rng: np.random.Generator, n: int) -> tuple[str, ...]:
    """n distinct capitalised names of 2+ consonant-vowel syllables (e.g. `Kavoru`)."""
    syllables = [c + v for c in CONSONANTS for v in VOWELS]
    base, length = len(syllables), 2
    while base**length < 4 * n:  # a sparse name space, so that names look random
        length += 1
    chosen = np.empty(0, dtype=np.int64)
    while len(chosen) < n:
        chosen = np.unique(np.concatenate([chosen, rng.integers(base**length, size=n + n // 4 + 8)]))
    chosen = rng.permutation(chosen)[:n]
    digits = chosen[:, None] // base ** np.arange(length)[None, :] % base  # [n, length]
    return tuple("".join(syllables[d] for d in row).capitalize() for row in digits.tolist())


def _segments(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For segments [start, start+count): (index of the segment of each element, the element)."""
    seg = np.repeat(np.arange(len(counts)), counts)
    offset = np.cumsum(counts) - counts
    return seg, np.repeat(starts - offset, counts) + np.arange(int(counts.sum()))


class KgExperts:
    """Generator of expert-written paragraphs and cloze queries over one synthetic knowledge graph.

    World arrays (numpy, fixed by the config): `truth` [N, R] object of each (entity, relation); `cluster` [N];
    `confidence` [X, K] per expert and cluster; `expert_head`, `expert_tail` [X, N*R] the experts' graphs in
    true-edge order (edge e = entity*R + relation keeps its relation); `heldout` [N] bool (generalization).
    """

    def __init__(self, cfg: KgExpertsConfig):
        self.cfg = cfg
        n, k, r = cfg.entities, cfg.clusters, cfg.relations
        self.words = cfg.words()
        self.dot = 3 + len(self.words)
        self.name0 = self.dot + 1  # token of entity v = name0 + v
        self.names = entity_names(world_rng(cfg.world_seed, 0), n)
        self.vocab = Vocab(("PAD", "BOS", "EOS", *self.words, ".", *self.names))
        self.relation_names = cfg.RELATION_NAMES[:r]

        g = world_rng(cfg.world_seed, 1)
        self.cluster = np.empty(n, dtype=np.int64)
        self.cluster[g.permutation(n)] = np.arange(n) % k  # balanced: sizes n // k or n // k + 1
        size = max(1, round(cfg.range_fraction * n))
        self.truth = np.empty((n, r), dtype=np.int64)
        for j in range(r):  # relation j's objects come from its own range (its type)
            self.truth[:, j] = g.choice(n, size, replace=False)[g.integers(size, size=n)]
        self.alt = g.integers(len(cfg.ALT_TEMPLATES), size=r)  # template 1 of each relation
        self.heldout = np.zeros(n, dtype=bool)
        if cfg.two_hop:
            self.heldout[g.permutation(n)[: cfg.heldout_entities]] = True
        every = np.arange(n)
        self.heads = (
            {"eval": every[~self.heldout], "test": every[self.heldout]}
            if cfg.two_hop
            else {"eval": every, "test": every}
        )

        self.confidence = self._confidences(world_rng(cfg.world_seed, 2))
        self.expert_head, self.expert_tail = self._corrupt(world_rng(cfg.world_seed, 3))
        self._index()
        self._tables()
        self._best: dict[str, np.ndarray] = {}

    # ---- the world -------------------------------------------------------------------------------------

    def _confidences(self, g: np.random.Generator) -> np.ndarray:
        """[X, K] confidence of each expert per cluster: 0 outside its clusters."""
        cfg = self.cfg
        sizes = np.bincount(self.cluster, minlength=cfg.clusters)
        conf = np.zeros((cfg.experts, cfg.clusters))
        for x in range(cfg.experts):  # world construction: X * K steps, once
            chosen, total = [], 0
            for c in g.permutation(cfg.clusters).tolist():  # the authors' greedy fill in random order
                if total + sizes[c] <= cfg.expert_entities:
                    chosen.append(c)
                    total += int(sizes[c])
                if total >= cfg.expert_entities:
                    break
            chosen = np.array(chosen, dtype=np.int64)
            if cfg.mode == "selection":  # LP optimum: the smallest clusters at c = 1, one fractional, rest 0
                order = chosen[np.argsort(sizes[chosen], kind="stable")]
                cum = np.cumsum(sizes[order])  # integers: exact
                full = int(np.searchsorted(cum, cfg.knowledge_budget, side="right"))
                conf[x, order[:full]] = 1.0
                if full < len(order):
                    conf[x, order[full]] = (cfg.knowledge_budget - (cum[full - 1] if full else 0)) / sizes[
                        order[full]
                    ]
            else:
                conf[x, chosen] = g.choice(np.asarray(cfg.confidences, dtype=np.float64), size=len(chosen))
        return conf

    def _corrupt(self, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """[X, N*R] heads and tails of each expert's graph (corruption rule: docs/papers/transcendence.md)."""
        cfg = self.cfg
        n, r = cfg.entities, cfg.relations
        h = np.repeat(np.arange(n), r)  # [E] true edges in order entity*R + relation
        rel = np.tile(np.arange(r), n)
        t = self.truth.ravel()
        heads = np.empty((cfg.experts, n * r), dtype=np.int64)
        tails = np.empty((cfg.experts, n * r), dtype=np.int64)
        for x in range(cfg.experts):
            c = self.confidence[x, self.cluster]  # [N] confidence of each entity's cluster
            ch, ct = c[h], c[t]
            lost = g.random(n * r) >= np.maximum(ch, ct)
            coin = g.random(n * r) < 0.5
            swap_tail = lost & ((ch > ct) | ((ch == ct) & coin))
            swap_head = lost & ~swap_tail
            new_t, new_h = t.copy(), h.copy()
            # tails: the true tails of relation j (one per true edge) weighted by 1 - c of their cluster
            weight = 1.0 - c[self.truth]  # [N, R]
            u = g.random(n * r)
            for j in range(r):
                edges = np.flatnonzero(swap_tail & (rel == j))
                if len(edges):
                    new_t[edges] = self.truth[_draw(np.cumsum(weight[:, j]), u[edges]), j]
            # heads: every entity is a head of every relation, weighted by 1 - c of its cluster
            edges = np.flatnonzero(swap_head)
            new_h[edges] = _draw(np.cumsum(1.0 - c), g.random(n * r)[edges])
            heads[x], tails[x] = new_h, new_t
        return heads, tails

    def _index(self) -> None:
        """Sorted edge tables of the experts: (head, relation) blocks for paragraphs, claims and lookups."""
        cfg = self.cfg
        n, r, e = cfg.entities, cfg.relations, cfg.entities * cfg.relations
        rel = np.tile(np.arange(r), n)
        key = self.expert_head * r + rel  # [X, E] (head, relation) key
        key3 = key * n + self.expert_tail  # [X, E] (head, relation, tail) key
        order = np.argsort(key3, axis=1, kind="stable")
        self.sorted_key3 = np.take_along_axis(key3, order, axis=1)  # [X, E]
        self.flat_tail = np.take_along_axis(self.expert_tail, order, axis=1).ravel()  # [X*E]
        self.flat_rel = rel[order].ravel()  # [X*E]
        counts = np.stack([np.bincount(k, minlength=e) for k in key])  # [X, N*R] objects per (head, relation)
        offset = (np.arange(cfg.experts) * e)[:, None]
        self.starts = np.concatenate([np.zeros((cfg.experts, 1), np.int64), np.cumsum(counts, 1)], 1) + offset
        self.claims = counts.reshape(cfg.experts, n, r)  # [X, N, R]
        true = self.expert_tail == self.truth[self.expert_head, rel[None, :]]  # [X, E] edge states the truth
        right = np.stack([np.bincount(k, weights=w, minlength=e) for k, w in zip(key, true, strict=True)])
        with np.errstate(invalid="ignore", divide="ignore"):
            self.p_right = np.where(counts > 0, right / counts, 0.0).reshape(cfg.experts, n, r)  # [X, N, R]

    def _tables(self) -> None:
        """Token rows of every template, relation (pair) and query, with placeholders, padded with HOLE."""
        cfg = self.cfg
        rw = [[self.vocab.tokens.index(w) for w in words] for words in cfg.relation_words()]
        ids = {w: i for i, w in enumerate(self.vocab.tokens[: self.name0])}

        def row(pattern: Sequence[str], **rels: list[int]) -> list[int]:
            out: list[int] = []
            for p in pattern:
                out += rels[p] if p in rels else [TEMPLATE_SLOTS[p]] if p in TEMPLATE_SLOTS else [ids[p]]
            return out

        r = cfg.relations
        sentences = [
            [row(cfg.QUERY, R=rw[j]), row(cfg.ALT_TEMPLATES[int(self.alt[j])], R=rw[j])] for j in range(r)
        ]
        two_hop = ("the", "R2", "of", "the", "R1", "of", "S", "is")
        chain = (
            ("the", "R1", "of", "S", "is", "M", ",", "so", "the", "R2", "of", "M", "is") if cfg.cot else ()
        )
        statements = [
            [row((*two_hop, *chain, "O", "."), R1=rw[a], R2=rw[b]) for b in range(r)] for a in range(r)
        ]
        self.sentence = _pad([s for pair in sentences for s in pair]).reshape(r, 2, -1)  # [R, 2, W]
        self.sentence_len = (self.sentence != HOLE).sum(-1)  # [R, 2]
        self.statement = _pad([s for per in statements for s in per]).reshape(r, r, -1)  # [R, R, W2]
        # queries: BOS + template 0 (one-hop) or the two-hop statement + EOS; the prompt ends at the first 'is'
        if cfg.two_hop:
            queries = [[self.vocab.bos, *s, self.vocab.eos] for per in statements for s in per]
            prompt = [len(rw[b]) + len(rw[a]) + 7 for a in range(r) for b in range(r)]
        else:
            queries = [[self.vocab.bos, *pair[0], self.vocab.eos] for pair in sentences]
            prompt = [len(rw[j]) + 5 for j in range(r)]
        self.query = _pad(queries)  # [Q, W] Q = R or R*R (index r1*R + r2)
        self.query_len = (self.query != HOLE).sum(-1)  # [Q]
        cols = np.arange(self.query.shape[1])[None, :]
        self.query_mask = (cols >= np.array(prompt)[:, None]) & (cols < self.query_len[:, None] - 1)  # [Q, W]
        para = self.sentence_len.mean(1).sum() + 1  # mean paragraph: mean out-degree is exactly R
        stmt = (self.statement != HOLE).sum(-1).mean() + 1
        f = cfg.two_hop_fraction if cfg.two_hop else 0.0
        self.mean_doc = (1 - f) * para + f * stmt  # tokens per document, EOS included

    # ---- sampling --------------------------------------------------------------------------------------

    def sample(
        self, rng: np.random.Generator, n: int, split: str = "train", length: int | None = None
    ) -> Examples:
        """n training blocks (`train`) or cloze queries (`eval`, `test`)."""
        if split not in self.cfg.SPLITS:
            raise UnknownSplit(f"no split {split!r}; kg_experts has {', '.join(self.cfg.SPLITS)}")
        if length is not None:
            raise ValueError("kg_experts has no input-length axis; evaluate it with exact_match")
        return self._text(rng, n) if split == "train" else self._queries(rng, n, split)

    def _text(self, rng: np.random.Generator, n: int) -> Examples:
        """Blocks of text_len tokens: BOS, then documents (each ended by EOS) until full, cut."""
        need = self.cfg.text_len - 1
        per = int(np.ceil(1.25 * need / self.mean_doc)) + 2  # documents drawn per example and round
        todo, have, rounds = np.arange(n), np.zeros(n, dtype=np.int64), []
        while len(todo):  # almost always one round
            if len(rounds) == 1000:  # a world fills a block in a round or two; never hang
                raise RuntimeError("kg_experts: 1000 rounds of documents did not fill a block")
            owner, tokens = self._documents(rng, np.repeat(todo, per))
            have += np.bincount(owner, minlength=n)
            rounds.append((owner, tokens))
            todo = np.flatnonzero(have < need)
        owner = np.concatenate([o for o, _ in rounds])
        stream = np.concatenate([t for _, t in rounds])
        if len(rounds) > 1:
            order = np.argsort(owner, kind="stable")  # keep each example's documents in round order
            owner, stream = owner[order], stream[order]
        start = np.cumsum(have) - have
        tokens = np.empty((n, need + 1), dtype=np.int32)
        tokens[:, 0] = self.vocab.bos
        tokens[:, 1:] = stream[start[:, None] + np.arange(need)[None, :]]
        loss_mask = np.ones_like(tokens, dtype=bool)
        loss_mask[:, 0] = False  # BOS is never predicted; every other token is text
        lengths = np.full(n, need + 1, dtype=np.int64)
        return Examples(tokens, loss_mask, lengths, None, {"documents": (tokens == self.vocab.eos).sum(1)})

    def _documents(self, rng: np.random.Generator, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Documents for `owner` [m] (the example of each), as (example of each token, tokens) in order."""
        cfg = self.cfg
        m, r = len(owner), cfg.relations
        expert = rng.integers(cfg.experts, size=m)
        v = rng.integers(cfg.entities, size=m)
        stated, parts = np.zeros(m, dtype=bool), []
        if cfg.two_hop:  # two-hop statements of non-held-out entities, composed from the expert's own edges
            wanted = rng.random(m) < cfg.two_hop_fraction
            heads = self.heads["eval"]
            s = heads[rng.integers(len(heads), size=m)]
            r1, r2 = rng.integers(r, size=(2, m))
            mid, ok1 = self._claim(rng, expert, s, r1)
            obj, ok2 = self._claim(rng, expert, mid, r2)
            stated = wanted & ok1 & ok2  # one the expert cannot compose becomes a paragraph
            which = np.flatnonzero(stated)
            rows = self.statement[r1[which], r2[which]]
            for slot, ent in ((SUBJ, s), (MID, mid), (OBJ, obj)):
                rows = _fill(rows, slot, self.name0 + ent[which])
            parts.append((rows, which, np.zeros(len(which))))
        # paragraphs: all out-edges of v in the expert's graph, shuffled, a random template each
        a = self.starts[expert, v * r]
        count = np.where(stated, 0, self.starts[expert, v * r + r] - a)
        doc, edge = _segments(a, count)
        rows = self.sentence[self.flat_rel[edge], rng.integers(2, size=len(edge))]
        rows = _fill(rows, SUBJ, self.name0 + v[doc])
        rows = _fill(rows, OBJ, self.name0 + self.flat_tail[edge])
        parts.append((rows, doc, rng.random(len(edge))))  # random keys: shuffled within the paragraph
        kept = stated | (count > 0)  # empty paragraphs are skipped
        ends = np.flatnonzero(kept)
        eos = np.full((len(ends), 1), self.vocab.eos, dtype=np.int64)
        parts.append((eos, ends, np.full(len(ends), 2.0)))  # after the document's sentences
        width = max(p[0].shape[1] for p in parts)
        rows = np.concatenate(
            [np.pad(p[0], ((0, 0), (0, width - p[0].shape[1])), constant_values=HOLE) for p in parts]
        )
        doc = np.concatenate([p[1] for p in parts])
        order = np.lexsort((np.concatenate([p[2] for p in parts]), doc))
        rows, doc = rows[order], doc[order]
        real = rows != HOLE
        return np.repeat(owner[doc], real.sum(1)), rows[real]

    def _claim(
        self, rng: np.random.Generator, expert: np.ndarray, head: np.ndarray, rel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """An object the expert's graph gives for (head, rel), uniform among several; and whether it has one."""
        k = head * self.cfg.relations + rel
        a = self.starts[expert, k]
        count = self.starts[expert, k + 1] - a
        pick = np.minimum(a + (rng.random(len(a)) * count).astype(np.int64), len(self.flat_tail) - 1)
        return np.where(count > 0, self.flat_tail[pick], 0), count > 0

    def _queries(self, rng: np.random.Generator, n: int, split: str) -> Examples:
        """Cloze queries of `split` with the true object as the answer."""
        cfg = self.cfg
        r = cfg.relations
        heads = self.heads[split]
        v = heads[rng.integers(len(heads), size=n)]
        r1 = rng.integers(r, size=n)
        if cfg.two_hop:
            r2 = rng.integers(r, size=n)
            mid = self.truth[v, r1]
            answer = self.truth[mid, r2]
            q = r1 * r + r2
            right = self.two_hop_right(v, r1, r2)
        else:
            r2 = mid = np.full(n, -1)
            answer = self.truth[v, r1]
            q = r1
            right = self.p_right[:, v, r1].T
        width = int(self.query_len[q].max(initial=1))
        rows = self.query[q, :width]
        for slot, ent in ((SUBJ, v), (MID, mid), (OBJ, answer)):
            rows = _fill(rows, slot, self.name0 + ent)
        tokens = np.where(rows == HOLE, self.vocab.pad, rows).astype(np.int32)
        meta = {
            "subject": v,
            "relation": r1,
            "relation2": r2,
            "intermediate": mid,
            "answer": answer,
            "experts_right": right,  # [n, X] float64: each expert's chance to answer this query right
            "best_expert": np.full(n, self.best_expert_accuracy(split)),  # [n] the split's best expert
        }
        return Examples(
            tokens, self.query_mask[q, :width].copy(), self.query_len[q].astype(np.int64), None, meta
        )

    # ---- the experts' accuracy -------------------------------------------------------------------------

    def two_hop_right(self, v: np.ndarray, r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
        """[n, X] probability that each expert answers `the r2 of the r1 of v` right, composing its own edges.

        The expert picks an object M of (v, r1) uniformly among its claims, then an object of (M, r2) likewise;
        it is right when that is the true answer (even through a wrong M).
        """
        cfg = self.cfg
        n_, r = cfg.entities, cfg.relations
        gold = self.truth[self.truth[v, r1], r2]
        out = np.zeros((len(v), cfg.experts))
        for x in range(cfg.experts):
            a = self.starts[x, v * r + r1]
            count = self.starts[x, v * r + r1 + 1] - a
            q, edge = _segments(a, count)
            mid = self.flat_tail[edge]
            key = (mid * r + r2[q]) * n_ + gold[q]
            hits = np.searchsorted(self.sorted_key3[x], key, "right") - np.searchsorted(
                self.sorted_key3[x], key
            )
            claims = self.claims[x, mid, r2[q]]  # >= hits
            p = hits / np.maximum(claims, 1) / count[q]
            out[:, x] = np.bincount(q, weights=p, minlength=len(v))
        return out

    def expert_accuracy(self, split: str = "test") -> np.ndarray:
        """[X] each expert's accuracy over all queries of `split` (uniform over subjects and relations)."""
        if split not in self._best:
            if split not in self.heads:
                raise ValueError(f"split {split!r} has no queries; kg_experts queries eval and test")
            heads, r = self.heads[split], self.cfg.relations
            if not self.cfg.two_hop:
                self._best[split] = self.p_right[:, heads, :].mean(axis=(1, 2))
            else:
                total, chunk = np.zeros(self.cfg.experts), max(1, 2**18 // (r * r))
                for i in range(0, len(heads), chunk):
                    v = np.repeat(heads[i : i + chunk], r * r)
                    pairs = np.tile(np.arange(r * r), len(heads[i : i + chunk]))
                    total += self.two_hop_right(v, pairs // r, pairs % r).sum(0)
                self._best[split] = total / (len(heads) * r * r)
        return self._best[split]

    def best_expert_accuracy(self, split: str = "test") -> float:
        """The best single expert's accuracy over all queries of `split`: transcendence is measured against it."""
        return float(self.expert_accuracy(split).max())

    # ---- checking and showing --------------------------------------------------------------------------

    def verify(self, example: Example, completion: Sequence[int]) -> bool:
        """Correct iff the completion up to its first '.' is the true object (with cot: ends with it)."""
        if "answer" not in example.meta:
            raise ValueError(
                "a kg_experts train example is pretraining text; only eval and test have answers"
            )
        completion = [int(t) for t in completion]
        if self.dot not in completion:
            return False
        before = completion[: completion.index(self.dot)]
        gold = self.name0 + int(example.meta["answer"])
        if self.cfg.cot:
            return len(before) >= 1 and before[-1] == gold
        return before == [gold]

    def answer(self, example: Example, completion: Sequence[int]) -> tuple[int, ...] | int | None:
        """The tokens before the first '.' (with cot: the last of them, the object named); None without '.'."""
        completion = [int(t) for t in completion]
        if self.dot not in completion:
            return None
        before = completion[: completion.index(self.dot)]
        if self.cfg.cot:
            return before[-1] if before else None
        return tuple(before)

    def render(self, example: Example) -> str:
        """Training text (loss on every token), or a cloze prompt -> answer with the experts' chances."""
        if "answer" not in example.meta:
            return f"[pretraining text, loss on every token] {self.vocab.decode(example.tokens)}"
        right = " ".join(f"{p:.2f}" for p in example.meta["experts_right"])
        return (
            f"{self.vocab.decode(example.prompt)} -> {self.vocab.decode(example.answer)}   "
            f"(experts right: {right}; best expert {float(example.meta['best_expert']):.2f})"
        )


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn with probability proportional to the weights whose running sum is `cdf`; u in [0, 1)."""
    x = np.minimum(u * cdf[-1], np.nextafter(cdf[-1], -np.inf))
    return np.searchsorted(cdf, x, side="right")  # first index with cdf > x: its weight is positive


def _pad(rows: list[list[int]]) -> np.ndarray:
    """Ragged token rows as one int64 array padded with HOLE."""
    out = np.full((len(rows), max(map(len, rows))), HOLE, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _fill(rows: np.ndarray, slot: int, tokens: np.ndarray) -> np.ndarray:
    """Rows [m, W] with the placeholder `slot` replaced by each row's token [m]."""
    return np.where(rows == slot, tokens[:, None], rows)
