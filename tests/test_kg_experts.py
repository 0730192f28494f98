"""Property tests of the knowledge-graph experts generator (docs/papers/transcendence.md).

Hypothesis draws small worlds over every parameter (mode, sizes, confidences, expertise, held-out fraction,
chain of thought, block length, world seed). The training text is parsed back into facts by a parser that
knows only the vocabulary's strings, so the checks do not trust the generator's own tables.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from helpers import train_in_process
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.data.base import Examples, UnknownSplit
from engine.data.kg_experts import KgExperts
from engine.data.stream import counter_rng, eval_examples
from schemas.data import KgExperts as KgExpertsConfig

ROOT = Path(__file__).resolve().parents[1]
SEEDS = st.integers(0, 2**63 - 1)
QUERY_SPLITS = st.sampled_from(["eval", "test"])
FAST = settings(max_examples=25, deadline=None)
TEMPLATE = set(KgExpertsConfig.WORDS)


@st.composite
def configs(draw: st.DrawFn, mode: str | None = None, cot: bool | None = None) -> KgExpertsConfig:
    """A feasible small world of any mode."""
    mode = mode or draw(st.sampled_from(["denoising", "selection", "generalization"]))
    n = draw(st.integers(4, 60))
    k = draw(st.integers(1, min(8, n)))
    largest = -(-n // k)
    per = draw(st.none() | st.integers(largest, n))
    kw: dict = dict(
        mode=mode,
        world_seed=draw(st.integers(0, 2**31)),
        entities=n,
        clusters=k,
        relations=draw(st.integers(1, 6)),
        range_fraction=draw(st.sampled_from([0.05, 0.3, 1.0])),
        experts=draw(st.integers(1, min(5, n))),
        entities_per_expert=per,
        confidences=tuple(draw(st.lists(st.sampled_from([0.0, 0.3, 0.6, 0.8, 1.0]), min_size=1, max_size=3))),
        text_len=draw(st.integers(2, 80)),
    )
    if mode == "selection":
        least = n if per is None or per >= n else per - largest + 1
        kw["knowledge_per_expert"] = draw(st.none() | st.floats(0.5, least)) if least >= 0.5 else None
        probe = KgExpertsConfig.model_construct(**kw)
        if probe.knowledge_budget > least:
            kw["knowledge_per_expert"] = float(least)
    if mode == "generalization":
        kw["heldout_fraction"] = draw(st.sampled_from([0.1, 0.3, 0.5]))
        kw["two_hop_fraction"] = draw(st.sampled_from([0.0, 0.3, 1.0]))
        kw["cot"] = draw(st.booleans()) if cot is None else cot
        held = round(kw["heldout_fraction"] * n)
        if not 1 <= held <= n - 1:
            kw["heldout_fraction"] = 1.5 / n
    return KgExpertsConfig(**kw)


def sample(gen: KgExperts, seed: int, n: int, split: str = "train") -> Examples:
    """n examples from a fresh counter RNG keyed by `seed`."""
    return gen.sample(counter_rng(seed), n, split)


def identical(a: Examples, b: Examples) -> bool:
    """Whether two batches agree in every array and in their metadata."""
    arrays = [(a.tokens, b.tokens), (a.loss_mask, b.loss_mask), (a.lengths, b.lengths)]
    arrays += [(a.meta[k], b.meta[k]) for k in a.meta] if a.meta.keys() == b.meta.keys() else [(0, 1)]
    return all(np.shape(x) == np.shape(y) and np.array_equal(x, y) for x, y in arrays)


# ---- a parser of the text that knows only the vocabulary's strings -------------------------------------


def relation_ids(cfg: KgExpertsConfig) -> dict[tuple[str, ...], int]:
    """The relation of each name (as a tuple of words)."""
    return {tuple(name.split()): j for j, name in enumerate(cfg.RELATION_NAMES[: cfg.relations])}


def parse_sentence(gen: KgExperts, words: list[str]) -> tuple:
    """('one', s, r, o) or ('two', s, r1, r2, m, o) from the words of one sentence ('.' excluded)."""
    rels, ents = relation_ids(gen.cfg), {name: i for i, name in enumerate(gen.names)}
    at = [i for i, w in enumerate(words) if w in ents]
    if words[: at[0]].count("of") == 2:  # the R2 of the R1 of S is [the R1 of S is M , so the R2 of M is] O
        first, second = words.index("of"), words.index("of", words.index("of") + 1)
        r2, r1 = rels[tuple(words[1:first])], rels[tuple(words[first + 2 : second])]
        s, o = ents[words[at[0]]], ents[words[at[-1]]]
        m = ents[words[at[2]]] if len(at) == 5 else None
        assert len(at) in (2, 5), words
        return ("two", s, r1, r2, m, o)
    assert len(at) == 2, words
    rel = tuple(w for w in words if w not in TEMPLATE and w not in ents)
    return ("one", ents[words[at[0]]], rels[rel], ents[words[at[1]]])


def documents(gen: KgExperts, row: np.ndarray) -> list[list[tuple]]:
    """The complete documents of a training block (the last one is cut unless it ends the block)."""
    words = [gen.vocab.tokens[t] for t in row]
    assert words[0] == "BOS" and "BOS" not in words[1:] and "PAD" not in words
    docs, current, sentence = [], [], []
    for w in words[1:]:
        if w == "EOS":
            assert not sentence, words
            docs.append(current)
            current = []
        elif w == ".":
            current.append(parse_sentence(gen, sentence))
            sentence = []
        else:
            sentence.append(w)
    return docs


def expert_claims(gen: KgExperts, x: int) -> dict[tuple[int, int], list[int]]:
    """(head, relation) -> objects in expert x's graph, from its edge arrays."""
    claims: dict[tuple[int, int], list[int]] = defaultdict(list)
    r = gen.cfg.relations
    for e, (h, t) in enumerate(zip(gen.expert_head[x].tolist(), gen.expert_tail[x].tolist(), strict=True)):
        claims[(h, e % r)].append(t)
    return claims


