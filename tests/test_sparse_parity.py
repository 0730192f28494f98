"""Property tests of the k-sparse parity generator (docs/papers/length_generalisation.md) and of the
counter-based data stream.

Hypothesis draws the generator's config (k fixed or a range, train/eval length ranges, window or none), the
number of examples and the seed; every test checks an invariant that a wrong generator would break.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.base import Example, Examples
from engine.data.sparse_parity import EQ, ONE, ONE_P, VOCAB, ZERO, ZERO_P, SparseParity
from engine.data.stream import Stream, counter_rng, eval_examples
from schemas.data import SparseParity as SparseParityConfig

BITS = np.array([ZERO, ONE, ZERO_P, ONE_P])
PLANTED = np.array([ZERO_P, ONE_P])
SPLITS = st.sampled_from(["train", "eval"])
SEEDS = st.integers(0, 2**63 - 1)
FAST = settings(max_examples=40, deadline=None)


@st.composite
def configs(draw: st.DrawFn, min_len: int = 1, max_len: int = 40) -> SparseParityConfig:
    """A feasible config: k fixed or [low, high], both length ranges >= k, window none or >= k."""
    k_lo = draw(st.integers(1, min(5, max_len)))
    k_hi = draw(st.integers(k_lo, min(k_lo + 3, max_len)))
    k: int | tuple[int, int] = k_lo if k_lo == k_hi and draw(st.booleans()) else (k_lo, k_hi)

    def length_range() -> tuple[int, int]:
        lo = draw(st.integers(max(k_hi, min_len), max_len))
        return lo, draw(st.integers(lo, lo + 24))

    window = draw(st.none() | st.integers(k_hi, 48))
    return SparseParityConfig(k=k, length={"train": length_range(), "eval": length_range()}, window=window)


def sample(
    cfg: SparseParityConfig, seed: int, n: int, split: str = "train", length: int | None = None
) -> Examples:
    """n examples from a fresh counter RNG keyed by `seed`."""
    return SparseParity(cfg).sample(counter_rng(seed), n, split, length=length)


def identical(a: Examples, b: Examples) -> bool:
    """Whether two batches agree in every array (shapes and dtypes included) and in their metadata."""
    arrays = [(a.tokens, b.tokens), (a.loss_mask, b.loss_mask), (a.lengths, b.lengths)]
    if (a.positions is None) != (b.positions is None) or a.meta.keys() != b.meta.keys():
        return False
    if a.positions is not None:
        arrays.append((a.positions, b.positions))
    arrays += [(a.meta[k], b.meta[k]) for k in a.meta]
    return all(x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in arrays)


def body(ex: Example) -> np.ndarray:
    """The bit tokens of one (unpadded) example: everything between BOS and '='."""
    return ex.tokens[1 : 1 + int(ex.meta["length"])]


def flipped(answer: int) -> int:
    """The other answer bit."""
    return ZERO + ONE - answer


# ---- determinism ---------------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 32), split=SPLITS)
def test_same_seed_same_examples(cfg: SparseParityConfig, seed: int, n: int, split: str) -> None:
    a, b = sample(cfg, seed, n, split), sample(cfg, seed, n, split)
    assert identical(a, b)
    assert set(a.meta) == {"length", "k", "parity"}


@FAST
@given(
    cfg=configs(min_len=4),
    seed=SEEDS,
    stage=st.text("abcxyz_-", min_size=1, max_size=8),
    steps=st.lists(st.integers(0, 10**6), min_size=2, max_size=2, unique=True),
    rank=st.integers(0, 7),
)
def test_stream_batch_is_a_function_of_seed_stage_step_rank(
    cfg: SparseParityConfig, seed: int, stage: str, steps: list[int], rank: int
) -> None:
    gen, s, t = SparseParity(cfg), *steps
    first = Stream(gen, seed, stage, rank, 32)
    s_then_t = first.batch(s), first.batch(t)
    second = Stream(gen, seed, stage, rank, 32)
    t_then_s = second.batch(t), second.batch(s)
    assert identical(s_then_t[0], t_then_s[1]) and identical(s_then_t[1], t_then_s[0])
    assert identical(first.batch(s), s_then_t[0])  # asking again changes nothing
    assert not identical(s_then_t[0], s_then_t[1])  # another step
    assert not identical(s_then_t[0], Stream(gen, seed, stage, rank + 1, 32).batch(s))  # another rank
    assert not identical(s_then_t[0], Stream(gen, seed, stage + "'", rank, 32).batch(s))  # another stage
    assert not identical(s_then_t[0], Stream(gen, seed + 1, stage, rank, 32).batch(s))  # another seed


@FAST
@given(cfg=configs(min_len=4), seed=SEEDS, stage=st.sampled_from(["pretrain", "sft"]), data=st.data())
def test_eval_examples_fixed_per_length(
    cfg: SparseParityConfig, seed: int, stage: str, data: st.DataObject
) -> None:
    gen = SparseParity(cfg)
    split = data.draw(SPLITS)
    lo, hi = getattr(cfg.length, split)
    length = data.draw(st.integers(lo, hi))
    n = data.draw(st.integers(32, 150))
    a, b = (
        eval_examples(gen, seed, stage, split, length, n),
        eval_examples(gen, seed, stage, split, length, n),
    )
    assert identical(a, b) and len(a) == n
    assert (a.meta["length"] == length).all() and a.tokens.shape == (n, length + 4)
    other = eval_examples(gen, seed, stage, split, length + 1, n)
    assert (other.meta["length"] == length + 1).all() and not identical(a, other)
    if cfg.k_range[0] < cfg.k_range[1]:  # each length has its own key: independent draws, not a reshaped copy
        assert not np.array_equal(a.meta["k"], other.meta["k"])
    # the first m examples do not depend on n, so every world size (n rounded up to ranks) sees the same ones
    m = data.draw(st.integers(1, n))
    assert identical(eval_examples(gen, seed, stage, split, length, m), a.slice(0, m))
    train = Stream(gen, seed, stage, 0, n).batch(length)  # eval keys never collide with training keys
    assert train.tokens.shape != a.tokens.shape or not np.array_equal(train.tokens, a.tokens)


# ---- shapes, format and the task's invariants ----------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 32), split=SPLITS)
def test_shapes_dtypes_and_padding(cfg: SparseParityConfig, seed: int, n: int, split: str) -> None:
    ex = sample(cfg, seed, n, split)
    assert ex.tokens.dtype == np.int32 and ex.tokens.ndim == 2 and len(ex) == n
    assert ex.loss_mask.dtype == np.bool_ and ex.loss_mask.shape == ex.tokens.shape
    assert ex.positions is None
    assert all(v.shape[0] == n for v in ex.meta.values())
    real = ex.tokens != VOCAB.pad
    np.testing.assert_array_equal(ex.lengths, real.sum(1))
    cols = np.arange(ex.tokens.shape[1])
    np.testing.assert_array_equal(real, cols[None, :] < ex.lengths[:, None])  # a real prefix, then PAD only
    assert (ex.tokens[np.arange(n), ex.lengths - 1] == VOCAB.eos).all()  # padding starts right after EOS
    assert ex.tokens.shape[1] == ex.lengths.max()  # no all-padding column
    assert not ex.loss_mask[~real].any()


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 32), split=SPLITS)
def test_token_format(cfg: SparseParityConfig, seed: int, n: int, split: str) -> None:
    ex = sample(cfg, seed, n, split)
    assert ((ex.tokens >= 0) & (ex.tokens < len(VOCAB))).all()
    for i in range(n):
        row, length = ex[i].tokens, int(ex.meta["length"][i])
        assert len(row) == length + 4 == cfg.seq_len(split, length)
        assert row[0] == VOCAB.bos
        assert np.isin(row[1 : 1 + length], BITS).all()
        assert row[1 + length] == EQ
        assert row[2 + length] in (ZERO, ONE)
        assert row[3 + length] == VOCAB.eos
        assert not np.isin(row[1:-1], [VOCAB.pad, VOCAB.bos, VOCAB.eos]).any()


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 32), split=SPLITS, data=st.data())
def test_lengths_in_split_range_or_pinned(
    cfg: SparseParityConfig, seed: int, n: int, split: str, data: st.DataObject
) -> None:
    lo, hi = getattr(cfg.length, split)
    lengths = sample(cfg, seed, n, split).meta["length"]
    assert ((lengths >= lo) & (lengths <= hi)).all()
    pinned = data.draw(st.integers(cfg.k_range[1], 64))
    ex = sample(cfg, seed, n, split, length=pinned)
    assert (ex.meta["length"] == pinned).all() and (ex.lengths == pinned + 4).all()
    assert ex.tokens.shape == (n, pinned + 4)


def test_a_length_shorter_than_k_is_refused() -> None:
    cfg = SparseParityConfig(k=(2, 5))
    with pytest.raises(ValueError, match="k=5"):
        sample(cfg, 0, 4, length=4)
    assert (sample(cfg, 0, 4, length=5).meta["length"] == 5).all()


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 32), split=SPLITS, pin=st.booleans())
def test_k_planted_bits_inside_the_window(
    cfg: SparseParityConfig, seed: int, n: int, split: str, pin: bool
) -> None:
    ex = sample(cfg, seed, n, split, length=cfg.k_range[1] if pin else None)  # pinned: the shortest feasible
    k_lo, k_hi = cfg.k_range
    assert ((ex.meta["k"] >= k_lo) & (ex.meta["k"] <= k_hi)).all()
    for i in range(n):
        where = np.flatnonzero(np.isin(body(ex[i]), PLANTED))
        assert len(where) == ex.meta["k"][i]
        if cfg.window is not None:
            assert where.max() - where.min() < cfg.window


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 32), split=SPLITS)
def test_answer_is_the_xor_of_the_planted_bits(
    cfg: SparseParityConfig, seed: int, n: int, split: str
) -> None:
    ex = sample(cfg, seed, n, split)
    assert (ex.loss_mask.sum(1) == 1).all()
    for i in range(n):
        e, length = ex[i], int(ex.meta["length"][i])
        xor = int((body(e) == ONE_P).sum() % 2)
        assert np.flatnonzero(e.loss_mask).tolist() == [length + 2]  # the answer, nothing else
        assert e.answer.tolist() == [ONE if xor else ZERO]
        assert int(ex.meta["parity"][i]) == xor
        np.testing.assert_array_equal(e.prompt, e.tokens[: length + 2])  # up to and including '='


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 16), split=SPLITS)
def test_verifier_accepts_the_answer_and_rejects_others(
    cfg: SparseParityConfig, seed: int, n: int, split: str
) -> None:
    gen = SparseParity(cfg)
    ex = gen.sample(counter_rng(seed), n, split)
    for i in range(n):
        answer = int(ex[i].answer[0])
        assert gen.verify(ex[i], [answer])
        assert gen.verify(ex[i], np.array([answer, VOCAB.eos]))  # only the first generated token counts
        assert not gen.verify(ex[i], [flipped(answer)])
        assert not gen.verify(ex[i], [])
        assert not gen.verify(ex[i], [VOCAB.eos])


@FAST
@given(cfg=configs(min_len=2), seed=SEEDS, n=st.integers(1, 16), split=SPLITS, data=st.data())
def test_only_planted_bits_matter(
    cfg: SparseParityConfig, seed: int, n: int, split: str, data: st.DataObject
) -> None:
    gen = SparseParity(cfg)
    ex = gen.sample(counter_rng(seed), n, split)
    for i in range(n):
        e, answer = ex[i], int(ex[i].answer[0])
        bits = body(e)
        plain, planted = np.flatnonzero(np.isin(bits, [ZERO, ONE])), np.flatnonzero(np.isin(bits, PLANTED))
        if len(plain):  # flipping a plain bit keeps the answer
            j = 1 + int(data.draw(st.sampled_from(plain)))
            tokens = e.tokens.copy()
            tokens[j] = ZERO + ONE - tokens[j]
            noisy = dataclasses.replace(e, tokens=tokens)
            assert gen.verify(noisy, [answer]) and not gen.verify(noisy, [flipped(answer)])
        j = 1 + int(data.draw(st.sampled_from(planted)))  # flipping a planted bit flips it
        tokens = e.tokens.copy()
        tokens[j] = ZERO_P + ONE_P - tokens[j]
        signal = dataclasses.replace(e, tokens=tokens)
        assert gen.verify(signal, [flipped(answer)]) and not gen.verify(signal, [answer])


@pytest.mark.parametrize(
    ("k", "length", "window"),
    [(3, 16, None), ((1, 6), 24, None), (3, 16, 40)],  # a window longer than the string leaves S uniform
)
def test_planted_positions_are_uniform(k: int | tuple[int, int], length: int, window: int | None) -> None:
    n = 20_000
    cfg = SparseParityConfig(k=k, length={"train": (length, length), "eval": (length, 64)}, window=window)
    ex = sample(cfg, 1234, n, length=length)
    bits = ex.tokens[:, 1 : 1 + length]
    planted = np.isin(bits, PLANTED)
    k_lo, k_hi = cfg.k_range
    expected = n * (k_lo + k_hi) / 2 / length  # planted count per position: n E[k] / L
    counts = planted.sum(0)
    assert np.abs(counts / expected - 1).max() < 0.06, counts
    assert ((counts - expected) ** 2 / expected).sum() < 3 * length  # chi-square-ish, loose
    ks = np.bincount(ex.meta["k"], minlength=k_hi + 1)[k_lo:]
    assert np.abs(ks / (n / len(ks)) - 1).max() < 0.06, ks  # k uniform over its range
    assert abs((bits == ONE_P).sum() / planted.sum() - 0.5) < 0.02  # planted bits are fair coins
    assert abs(np.isin(bits, [ONE]).sum() / (~planted).sum() - 0.5) < 0.02  # and so are plain ones
    assert abs(ex.meta["parity"].mean() - 0.5) < 0.02


def test_window_reaches_every_position() -> None:
    cfg = SparseParityConfig(k=2, length={"train": (16, 16), "eval": (16, 32)}, window=4)
    ex = sample(cfg, 99, 5_000)
    planted = np.isin(ex.tokens[:, 1:17], PLANTED)
    assert (planted.sum(0) > 0).all()  # the span moves over the whole string
    spans = np.array([np.ptp(np.flatnonzero(r)) for r in planted])
    assert spans.max() == 3 and (spans >= 1).all()


# ---- the Examples container ----------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 32), data=st.data())
def test_slice_trims_and_keeps_rows_aligned(
    cfg: SparseParityConfig, seed: int, n: int, data: st.DataObject
) -> None:
    ex = sample(cfg, seed, n)
    start = data.draw(st.integers(0, n - 1))
    stop = data.draw(st.integers(start + 1, n))
    part = ex.slice(start, stop)
    width = int(ex.lengths[start:stop].max())
    assert part.tokens.shape == part.loss_mask.shape == (stop - start, width)
    assert (ex.tokens[start:stop, width:] == VOCAB.pad).all()  # only padding was cut
    np.testing.assert_array_equal(part.tokens, ex.tokens[start:stop, :width])
    np.testing.assert_array_equal(part.loss_mask, ex.loss_mask[start:stop, :width])
    np.testing.assert_array_equal(part.lengths, ex.lengths[start:stop])
    for key, value in ex.meta.items():
        np.testing.assert_array_equal(part.meta[key], value[start:stop])
    for j in range(stop - start):
        a, b = part[j], ex[start + j]
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.loss_mask, b.loss_mask)
        assert a.meta == b.meta
    assert len(ex.slice(start, start)) == 0


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 32))
def test_getitem_strips_padding(cfg: SparseParityConfig, seed: int, n: int) -> None:
    ex = sample(cfg, seed, n)
    for i in range(n):
        e = ex[i]
        assert len(e.tokens) == len(e.loss_mask) == ex.lengths[i]
        assert VOCAB.pad not in e.tokens and e.tokens[-1] == VOCAB.eos
        np.testing.assert_array_equal(e.tokens, ex.tokens[i, : ex.lengths[i]])
        assert e.meta == {k: v[i] for k, v in ex.meta.items()}


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 8))
def test_render_shows_the_tokens_and_the_answer(cfg: SparseParityConfig, seed: int, n: int) -> None:
    gen = SparseParity(cfg)
    ex = gen.sample(counter_rng(seed), n)
    for i in range(n):
        e = ex[i]
        text = gen.render(e)
        prompt = " ".join(VOCAB.tokens[t] for t in e.prompt)
        assert prompt.startswith("BOS ") and prompt.endswith(" =")
        assert prompt in text
        after = text[text.index(prompt) + len(prompt) :].split()
        answer = VOCAB.tokens[int(e.answer[0])]
        assert answer in after and VOCAB.tokens[flipped(int(e.answer[0]))] not in after
