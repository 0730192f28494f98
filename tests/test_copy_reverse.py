"""Property tests of copy and reverse with coupled positions (docs/papers/length_generalisation.md).

Hypothesis draws the kind (copy | reverse), the alphabet, the train/eval length ranges, P_max, the number of
examples and the seed. The task's invariants: the answer is the input (reversed), each answer token depends on
the one input position `sources` names and no other, the coupled ids follow the formulas of
docs/papers/length_generalisation.md
(offset o random in training, 0 at evaluation), and the length ranges of the splits stay apart.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from helpers import train_in_process
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.data.base import Examples, UnknownSplit
from engine.data.copy_reverse import EOS, SEP, SYM0, CopyReverse, answer
from engine.data.stream import counter_rng, eval_examples
from schemas.data import Copy, CopyTask, Reverse

SPLITS = st.sampled_from(["train", "eval"])
SEEDS = st.integers(0, 2**63 - 1)
FAST = settings(max_examples=30, deadline=None)


@st.composite
def configs(draw: st.DrawFn, max_len: int = 30) -> CopyTask:
    """A feasible copy or reverse config: any two length ranges, P_max at or above its lower limit."""

    def length_range() -> tuple[int, int]:
        lo = draw(st.integers(1, max_len))
        return lo, draw(st.integers(lo, min(lo + 15, max_len)))

    train, evals = length_range(), length_range()
    need = max(2 * evals[1], max(train[1], evals[1]) + 1)
    cls = draw(st.sampled_from([Copy, Reverse]))
    return cls(
        symbols=draw(st.integers(2, 12)),
        length={"train": train, "eval": evals},
        max_position_id=need + draw(st.integers(0, 20)),
    )


def sample(cfg: CopyTask, seed: int, n: int, split: str = "train", length: int | None = None) -> Examples:
    """n examples from a fresh counter RNG keyed by `seed`."""
    return CopyReverse(cfg).sample(counter_rng(seed), n, split, length=length)


def identical(a: Examples, b: Examples) -> bool:
    """Whether two batches agree in every array, positions and metadata included."""
    arrays = [(a.tokens, b.tokens), (a.loss_mask, b.loss_mask), (a.lengths, b.lengths)]
    arrays += [(a.positions, b.positions)] + [(a.meta[k], b.meta[k]) for k in a.meta]
    return a.meta.keys() == b.meta.keys() and all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in arrays
    )


def expected_ids(n: int, o: int, reverse: bool) -> list[int]:
    """The coupled ids (docs/papers/length_generalisation.md) token by token: BOS, x, SEP, y, EOS."""
    xs = [o + i for i in range(1, n + 1)]
    ys = [o + n + 1 - j for j in range(1, n + 1)] if reverse else [o + j for j in range(1, n + 1)]
    sep, eos = (o + n + 1, o) if reverse else (o, o + n + 1)
    return [0, *xs, sep, *ys, eos]


# ---- determinism, shapes, vocabulary, lengths ------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, split=SPLITS)
def test_same_seed_same_examples_other_seed_others(cfg: CopyTask, seed: int, split: str) -> None:
    a, b = sample(cfg, seed, 32, split), sample(cfg, seed, 32, split)
    assert identical(a, b)
    assert set(a.meta) == {"length", "offset", "target_positions", "sources"}
    assert not identical(a, sample(cfg, seed ^ 1, 32, split))


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 32), split=SPLITS)
def test_shapes_vocabulary_and_lengths(cfg: CopyTask, seed: int, n: int, split: str) -> None:
    ex = sample(cfg, seed, n, split)
    lo, hi = getattr(cfg.length, split)
    assert ex.tokens.dtype == np.int32 and ex.positions.dtype == np.int32 and ex.loss_mask.dtype == np.bool_
    assert ex.tokens.shape == ex.positions.shape == ex.loss_mask.shape == (n, 2 * hi + 3)
    assert ex.meta["target_positions"].shape == ex.meta["sources"].shape == ex.tokens.shape
    assert ((ex.tokens >= 0) & (ex.tokens < cfg.vocab_size)).all()
    assert len(CopyReverse(cfg).vocab) == cfg.vocab_size
    lengths = ex.meta["length"]
    assert ((lengths >= lo) & (lengths <= hi)).all()
    np.testing.assert_array_equal(ex.lengths, 2 * lengths + 3)
    assert ex.lengths.max() <= cfg.max_seq_len()
    real = np.arange(ex.tokens.shape[1])[None, :] < ex.lengths[:, None]
    np.testing.assert_array_equal(ex.tokens != 0, real)  # a real prefix, then PAD only
    assert (ex.positions[~real] == 0).all() and not ex.loss_mask[~real].any()


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 16), split=SPLITS, data=st.data())
def test_a_pinned_length_fixes_n(cfg: CopyTask, seed: int, n: int, split: str, data: st.DataObject) -> None:
    length = data.draw(st.integers(1, cfg.max_position_id - 1))
    ex = sample(cfg, seed, n, split, length=length)
    assert (ex.meta["length"] == length).all() and ex.tokens.shape == (n, 2 * length + 3)
    with pytest.raises(ValueError, match="max_position_id"):
        sample(cfg, seed, n, split, length=cfg.max_position_id)


@FAST
@given(cfg=configs(), seed=SEEDS)
def test_disjoint_ranges_keep_eval_lengths_out_of_training(cfg: CopyTask, seed: int) -> None:
    (t_lo, t_hi), (e_lo, e_hi) = cfg.length.train, cfg.length.eval
    train, evals = sample(cfg, seed, 64, "train").meta["length"], sample(cfg, seed, 64, "eval").meta["length"]
    assert ((train >= t_lo) & (train <= t_hi)).all() and ((evals >= e_lo) & (evals <= e_hi)).all()
    if t_hi < e_lo or e_hi < t_lo:
        assert not np.isin(evals, train).any() and not np.isin(train, np.arange(e_lo, e_hi + 1)).any()


# ---- format, answer, coupled positions -------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 16), split=SPLITS)
def test_format_and_answer(cfg: CopyTask, seed: int, n: int, split: str) -> None:
    ex = sample(cfg, seed, n, split)
    for i in range(n):
        e, k = ex[i], int(ex.meta["length"][i])
        x = e.tokens[1 : k + 1]
        assert e.tokens[0] == 1 and e.tokens[k + 1] == SEP and e.tokens[-1] == EOS
        assert ((x >= SYM0) & (x < SYM0 + cfg.symbols)).all()
        assert np.flatnonzero(e.loss_mask).tolist() == list(range(k + 2, 2 * k + 3))  # y and EOS only
        assert e.answer.tolist() == [*(x[::-1] if cfg.reverse else x).tolist(), EOS]
        np.testing.assert_array_equal(e.prompt, e.tokens[: k + 2])


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 16), split=SPLITS)
def test_positions_follow_the_coupling_formulas(cfg: CopyTask, seed: int, n: int, split: str) -> None:
    ex = sample(cfg, seed, n, split)
    offsets = ex.meta["offset"]
    if split == "eval":
        assert (offsets == 0).all()
    assert ((offsets >= 0) & (offsets <= cfg.max_position_id - ex.meta["length"] - 1)).all()
    assert ex.positions.min() >= 0 and ex.positions.max() <= cfg.max_position_id
    for i in range(n):
        e, k, o = ex[i], int(ex.meta["length"][i]), int(offsets[i])
        assert e.positions.tolist() == expected_ids(k, o, cfg.reverse)
        target = ex.meta["target_positions"][i]
        np.testing.assert_array_equal(target, np.where(ex.loss_mask[i], ex.positions[i], -1))


def test_training_offsets_cover_their_range() -> None:
    cfg = Copy(length={"train": (5, 5), "eval": (6, 10)}, max_position_id=20)
    offsets = sample(cfg, 7, 4000).meta["offset"]
    counts = np.bincount(offsets, minlength=15)
    assert len(counts) == 15 and (counts > 4000 / 15 * 0.8).all()  # o ~ U{0..P_max-n-1}, all ids trained


def test_symbols_are_iid_with_duplicates() -> None:
    ex = sample(Copy(symbols=10), 3, 4000, "eval", length=20)
    x = ex.tokens[:, 1:21] - SYM0
    freq = np.bincount(x.ravel(), minlength=10) / x.size
    assert np.abs(freq - 0.1).max() < 0.01
    dup = np.array([len(set(row)) < 20 for row in x.tolist()])
    assert dup.all()  # 20 draws from 10 symbols always repeat one


# ---- sparse dependence: each answer token depends on its source only -------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 8), split=SPLITS, data=st.data())
def test_each_answer_token_depends_on_its_source_only(
    cfg: CopyTask, seed: int, n: int, split: str, data: st.DataObject
) -> None:
    ex = sample(cfg, seed, n, split)
    for i in range(n):
        e, k = ex[i], int(ex.meta["length"][i])
        sources = ex.meta["sources"][i, : len(e.tokens)]
        gold = answer(e.prompt, cfg.reverse)
        assert gold == e.answer.tolist()
        for t in np.flatnonzero(e.loss_mask):
            j, src = t - (k + 2), int(sources[t])  # answer index, source column
            other = [c for c in range(1, k + 1) if c != src]  # every other input symbol
            prompt = e.prompt.copy()
            symbols = st.integers(0, cfg.symbols - 1)
            new = data.draw(st.lists(symbols, min_size=len(other), max_size=len(other)))
            prompt[other] = SYM0 + np.array(new, dtype=np.int32)
            assert answer(prompt, cfg.reverse)[j] == gold[j], "changed by a token it should not depend on"
            if t == len(e.tokens) - 1:  # EOS: no source, depends on n only
                assert src == -1
                continue
            assert 1 <= src <= k and e.positions[src] == e.positions[t]  # coupled: the source's id
            shift = data.draw(st.integers(1, cfg.symbols - 1))
            prompt[src] = SYM0 + (prompt[src] - SYM0 + shift) % cfg.symbols
            assert answer(prompt, cfg.reverse)[j] != gold[j], "unchanged by its own source"


# ---- verifier, render ------------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 8), split=SPLITS, data=st.data())
def test_verifier_accepts_the_answer_and_rejects_corruptions(
    cfg: CopyTask, seed: int, n: int, split: str, data: st.DataObject
) -> None:
    gen = CopyReverse(cfg)
    ex = gen.sample(counter_rng(seed), n, split)
    for i in range(n):
        e = ex[i]
        ans = e.answer.tolist()
        assert gen.verify(e, ans) and gen.verify(e, np.array([*ans, SEP, EOS]))  # after EOS: ignored
        assert not gen.verify(e, ans[:-1]) and not gen.verify(e, []) and not gen.verify(e, [EOS])
        j = data.draw(st.integers(0, len(ans) - 2))
        wrong = list(ans)
        wrong[j] = SYM0 + (wrong[j] - SYM0 + data.draw(st.integers(1, cfg.symbols - 1))) % cfg.symbols
        assert not gen.verify(e, wrong)
        assert not gen.verify(dataclasses.replace(e, tokens=e.tokens[1:], loss_mask=e.loss_mask[1:]), ans)


def test_verifier_and_answer_know_copy_from_reverse() -> None:
    ex = sample(Copy(), 0, 1, "eval", length=5)[0]
    x = ex.tokens[1:6].tolist()
    assert len(set(x)) > 1, "pick a seed with a non-palindromic input"
    rev = CopyReverse(Reverse())
    assert not rev.verify(ex, [*x, EOS]) and rev.verify(ex, [*x[::-1], EOS])


@FAST
@given(cfg=configs(), seed=SEEDS, split=SPLITS)
def test_render_shows_prompt_answer_and_ids(cfg: CopyTask, seed: int, split: str) -> None:
    gen = CopyReverse(cfg)
    e = gen.sample(counter_rng(seed), 1, split)[0]
    text = gen.render(e)
    assert text.startswith(gen.vocab.decode(e.prompt) + " -> " + gen.vocab.decode(e.answer))
    assert cfg.kind in text and f"n={len(e.prompt) - 2}" in text
    assert " ".join(map(str, e.positions[len(e.prompt) :])) in text


# ---- config: plan statistics, bounds, validation ---------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "eval"])
def test_length_stats_match_samples(split: str) -> None:
    cfg = Reverse(length={"train": (3, 17), "eval": (18, 50)}, max_position_id=100)
    lengths = sample(cfg, 11, 2000, split).lengths.astype(np.float64)
    e_t, e_tt = cfg.length_stats(split)
    assert abs(lengths.mean() / e_t - 1) < 0.03 and abs((lengths * (lengths + 1)).mean() / e_tt - 1) < 0.05


def test_max_seq_len_and_length_bounds() -> None:
    cfg = Copy(length={"train": (30, 35), "eval": (5, 9)}, max_position_id=72)  # training lengths the longest
    assert cfg.length_bounds() == (1, 35) and cfg.max_seq_len() == 73
    assert max(sample(cfg, 1, 64, s, length=35).lengths.max() for s in ("train", "eval")) == 73


def test_max_position_id_must_be_twice_the_longest_eval_length() -> None:
    Copy(length={"train": (1, 20), "eval": (21, 40)}, max_position_id=80)
    with pytest.raises(ValidationError, match="set max_position_id >= 80"):
        Reverse(length={"train": (1, 20), "eval": (21, 40)}, max_position_id=79)
    with pytest.raises(
        ValidationError, match="set max_position_id >= 51"
    ):  # the training lengths need ids too
        Copy(length={"train": (1, 50), "eval": (2, 3)}, max_position_id=50)


def test_unknown_split_names_the_known_ones() -> None:
    with pytest.raises(UnknownSplit, match="no split 'test'; reverse has train, eval"):
        sample(Reverse(), 0, 2, "test")


def test_eval_sets_without_a_length_concatenate() -> None:
    """exact_match asks for whole splits in chunks; the [n, L] meta arrays must line up across chunks."""
    gen = CopyReverse(Copy())
    ex = eval_examples(gen, 0, "train", "eval", None, 200)
    assert len(ex) == 200 and ex.meta["sources"].shape == ex.tokens.shape == (200, 83)
    assert all(gen.verify(ex[i], ex[i].answer) for i in range(200))


# ---- end to end ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_spec_trains_a_few_steps_with_coupled_positions(tmp_path) -> None:
    """specs/copy.yaml (as reverse) runs: a `coupled` model raises without batch positions, so this also
    checks that the generator's positions reach the model through next_token."""
    from schemas import load_spec

    spec = load_spec(
        "specs/copy.yaml",
        [
            f"run.output={tmp_path}",
            "stages.train.data.kind=reverse",
            "stages.train.schedule={steps: 4, warmup: 1}",
            "stages.train.batch.global=8",
            "stages.train.logging.every=2",
            "stages.train.evals=[{kind: accuracy_by_length, every: 4, examples: 8, lengths: [3, 20, 40]}]",
        ],
    )
    _, rows = train_in_process(spec)
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [2, 4] and all(np.isfinite(r["loss"]) for r in logged)
    done = json.loads((tmp_path / "train" / "final" / "done.json").read_text())
    accs = {k: v for k, v in done["metrics"].items() if k.startswith("acc/")}
    assert set(accs) == {"acc/len_3", "acc/len_20", "acc/len_40", "acc/train", "acc/eval"}