# ---- determinism, vocabulary, shapes -------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 24), split=st.sampled_from(["train", "eval", "test"]))
def test_same_seed_same_examples_other_seed_other_examples(
    cfg: KgExpertsConfig, seed: int, n: int, split: str
) -> None:
    gen = KgExperts(cfg)
    a, b = sample(gen, seed, n, split), sample(KgExperts(cfg), seed, n, split)
    assert identical(a, b)
    if split == "train" and cfg.text_len > 30:  # many random choices: another seed differs
        assert not identical(a, sample(gen, seed + 1, n, split))
    if split != "train" and len(gen.heads[split]) * cfg.relations ** (1 + cfg.two_hop) > 1:
        many = sample(gen, seed + 1, 64, split), sample(gen, seed + 2, 64, split)
        assert not identical(*many)


@FAST
@given(cfg=configs())
def test_world_is_a_function_of_world_seed(cfg: KgExpertsConfig) -> None:
    a, b = KgExperts(cfg), KgExperts(cfg)
    for name in ("truth", "cluster", "confidence", "expert_head", "expert_tail", "heldout"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.names == b.names and a.vocab == b.vocab
    other = KgExperts(cfg.model_copy(update={"world_seed": cfg.world_seed + 1}))
    assert other.names != a.names or not np.array_equal(other.truth, a.truth)


@FAST
@given(cfg=configs())
def test_vocabulary_layout_and_names(cfg: KgExpertsConfig) -> None:
    gen = KgExperts(cfg)
    tokens = gen.vocab.tokens
    assert len(tokens) == cfg.vocab_size == len(set(tokens))
    assert tokens[:3] == ("PAD", "BOS", "EOS") and tokens[gen.dot] == "."
    assert tokens[3 : gen.dot] == cfg.words()
    assert tokens[gen.name0 :] == gen.names and len(gen.names) == cfg.entities
    assert all(name.isalpha() and name[0].isupper() and " " not in name for name in gen.names)
    sizes = np.bincount(gen.cluster, minlength=cfg.clusters)
    assert sizes.min() == cfg.cluster_sizes[0] and sizes.max() == cfg.cluster_sizes[1]


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 24), split=st.sampled_from(["train", "eval", "test"]))
def test_shapes_vocab_range_lengths_and_padding(cfg: KgExpertsConfig, seed: int, n: int, split: str) -> None:
    gen = KgExperts(cfg)
    ex = sample(gen, seed, n, split)
    assert ex.tokens.dtype == np.int32 and ex.loss_mask.dtype == np.bool_ and ex.positions is None
    assert ex.tokens.shape == ex.loss_mask.shape and len(ex) == n
    assert ((ex.tokens >= 0) & (ex.tokens < cfg.vocab_size)).all()
    assert all(v.shape[0] == n for v in ex.meta.values())
    cols = np.arange(ex.tokens.shape[1])
    real = cols[None, :] < ex.lengths[:, None]
    assert (ex.tokens[real] != gen.vocab.pad).all() and (ex.tokens[~real] == gen.vocab.pad).all()
    assert ex.tokens.shape[1] == ex.lengths.max() <= cfg.max_seq_len()
    assert not ex.loss_mask[~real].any() and (ex.tokens[:, 0] == gen.vocab.bos).all()
    if split == "train":
        assert (ex.lengths == cfg.text_len).all()
    else:
        r2 = ex.meta["relation2"]
        want = [cfg.query_len(a, b if b >= 0 else None) for a, b in zip(ex.meta["relation"], r2, strict=True)]
        assert ex.lengths.tolist() == want
        assert (ex.tokens[np.arange(n), ex.lengths - 1] == gen.vocab.eos).all()


