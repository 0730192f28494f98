"""Property tests of the variable-assignment (pointer-chasing) generator with coupled positions
(docs/papers/length_generalisation.md).

Hypothesis draws the name count, the statement-count ranges, the chain length (`hops`: null, fixed or a
range), P_max, the number of examples and the seed. The task's invariants: the statements form disjoint
chains that each end in a value with every variable defined once, the answer is the exact chain from the
query, each answer token depends on the statement `sources` names (given the answer so far) and on no other
input token, the coupled ids point at each answer token's defining occurrence (offset random in training, 0
at evaluation), and the ranges of m of the splits stay apart.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import train_in_process
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.data.base import Examples, UnknownSplit
from engine.data.stream import counter_rng, eval_examples
from engine.data.variable_assignment import (
    BOS,
    DIGIT0,
    EOS,
    EQ,
    NAME0,
    QUERY,
    SEMI,
    VariableAssignment,
    name,
    next_token,
    parse,
    solve,
)
from schemas.data import VariableAssignment as VAConfig

SPLITS = st.sampled_from(["train", "eval"])
SEEDS = st.integers(0, 2**63 - 1)
FAST = settings(max_examples=30, deadline=None)


@st.composite
def configs(draw: st.DrawFn, max_m: int = 14) -> VAConfig:
    """A feasible config: names >= the longest m, hops null or inside the shortest m, P_max >= 4m + 3."""

    def m_range() -> tuple[int, int]:
        lo = draw(st.integers(1, max_m))
        return lo, draw(st.integers(lo, max_m))

    train, evals = m_range(), m_range()
    longest, shortest = max(train[1], evals[1]), min(train[0], evals[0])
    h_lo = draw(st.integers(1, shortest))
    h_hi = draw(st.integers(h_lo, shortest))
    hops = draw(st.sampled_from([None, h_lo, (h_lo, h_hi)]))
    return VAConfig(
        names=longest + draw(st.integers(0, 30)),
        length={"train": train, "eval": evals},
        hops=hops,
        max_position_id=4 * longest + 3 + draw(st.integers(0, 40)),
    )


def sample(cfg: VAConfig, seed: int, n: int, split: str = "train", length: int | None = None) -> Examples:
    """n examples from a fresh counter RNG keyed by `seed`."""
    return VariableAssignment(cfg).sample(counter_rng(seed), n, split, length=length)


def identical(a: Examples, b: Examples) -> bool:
    """Whether two batches agree in every array, positions and metadata included."""
    arrays = [(a.tokens, b.tokens), (a.loss_mask, b.loss_mask), (a.lengths, b.lengths)]
    arrays += [(a.positions, b.positions)] + [(a.meta[k], b.meta[k]) for k in a.meta]
    return a.meta.keys() == b.meta.keys() and all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in arrays
    )


def other(draw: st.DrawFn, low: int, high: int, not_: int) -> int:
    """A token id in [low, high) other than `not_`."""
    return draw(st.integers(low, high - 1).filter(lambda t: t != not_))


# ---- determinism, shapes, vocabulary, lengths ------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, split=SPLITS)
def test_same_seed_same_examples_other_seed_others(cfg: VAConfig, seed: int, split: str) -> None:
    a, b = sample(cfg, seed, 32, split), sample(cfg, seed, 32, split)
    assert identical(a, b)
    assert set(a.meta) == {"length", "hops", "offset", "target_positions", "sources"}
    assert not identical(a, sample(cfg, seed ^ 1, 32, split))


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 32), split=SPLITS)
def test_shapes_vocabulary_and_lengths(cfg: VAConfig, seed: int, n: int, split: str) -> None:
    ex = sample(cfg, seed, n, split)
    lo, hi = getattr(cfg.length, split)
    c_max = hi if cfg.hops is None else cfg.hops_range[1]
    assert ex.tokens.dtype == np.int32 and ex.positions.dtype == np.int32 and ex.loss_mask.dtype == np.bool_
    assert ex.tokens.shape == ex.positions.shape == ex.loss_mask.shape == (n, 4 * hi + 6 + c_max)
    assert ex.meta["target_positions"].shape == ex.tokens.shape
    assert ex.meta["sources"].shape == (*ex.tokens.shape, 2) and ex.meta["sources"].dtype == np.int32
    assert ((ex.tokens >= 0) & (ex.tokens < cfg.vocab_size)).all()
    assert len(VariableAssignment(cfg).vocab) == cfg.vocab_size
    m, c = ex.meta["length"], ex.meta["hops"]
    assert ((m >= lo) & (m <= hi)).all()
    assert ((c >= 1) & (c <= m)).all()
    if cfg.hops is not None:
        assert ((c >= cfg.hops_range[0]) & (c <= cfg.hops_range[1])).all()
    np.testing.assert_array_equal(ex.lengths, 4 * m + 6 + c)
    assert ex.lengths.max() <= cfg.max_seq_len()
    real = np.arange(ex.tokens.shape[1])[None, :] < ex.lengths[:, None]
    np.testing.assert_array_equal(ex.tokens != 0, real)  # a real prefix, then PAD only
    assert (ex.positions[~real] == 0).all() and not ex.loss_mask[~real].any()


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 16), split=SPLITS, data=st.data())
def test_a_pinned_length_fixes_m(cfg: VAConfig, seed: int, n: int, split: str, data: st.DataObject) -> None:
    low, high = cfg.length_bounds()
    m = data.draw(st.integers(low, high))
    ex = sample(cfg, seed, n, split, length=m)
    assert (ex.meta["length"] == m).all()
    assert all(len(parse(ex[i].prompt)[0]) == m for i in range(n))
    if cfg.hops is not None and cfg.hops_range[1] > 1:
        with pytest.raises(ValueError, match="statements cannot be made"):
            sample(cfg, seed, n, split, length=cfg.hops_range[1] - 1)
    with pytest.raises(ValueError, match="statements cannot be made"):
        sample(cfg, seed, n, split, length=cfg.names + 1)


@FAST
@given(cfg=configs(), seed=SEEDS)
def test_disjoint_ranges_keep_eval_lengths_out_of_training(cfg: VAConfig, seed: int) -> None:
    (t_lo, t_hi), (e_lo, e_hi) = cfg.length.train, cfg.length.eval
    train, evals = sample(cfg, seed, 64, "train").meta["length"], sample(cfg, seed, 64, "eval").meta["length"]
    assert ((train >= t_lo) & (train <= t_hi)).all() and ((evals >= e_lo) & (evals <= e_hi)).all()
    if t_hi < e_lo or e_hi < t_lo:
        assert not np.isin(evals, train).any() and not np.isin(train, np.arange(e_lo, e_hi + 1)).any()


# ---- format, chains, answer ------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 16), split=SPLITS)
def test_statements_are_disjoint_chains_and_the_answer_is_the_exact_chain(
    cfg: VAConfig, seed: int, n: int, split: str
) -> None:
    ex = sample(cfg, seed, n, split)
    for i in range(n):
        e, m, c = ex[i], int(ex.meta["length"][i]), int(ex.meta["hops"][i])
        assert e.tokens[0] == BOS and e.tokens[4 * m + 1] == QUERY and e.tokens[-1] == EOS
        stmts, query = parse(e.prompt)
        assert len(stmts) == m and (stmts[:, 1] == EQ).all() and (stmts[:, 3] == SEMI).all()
        lhs, rhs = stmts[:, 0].tolist(), stmts[:, 2].tolist()
        assert all(NAME0 <= t < cfg.vocab_size for t in lhs) and len(set(lhs)) == m  # each defined once
        used = [t for t in rhs if t >= NAME0]
        assert len(set(used)) == len(used) and set(used) <= set(lhs)  # no dangling or merging pointers
        assert query in lhs and query not in used  # the query heads a chain
        for head in set(lhs) - set(used):  # every chain ends in a value (no loops)
            assert solve([*e.prompt[:-2], head, EQ]) is not None
        assert sum(t < NAME0 for t in rhs) == m - len(used)  # one value per chain
        gold = solve(e.prompt)
        assert e.answer.tolist() == gold and len(gold) == c + 2
        assert all(t >= NAME0 for t in gold[:c]) and DIGIT0 <= gold[c] < NAME0
        assert np.flatnonzero(e.loss_mask).tolist() == list(range(4 * m + 4, 4 * m + 6 + c))


def test_chain_lengths_cover_one_to_m_and_distractors_form_chains() -> None:
    ex = sample(VAConfig(), 5, 3000, "train", length=12)
    hops = np.bincount(ex.meta["hops"], minlength=13)[1:]
    assert (np.abs(hops / (3000 / 12) - 1) < 0.25).all()  # uniform in 1..m
    chains = [sum(t < NAME0 for t in parse(ex[i].prompt)[0][:, 2].tolist()) for i in range(3000)]
    assert 1 < np.mean(chains) < 12  # distractors chain up, but not into one chain


def test_names_are_bijective_base_26() -> None:
    assert [name(i) for i in (0, 25, 26, 27, 51, 52, 701, 702)] == [
        *("a", "z", "aa", "ab", "az", "ba", "zz", "aaa")
    ]
    assert len({name(i) for i in range(5000)}) == 5000


# ---- coupled positions -----------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 16), split=SPLITS)
def test_answer_ids_point_at_each_tokens_defining_occurrence(
    cfg: VAConfig, seed: int, n: int, split: str
) -> None:
    ex = sample(cfg, seed, n, split)
    offsets = ex.meta["offset"]
    if split == "eval":
        assert (offsets == 0).all()
    assert ((offsets >= 0) & (offsets <= cfg.max_position_id - 4 * ex.meta["length"] - 3)).all()
    assert ex.positions.min() >= 0 and ex.positions.max() <= cfg.max_position_id
    for i in range(n):
        e, m, c, o = ex[i], int(ex.meta["length"][i]), int(ex.meta["hops"][i]), int(offsets[i])
        k = len(e.prompt)
        assert e.positions[:k].tolist() == [0, *range(o + 1, o + k)]  # the prompt: o + column, BOS 0
        cols = e.positions[k:] - o  # the answer's ids as prompt columns
        tok = e.tokens
        for j in range(c):  # a variable: the left-hand side of the statement defining it
            assert (cols[j] - 1) % 4 == 0 and cols[j] < 4 * m and tok[cols[j]] == e.answer[j]
        assert tok[cols[c]] == e.answer[c] and tok[cols[c] - 2] == e.answer[c - 1]  # the value where written
        assert tok[cols[c + 1]] == SEMI and cols[c + 1] == cols[c] + 1  # EOS: that statement's ';'
        target = ex.meta["target_positions"][i]
        np.testing.assert_array_equal(target, np.where(ex.loss_mask[i], ex.positions[i], -1))


# ---- sparse dependence: each answer token depends on its defining statement only -------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 6), split=SPLITS, data=st.data())
def test_each_answer_token_depends_on_its_sources_only(
    cfg: VAConfig, seed: int, n: int, split: str, data: st.DataObject
) -> None:
    """Given the answer so far (teacher forcing), re-derive each answer token after rewriting every input
    symbol outside its sources (left sides never to the previous token: its definition stays the only one):
    unchanged. Rewriting one of its sources: changed."""
    ex = sample(cfg, seed, n, split)
    names_end, digits = NAME0 + cfg.names, (DIGIT0, NAME0)
    for i in range(n):
        e, m = ex[i], int(ex.meta["length"][i])
        k, answer = len(e.prompt), e.answer.tolist()
        sources = ex.meta["sources"][i, k : len(e.tokens)]
        assert (ex.meta["sources"][i, :k] == -1).all()
        for j, gold in enumerate(answer):
            prev = None if j == 0 else answer[j - 1]
            assert next_token(e.prompt, prev) == gold
            src = {int(s) for s in sources[j] if s >= 0}
            prompt = e.prompt.copy()
            for col in [*range(1, 4 * m + 1, 4), *range(3, 4 * m + 1, 4), k - 2]:  # LHS, RHS, query
                if col in src:
                    continue
                if (col - 1) % 4 == 2 and data.draw(st.booleans()):  # a right side may become a value
                    prompt[col] = data.draw(st.integers(*digits).filter(lambda t: t < NAME0))
                else:
                    prompt[col] = other(data.draw, NAME0, names_end, prev if prev is not None else -1)
            assert next_token(prompt, prev) == gold, f"answer token {j} changed by a token outside {src}"
            if j == len(answer) - 1:  # EOS follows the value whatever the input says
                assert src == set()
                continue
            for col in src:
                prompt = e.prompt.copy()
                if (col - 1) % 4 == 2 and gold < NAME0:  # a value -> another value
                    prompt[col] = other(data.draw, DIGIT0, NAME0, gold)
                else:
                    prompt[col] = other(data.draw, NAME0, names_end, int(prompt[col]))
                assert next_token(prompt, prev) != gold, f"answer token {j} unchanged by its source {col}"
        assert sources[0].tolist() == [k - 2, -1]  # v: the query's variable
        lhs = [s[0] for s in sources[1:-1].tolist()]  # the left side of each source statement: the previous
        assert [int(e.tokens[col]) for col in lhs] == answer[:-2]


# ---- verifier, render ------------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 8), split=SPLITS, data=st.data())
def test_verifier_accepts_the_chain_and_rejects_corruptions(
    cfg: VAConfig, seed: int, n: int, split: str, data: st.DataObject
) -> None:
    gen = VariableAssignment(cfg)
    ex = gen.sample(counter_rng(seed), n, split)
    for i in range(n):
        e = ex[i]
        ans = e.answer.tolist()
        assert gen.verify(e, ans) and gen.verify(e, np.array([*ans, SEMI, EOS]))  # after EOS: ignored
        assert not gen.verify(e, ans[:-1]) and not gen.verify(e, []) and not gen.verify(e, [EOS])
        j = data.draw(st.integers(0, len(ans) - 2))
        wrong = list(ans)
        low, high = (DIGIT0, NAME0) if ans[j] < NAME0 else (NAME0, NAME0 + cfg.names)
        if high - low > 1:
            wrong[j] = other(data.draw, low, high, ans[j])
            assert not gen.verify(e, wrong)
        assert not gen.verify(e, [*ans[:-2], ans[-2], ans[-2], EOS])  # a repeated step
        if len(ans) > 3:
            assert not gen.verify(e, [*ans[:1], *ans[2:]])  # a skipped step


@FAST
@given(cfg=configs(), seed=SEEDS, split=SPLITS)
def test_render_shows_prompt_answer_and_ids(cfg: VAConfig, seed: int, split: str) -> None:
    gen = VariableAssignment(cfg)
    e = gen.sample(counter_rng(seed), 1, split)[0]
    text = gen.render(e)
    assert text.startswith(gen.vocab.decode(e.prompt) + " -> " + gen.vocab.decode(e.answer))
    assert f"m={int(e.meta['length'])}" in text and " ".join(map(str, e.positions[len(e.prompt) :])) in text


# ---- config: plan statistics, bounds, validation ---------------------------------------------------------


@pytest.mark.parametrize(("split", "hops"), [("train", None), ("eval", None), ("eval", (2, 4))])
def test_length_stats_match_samples(split: str, hops: tuple[int, int] | None) -> None:
    cfg = VAConfig(length={"train": (4, 16), "eval": (17, 64)}, hops=hops)
    lengths = sample(cfg, 11, 2000, split).lengths.astype(np.float64)
    e_t, e_tt = cfg.length_stats(split)
    assert abs(lengths.mean() / e_t - 1) < 0.03 and abs((lengths * (lengths + 1)).mean() / e_tt - 1) < 0.05


def test_max_seq_len_is_reached_and_never_exceeded() -> None:
    cfg = VAConfig(names=30, length={"train": (20, 30), "eval": (2, 5)}, max_position_id=123)
    assert cfg.max_seq_len() == 4 * 30 + 6 + 30 and cfg.length_bounds() == (1, 30)
    ex = sample(cfg, 2, 400, "train", length=30)
    assert ex.lengths.max() <= cfg.max_seq_len() and (ex.meta["hops"] == 30).any()


def test_validation_names_the_field_and_limit() -> None:
    with pytest.raises(ValidationError, match="set names >= 64"):
        VAConfig(names=63)
    with pytest.raises(ValidationError, match="set max_position_id >= 259"):
        VAConfig(max_position_id=258)
    with pytest.raises(ValidationError, match="chain of up to 5 statements does not fit in the shortest m"):
        VAConfig(length={"train": (4, 16), "eval": (17, 64)}, hops=5)
    with pytest.raises(ValidationError, match="hops"):
        VAConfig(hops=(3, 2))


def test_unknown_split_names_the_known_ones() -> None:
    with pytest.raises(UnknownSplit, match="no split 'rl'; variable_assignment has train, eval"):
        sample(VAConfig(), 0, 2, "rl")


def test_eval_sets_without_a_length_concatenate() -> None:
    """exact_match asks for whole splits in chunks; the [n, W] meta arrays must line up across chunks."""
    gen = VariableAssignment(VAConfig())
    ex = eval_examples(gen, 0, "train", "eval", None, 150)
    assert len(ex) == 150 and ex.meta["sources"].shape == (150, 4 * 64 + 6 + 64, 2)
    assert all(gen.verify(ex[i], ex[i].answer) for i in range(150))


# ---- end to end ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_spec_trains_a_few_steps_with_coupled_positions(tmp_path) -> None:
    """specs/variable_assignment.yaml runs: a `coupled` model raises without batch positions, so this also
    checks that the generator's positions reach the model through next_token."""
    from schemas import load_spec

    spec = load_spec(
        "specs/variable_assignment.yaml",
        [
            f"run.output={tmp_path}",
            "stages.train.schedule={steps: 4, warmup: 1}",
            "stages.train.batch.global=8",
            "stages.train.logging.every=2",
            "stages.train.evals=[{kind: accuracy_by_length, every: 4, examples: 8, lengths: [4, 17, 40]}]",
        ],
    )
    _, rows = train_in_process(spec)
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [2, 4] and all(np.isfinite(r["loss"]) for r in logged)
    done = json.loads((tmp_path / "train" / "final" / "done.json").read_text())
    accs = {k: v for k, v in done["metrics"].items() if k.startswith("acc/")}
    assert set(accs) == {"acc/len_4", "acc/len_17", "acc/len_40", "acc/train", "acc/eval"}