@pytest.mark.parametrize(
    "kw", [{}, {"mode": "selection"}, {"mode": "generalization"}, {"mode": "generalization", "cot": True}]
)
def test_length_stats_match_sampled_examples(kw: dict) -> None:
    cfg = KgExpertsConfig(entities=200, relations=12, text_len=40, **kw)
    gen = KgExperts(cfg)
    for split in cfg.SPLITS:
        t = sample(gen, 7, 2000, split).lengths.astype(np.float64)
        mean, sq = cfg.length_stats(split)
        assert abs(t.mean() / mean - 1) < 0.03 and abs((t * (t + 1)).mean() / sq - 1) < 0.05, split
    longest = max(
        cfg.query_len(a, b) if cfg.two_hop else cfg.query_len(a) for a in range(12) for b in range(12)
    )
    assert cfg.max_seq_len() == max(40, longest)


def test_unknown_split_and_pinned_length_are_refused() -> None:
    gen = KgExperts(KgExpertsConfig(entities=20, clusters=2))
    with pytest.raises(UnknownSplit, match="no split 'held_out'; kg_experts has train, eval, test"):
        gen.sample(counter_rng(0), 2, "held_out")
    with pytest.raises(ValueError, match="no input-length axis"):
        gen.sample(counter_rng(0), 2, "eval", length=8)


# ---- the loss mask and the verifier --------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 16), split=QUERY_SPLITS)
def test_query_format_and_answer_mask(cfg: KgExpertsConfig, seed: int, n: int, split: str) -> None:
    gen = KgExperts(cfg)
    ex = sample(gen, seed, n, split)
    rel = cfg.relation_words()
    for i in range(n):
        e = ex[i]
        words = [gen.vocab.tokens[t] for t in e.tokens]
        s, y, r1 = gen.names[e.meta["subject"]], gen.names[e.meta["answer"]], int(e.meta["relation"])
        if cfg.two_hop:
            r2 = int(e.meta["relation2"])
            prompt = ["BOS", "the", *rel[r2], "of", "the", *rel[r1], "of", s, "is"]
            m = gen.names[e.meta["intermediate"]]
            chain = ["the", *rel[r1], "of", s, "is", m, ",", "so", "the", *rel[r2], "of", m, "is"]
            answer = [*(chain if cfg.cot else []), y, "."]
            assert e.meta["answer"] == gen.truth[gen.truth[e.meta["subject"], r1], r2]
        else:
            prompt, answer = ["BOS", "the", *rel[r1], "of", s, "is"], [y, "."]
            assert e.meta["answer"] == gen.truth[e.meta["subject"], r1]
        assert words == [*prompt, *answer, "EOS"]
        assert [gen.vocab.tokens[t] for t in e.prompt] == prompt
        assert [gen.vocab.tokens[t] for t in e.answer] == answer  # loss on the answer only, up to '.'


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 16))
def test_training_text_has_loss_on_every_token_but_bos(cfg: KgExpertsConfig, seed: int, n: int) -> None:
    ex = sample(KgExperts(cfg), seed, n)
    assert not ex.loss_mask[:, 0].any() and ex.loss_mask[:, 1:].all()


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 12), split=QUERY_SPLITS, data=st.data())
def test_verifier_accepts_the_answer_and_rejects_others(
    cfg: KgExpertsConfig, seed: int, n: int, split: str, data: st.DataObject
) -> None:
    gen = KgExperts(cfg)
    ex = sample(gen, seed, n, split)
    dot, eos = gen.dot, gen.vocab.eos
    for i in range(n):
        e = ex[i]
        answer = e.answer.tolist()
        gold = answer[-2]
        assert gen.verify(e, answer) and gen.verify(e, [*answer, eos]) and gen.verify(e, [*answer, gold, 5])
        assert gen.verify(e, [gold, dot])  # the bare answer is right with or without a chain
        if cfg.entities > 1:
            wrong = (
                gen.name0
                + (int(e.meta["answer"]) + data.draw(st.integers(1, cfg.entities - 1))) % cfg.entities
            )
            assert not gen.verify(e, [*answer[:-2], wrong, dot])
            assert not gen.verify(e, [wrong, dot, gold, dot])  # only the text before the first '.' counts
        assert not gen.verify(e, answer[:-1])  # no '.'
        assert not gen.verify(e, []) and not gen.verify(e, [eos]) and not gen.verify(e, [dot, gold, dot])
        if not cfg.cot:
            assert not gen.verify(e, [gen.name0 + int(e.meta["subject"]), gold, dot])  # more than the object
    train = sample(gen, seed, 1)[0]
    with pytest.raises(ValueError, match="pretraining text"):
        gen.verify(train, [dot])


# ---- the world's invariants ----------------------------------------------------------------------------


@FAST
@given(cfg=configs())
def test_truth_is_functional_and_typed(cfg: KgExpertsConfig) -> None:
    gen = KgExperts(cfg)
    n, r = cfg.entities, cfg.relations
    assert gen.truth.shape == (n, r) and ((gen.truth >= 0) & (gen.truth < n)).all()  # one object per pair
    size = max(1, round(cfg.range_fraction * n))
    assert all(len(np.unique(gen.truth[:, j])) <= size for j in range(r))  # each relation's own range


@FAST
@given(cfg=configs())
def test_corruption_rule(cfg: KgExpertsConfig) -> None:
    gen = KgExperts(cfg)
    n, r = cfg.entities, cfg.relations
    h, t = np.repeat(np.arange(n), r), gen.truth.ravel()
    for x in range(cfg.experts):
        c = gen.confidence[x, gen.cluster]
        head, tail = gen.expert_head[x], gen.expert_tail[x]
        changed_h, changed_t = head != h, tail != t
        assert not (changed_h & changed_t).any()  # one end at most is swapped
        sure = np.maximum(c[h], c[t]) == 1
        assert not (changed_h | changed_t)[sure].any()  # confidence 1 at either end: the edge survives
        assert (c[h] >= c[t])[changed_t].all() and (c[h] <= c[t])[changed_h].all()
        assert (c[tail[changed_t]] < 1).all() and (c[head[changed_h]] < 1).all()  # weight 1 - c > 0
        for j in range(r):  # relation types: a swapped tail is still a true tail of its relation
            assert set(tail[j::r].tolist()) <= set(gen.truth[:, j].tolist())
        assert (np.bincount(np.arange(n * r) % r, minlength=r) == n).all()


@FAST
@given(cfg=configs(mode="denoising"), data=st.data())
def test_confidence_one_gives_the_truth(cfg: KgExpertsConfig, data: st.DataObject) -> None:
    sure = KgExperts(cfg.model_copy(update={"confidences": (1.0,), "entities_per_expert": None}))
    assert (sure.confidence == 1).all()
    np.testing.assert_array_equal(
        sure.expert_head, np.repeat(np.arange(cfg.entities), cfg.relations)[None].repeat(cfg.experts, 0)
    )
    np.testing.assert_array_equal(sure.expert_tail, sure.truth.ravel()[None].repeat(cfg.experts, 0))
    assert sure.best_expert_accuracy("test") == 1.0 and (sure.expert_accuracy("eval") == 1).all()
    # and the text it writes states the truth, every out-edge of the paragraph's entity once
    ex = sample(sure, data.draw(SEEDS), 8)
    for row in ex.tokens:
        for doc in documents(sure, row):
            assert {f[1] for f in doc} == {doc[0][1]}
            assert sorted((f[2], f[3]) for f in doc) == [
                (j, int(sure.truth[doc[0][1], j])) for j in range(cfg.relations)
            ]


@FAST
@given(cfg=configs(mode="denoising"))
def test_denoising_confidences(cfg: KgExpertsConfig) -> None:
    gen = KgExperts(cfg)
    sizes = np.bincount(gen.cluster, minlength=cfg.clusters)
    for x in range(cfg.experts):
        chosen = np.flatnonzero(gen.confidence[x] > 0)
        assert np.isin(gen.confidence[x][chosen], cfg.confidences).all()
        if cfg.entities_per_expert is None and 0.0 not in cfg.confidences:
            assert len(chosen) == cfg.clusters
        assert sizes[chosen].sum() <= cfg.expert_entities


@FAST
@given(cfg=configs(mode="selection"))
def test_selection_confidences_solve_the_knowledge_lp(cfg: KgExpertsConfig) -> None:
    gen = KgExperts(cfg)
    sizes = np.bincount(gen.cluster, minlength=cfg.clusters)
    for c in gen.confidence:
        assert ((c >= 0) & (c <= 1)).all()
        assert (sizes * c).sum() == pytest.approx(cfg.knowledge_budget, rel=1e-9)  # the budget, exactly
        assert ((c > 0) & (c < 1)).sum() <= 1  # a vertex of the LP: one fractional cluster at most
        some, full = c > 0, c >= 1
        # optimal: no cluster is given confidence while a smaller one is left below 1 (swap would gain)
        if some.any() and (~full & (c > 0)).any():
            assert sizes[full].max(initial=0) <= sizes[~full & some].min()


def test_survival_rate_is_the_confidence() -> None:
    cfg = KgExpertsConfig(
        entities=3000, clusters=10, relations=4, experts=3, confidences=(0.6,), range_fraction=1.0
    )
    gen = KgExperts(cfg)
    unchanged = (gen.expert_tail == gen.truth.ravel()) & (gen.expert_head == np.repeat(np.arange(3000), 4))
    assert abs(unchanged.mean() - 0.6) < 0.01  # a redraw returns the original with probability ~1/3000
    swapped_head = gen.expert_head != np.repeat(np.arange(3000), 4)
    assert abs(swapped_head.mean() - 0.2) < 0.01  # equal confidences: head or tail at random


def test_swaps_favour_entities_the_expert_is_unsure_of() -> None:
    cfg = KgExpertsConfig(
        entities=2000,
        clusters=2,
        relations=4,
        experts=1,
        confidences=(0.2, 0.9),
        range_fraction=1.0,
        world_seed=0,
    )
    gen = KgExperts(cfg)
    c = gen.confidence[0, gen.cluster]
    assert sorted(gen.confidence[0]) == [0.2, 0.9]  # this world's clusters drew both confidences
    h = np.repeat(np.arange(2000), 4)
    new_heads = gen.expert_head[0][gen.expert_head[0] != h]
    low = c.min()
    share = (c[new_heads] == low).mean()  # weights 1 - c: 0.8 vs 0.1 over equal clusters -> 8/9
    assert abs(share - (1 - low) / ((1 - low) + (1 - c.max()))) < 0.05


# ---- the training text --------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS)
def test_every_paragraph_is_one_experts_out_edges(cfg: KgExpertsConfig, seed: int) -> None:
    gen = KgExperts(cfg)
    claims = [expert_claims(gen, x) for x in range(cfg.experts)]
    r = cfg.relations
    out = [
        {v: Counter((j, o) for j in range(r) for o in claims[x][(v, j)]) for v in range(cfg.entities)}
        for x in range(cfg.experts)
    ]
    ex = sample(gen, seed, 6)
    for row in ex.tokens:
        for doc in documents(gen, row):
            assert doc, "an empty paragraph"
            if doc[0][0] == "two":
                assert len(doc) == 1 and cfg.two_hop
                _, s, r1, r2, m, o = doc[0]
                assert not gen.heldout[s]
                assert any(  # the expert composed its own edges (through the stated intermediate)
                    any(o in claims[x][(mm, r2)] for mm in claims[x][(s, r1)] if m is None or mm == m)
                    for x in range(cfg.experts)
                )
                continue
            subject = {f[1] for f in doc}
            assert len(subject) == 1 and all(f[0] == "one" for f in doc)
            stated = Counter((f[2], f[3]) for f in doc)
            assert any(stated == out[x][doc[0][1]] for x in range(cfg.experts))  # all of its out-edges


@FAST
@given(cfg=configs(mode="generalization"), seed=SEEDS)
def test_two_hop_facts_of_held_out_entities_never_appear_in_training(cfg: KgExpertsConfig, seed: int) -> None:
    gen = KgExperts(cfg)
    test = sample(gen, seed, 64, "test").meta["subject"]
    evals = sample(gen, seed, 64, "eval").meta["subject"]
    assert gen.heldout[test].all() and not gen.heldout[evals].any()
    text = " ".join(gen.vocab.decode(row) for row in sample(gen, seed, 32).tokens)
    rel = [" ".join(w) for w in cfg.relation_words()]
    for v in np.flatnonzero(gen.heldout):
        for a in rel:
            for b in rel:  # the two-hop query sentence of a held-out entity never occurs as such
                assert f"the {b} of the {a} of {gen.names[v]} is" not in text


def test_two_hop_statements_of_training_entities_do_appear() -> None:
    cfg = KgExpertsConfig(mode="generalization", entities=30, relations=2, two_hop_fraction=0.5, text_len=200)
    gen = KgExperts(cfg)
    docs = [doc for row in sample(gen, 1, 64).tokens for doc in documents(gen, row)]
    two = [doc[0] for doc in docs if doc[0][0] == "two"]
    assert 0.4 < len(two) / len(docs) < 0.55  # half the documents (a few dropped: no object to compose)
    assert len({f[1] for f in two}) > 15 and not gen.heldout[[f[1] for f in two]].any()


# ---- the experts' accuracy -----------------------------------------------------------------------------


@FAST
@given(cfg=configs(), split=QUERY_SPLITS)
def test_best_expert_accuracy_is_the_direct_computation(cfg: KgExpertsConfig, split: str) -> None:
    gen = KgExperts(cfg)
    heads = (
        np.flatnonzero(gen.heldout if split == "test" else ~gen.heldout)
        if cfg.two_hop
        else range(cfg.entities)
    )
    r, truth = cfg.relations, gen.truth
    accs = []
    for x in range(cfg.experts):
        claims = expert_claims(gen, x)

        def right(v: int, j: int, gold: int, claims: dict = claims) -> float:
            objects = claims[(v, j)]
            return objects.count(gold) / len(objects) if objects else 0.0

        if cfg.two_hop:
            total = [
                sum(right(m, b, truth[truth[v, a], b]) for m in claims[(v, a)]) / max(1, len(claims[(v, a)]))
                for v in heads
                for a in range(r)
                for b in range(r)
            ]
        else:
            total = [right(v, j, truth[v, j]) for v in heads for j in range(r)]
        accs.append(sum(total) / len(total))
    np.testing.assert_allclose(gen.expert_accuracy(split), accs, rtol=1e-9, atol=1e-12)
    assert gen.best_expert_accuracy(split) == pytest.approx(max(accs))


def test_sampled_queries_carry_each_experts_chance() -> None:
    for mode in ("selection", "generalization"):
        gen = KgExperts(KgExpertsConfig(mode=mode, entities=80, clusters=8, relations=3, experts=4))
        ex = eval_examples(gen, 0, "train", "test", None, 6000)
        assert ex.meta["experts_right"].shape == (6000, 4)
        np.testing.assert_allclose(ex.meta["experts_right"].mean(0), gen.expert_accuracy("test"), atol=0.03)
        assert (ex.meta["best_expert"] == gen.best_expert_accuracy("test")).all()
        assert 0 < gen.best_expert_accuracy("test") < 1
    with pytest.raises(ValueError, match="no queries"):
        gen.expert_accuracy("train")


@FAST
@given(cfg=configs(), seed=SEEDS, split=QUERY_SPLITS)
def test_render_shows_prompt_answer_and_experts(cfg: KgExpertsConfig, seed: int, split: str) -> None:
    gen = KgExperts(cfg)
    e = sample(gen, seed, 1, split)[0]
    text = gen.render(e)
    assert text.startswith(gen.vocab.decode(e.prompt) + " -> " + gen.vocab.decode(e.answer))
    assert f"best expert {gen.best_expert_accuracy(split):.2f}" in text
    train = gen.render(sample(gen, seed, 1)[0])
    assert train.startswith("[pretraining text, loss on every token] BOS")


# ---- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "field", "message"),
    [
        ({"entities": 10, "experts": 11}, "experts", "experts=11 exceeds entities=10"),
        ({"entities": 10, "clusters": 12}, "clusters", "clusters=12 exceeds entities=10"),
        ({"confidences": (0.6, 1.2)}, "confidences", "[1.2] lie outside [0, 1]"),
        ({"entities_per_expert": 50}, "entities_per_expert", "smaller than a cluster (100 entities)"),
        ({"entities_per_expert": 5000}, "entities_per_expert", "exceeds entities=1000"),
        (
            {"mode": "selection", "entities_per_expert": 250, "knowledge_per_expert": 200},
            "knowledge_per_expert",
            "200 cannot be met: an expert's clusters may hold only 151 entities",
        ),
        (
            {"mode": "generalization", "entities": 4, "heldout_fraction": 0.1},
            "heldout_fraction",
            "holds out 0",
        ),
        ({"cot": True}, "cot", "mode 'denoising' has none"),
    ],
)
def test_bad_input_names_the_field_and_the_limit(kw: dict, field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        KgExpertsConfig(**kw)
    problems = [p for e in info.value.errors() for p in (e.get("ctx") or {}).get("problems", [])]
    assert any(f == field and message in m for f, m in problems), problems


def test_a_feasible_budget_is_always_met() -> None:
    cfg = KgExpertsConfig(mode="selection", entities_per_expert=250, knowledge_per_expert=151)
    gen = KgExperts(cfg)
    sizes = np.bincount(gen.cluster, minlength=cfg.clusters)
    assert np.allclose((gen.confidence * sizes).sum(1), 151)


# ---- end to end ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_example_spec_trains_and_evaluates(tmp_path: Path) -> None:
    from schemas import load_spec

    spec = load_spec(
        str(ROOT / "specs" / "kg_experts.yaml"),
        [f"run.output={tmp_path}", "stages.train.schedule.steps=4", "stages.train.schedule.warmup=1",
         "stages.train.batch.global=8", "stages.train.evals.0.examples=32", "stages.train.checkpoint.every=4"],
    )  # fmt: skip
    _, rows = train_in_process(spec)
    evals = [row for row in rows if "acc/test" in row]
    assert evals and evals[-1]["step"] == 4
    assert all({"acc/eval", "acc/test"} <= set(row) for row in evals)
    losses = [row["loss"] for row in rows if "loss" in row]
    assert losses and all(np.isfinite(losses)) and losses[0] > 1.0  # untrained: far from memorised
    assert (tmp_path / "train" / "final" / "done.json").exists()
