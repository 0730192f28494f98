"""Property tests of the phone-book generator (Mixture of Parrots, docs/papers/mixture_of_parrots.md).

Hypothesis draws the book (entries, seed, name pool, digits, lines per document, eval subset); every test
checks an invariant that a wrong generator would break: unique names and numbers, one number per entry in every
split and call, the document and query formats and masks, the verifier, and that a book of millions costs no
per-entry work or memory.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers import train_in_process
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.data.base import Examples, UnknownSplit
from engine.data.phonebook import COLON, DIGIT0, FIRST0, SEMI, Permutation, PhoneBook
from engine.data.stream import counter_rng, eval_examples
from schemas import load_spec
from schemas.data import PhoneBook as PhoneBookConfig

FAST = settings(max_examples=25, deadline=None)
SEEDS = st.integers(0, 2**63 - 1)
SPLITS = st.sampled_from(["train", "eval"])


@st.composite
def configs(draw: st.DrawFn, max_entries: int = 3000) -> PhoneBookConfig:
    """A feasible book: entries within both the name space (pool**2) and the number space (10**digits)."""
    pool = draw(st.integers(1, 60))
    digits = draw(st.integers(1, 12))
    entries = draw(st.integers(1, min(max_entries, pool * pool, 10**digits)))
    return PhoneBookConfig(
        entries=entries,
        book_seed=draw(st.integers(0, 2**32)),
        name_pool=pool,
        digits=digits,
        lines_per_doc=draw(st.integers(1, 8)),
        eval_entries=draw(st.none() | st.integers(1, entries)),
    )


def sample(cfg: PhoneBookConfig, seed: int, n: int, split: str) -> Examples:
    """n examples from a fresh counter RNG keyed by `seed`."""
    return PhoneBook(cfg).sample(counter_rng(seed), n, split)


def problems(err: ValidationError) -> list[tuple[str, str]]:
    """(field, message) of every problem a validation error reports (cross-field rules carry several)."""
    out = []
    for e in err.errors():
        found = e.get("ctx", {}).get("problems")
        out += [tuple(x) for x in found] if found else [(".".join(map(str, e["loc"])), e["msg"])]
    return out


def digits_of(value: int, digits: int) -> list[int]:
    """Digit token ids of a number written with `digits` digits, leading zeros kept."""
    return [DIGIT0 + int(c) for c in str(value).zfill(digits)]


# ---- the book -----------------------------------------------------------------------------------------


@FAST
@given(size=st.integers(1, 5000), key=st.integers(0, 2**32), salt=st.integers(0, 9))
def test_permutation_is_a_bijection_with_its_inverse(size: int, key: int, salt: int) -> None:
    p = Permutation(size, key, salt)
    x = np.arange(size)
    y = p(x)
    assert y.dtype == np.uint64 and y.shape == (size,)
    np.testing.assert_array_equal(np.sort(y), x)  # every value once: a permutation of [0, size)
    np.testing.assert_array_equal(p.inverse(y), x)
    if size > 20:  # keyed: another key is another permutation, and it is not the identity
        assert not np.array_equal(y, Permutation(size, key + 1, salt)(x))
        assert not np.array_equal(y, x)


@FAST
@given(cfg=configs())
def test_names_and_numbers_unique_exhaustively(cfg: PhoneBookConfig) -> None:
    gen = PhoneBook(cfg)
    everyone = np.arange(cfg.entries)
    first, last = gen.name_tokens(everyone)
    pool = cfg.name_pool
    assert ((first >= FIRST0) & (first < FIRST0 + pool)).all()
    assert ((last >= FIRST0 + pool) & (last < FIRST0 + 2 * pool)).all()
    names = (first - FIRST0) * pool + (last - FIRST0 - pool)
    assert len(np.unique(names)) == cfg.entries
    numbers = gen.number(everyone)
    assert len(np.unique(numbers)) == cfg.entries
    assert ((numbers >= 0) & (numbers < 10**cfg.digits)).all()
    np.testing.assert_array_equal(gen.lookup(first, last), everyone)  # the name finds its entry
    digit_ids = gen.digit_tokens(everyone)
    assert [digits_of(int(v), cfg.digits) for v in numbers[:50]] == digit_ids[:50].tolist()


def test_a_book_of_two_million_is_unique_on_a_sample_and_costs_no_per_entry_memory() -> None:
    cfg = PhoneBookConfig(entries=2_000_000, name_pool=2000, digits=10, eval_entries=1000)
    tracemalloc.start()
    gen = PhoneBook(cfg)
    docs = gen.sample(counter_rng(0), 64, "train")
    queries = gen.sample(counter_rng(1), 64, "eval")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4_000_000, f"{peak} bytes: per-entry state? (2e6 int64 alone would be 16 MB)"
    assert docs.tokens.shape == (64, cfg.seq_len("train")) and len(queries) == 64
    rng = np.random.default_rng(7)
    some = rng.choice(cfg.entries, 300_000, replace=False)
    first, last = gen.name_tokens(some)
    assert len(np.unique(first.astype(np.int64) * 10**6 + last)) == len(some)
    assert len(np.unique(gen.number(some))) == len(some)
    np.testing.assert_array_equal(gen.lookup(first[:1000], last[:1000]), some[:1000])
    assert len(np.unique(gen.eval_entries)) == 1000 and gen.eval_entries.max() < cfg.entries
    assert gen.eval_entries.max() > cfg.entries // 2  # spread over the book, not its first 1000 entries


def test_a_book_of_ten_billion_builds_and_samples() -> None:
    """No O(N) work: at 1e10 entries any per-entry array would take minutes and tens of GB."""
    cfg = PhoneBookConfig(entries=10**10, name_pool=100_000, digits=12, eval_entries=10)
    gen = PhoneBook(cfg)
    ex = gen.sample(counter_rng(3), 8, "eval")
    assert all(gen.verify(ex[i], ex[i].answer) for i in range(8))
    first, last = gen.name_tokens(np.array([0, cfg.entries - 1]))
    np.testing.assert_array_equal(gen.lookup(first, last), [0, cfg.entries - 1])


@FAST
@given(cfg=configs(), seed=SEEDS)
def test_an_entry_has_one_number_in_every_split_and_call(cfg: PhoneBookConfig, seed: int) -> None:
    gen, again = PhoneBook(cfg), PhoneBook(cfg.model_copy())  # a fresh generator: the same book
    docs = gen.sample(counter_rng(seed), 6, "train")
    d, lines = cfg.digits, cfg.lines_per_doc
    body = docs.tokens[:, 1:-1].reshape(6, lines, d + 4)
    entry = docs.meta["entry"]
    np.testing.assert_array_equal(gen.lookup(body[..., 0], body[..., 1]), entry)  # names name their entry
    np.testing.assert_array_equal(body[..., 3:-1], again.digit_tokens(entry))
    queries = gen.sample(counter_rng(seed + 1), 32, "eval")
    q = queries.meta["entry"]
    np.testing.assert_array_equal(queries.meta["number"], again.number(q))
    np.testing.assert_array_equal(queries.tokens[:, 4:-1], again.digit_tokens(q))
    np.testing.assert_array_equal(gen.lookup(queries.tokens[:, 1], queries.tokens[:, 2]), q)
    # an entry met in a document and in a query carries the same number
    for i in range(6):
        for k in range(lines):
            hit = np.flatnonzero(q == entry[i, k])
            if hit.size:
                np.testing.assert_array_equal(queries.tokens[hit[0], 1:-1], body[i, k, :-1])


@FAST
@given(cfg=configs(), seed=SEEDS)
def test_eval_asks_only_the_fixed_subset_of_training_entries(cfg: PhoneBookConfig, seed: int) -> None:
    gen = PhoneBook(cfg)
    subset = gen.eval_entries
    assert len(subset) == cfg.eval_size == (cfg.eval_entries or min(1000, cfg.entries))
    assert len(np.unique(subset)) == cfg.eval_size and ((subset >= 0) & (subset < cfg.entries)).all()
    np.testing.assert_array_equal(PhoneBook(cfg).eval_entries, subset)  # a function of the book seed
    q = gen.sample(counter_rng(seed), 64, "eval").meta["entry"]
    assert np.isin(q, subset).all()
    if cfg.eval_size < cfg.entries and cfg.entries > 30:
        other = cfg.model_copy(update={"book_seed": cfg.book_seed + 1})
        other_gen = PhoneBook(other)
        assert not np.array_equal(other_gen.eval_entries, subset) or not np.array_equal(
            other_gen.number(subset), gen.number(subset)
        )


def test_training_documents_cover_the_eval_entries() -> None:
    """Eval asks about training entries: documents draw from the whole book, the eval subset included."""
    cfg = PhoneBookConfig(entries=300, name_pool=20, digits=4, lines_per_doc=32, eval_entries=50)
    gen = PhoneBook(cfg)
    seen = np.concatenate([gen.sample(counter_rng(s), 16, "train").meta["entry"].ravel() for s in range(10)])
    assert np.isin(gen.eval_entries, seen).all()
    counts = np.bincount(seen, minlength=cfg.entries)
    assert counts.min() > 0 and counts.max() < 3 * counts.mean()  # uniform over the book


# ---- formats, masks, determinism ----------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 24), split=SPLITS)
def test_same_seed_same_examples_other_seed_other(
    cfg: PhoneBookConfig, seed: int, n: int, split: str
) -> None:
    a, b = sample(cfg, seed, n, split), sample(cfg, seed, n, split)
    for x, y in [(a.tokens, b.tokens), (a.loss_mask, b.loss_mask), (a.lengths, b.lengths)]:
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert a.meta.keys() == b.meta.keys() and all(np.array_equal(a.meta[k], b.meta[k]) for k in a.meta)
    c = sample(cfg, seed + 1, n, split)
    distinct = cfg.entries ** (n * cfg.lines_per_doc) if split == "train" else cfg.eval_size**n
    if distinct > 10**6:  # a repeat is then (nearly) impossible
        assert not np.array_equal(a.tokens, c.tokens)


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 24))
def test_document_format_and_mask(cfg: PhoneBookConfig, seed: int, n: int) -> None:
    ex = sample(cfg, seed, n, "train")
    L, d, lines = cfg.seq_len("train"), cfg.digits, cfg.lines_per_doc
    assert ex.tokens.dtype == np.int32 and ex.tokens.shape == (n, L) and (ex.lengths == L).all()
    assert L == 2 + lines * (d + 4) <= cfg.max_seq_len()
    assert ((ex.tokens > 2) | (np.arange(L) == 0) | (np.arange(L) == L - 1)).all()  # no PAD inside
    assert ((ex.tokens >= 0) & (ex.tokens < cfg.vocab_size)).all()
    assert (ex.tokens[:, 0] == 1).all() and (ex.tokens[:, -1] == 2).all()
    body = ex.tokens[:, 1:-1].reshape(n, lines, d + 4)
    assert (body[..., 2] == COLON).all() and (body[..., -1] == SEMI).all()
    assert ((body[..., 3:-1] >= DIGIT0) & (body[..., 3:-1] < DIGIT0 + 10)).all()
    assert ex.meta["entry"].shape == (n, lines)
    np.testing.assert_array_equal(ex.loss_mask[:, 0], False)  # pretraining: every token but BOS
    assert ex.loss_mask[:, 1:].all()


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 24))
def test_query_format_and_mask_on_the_digits_only(cfg: PhoneBookConfig, seed: int, n: int) -> None:
    ex = sample(cfg, seed, n, "eval")
    L, d = cfg.seq_len("eval"), cfg.digits
    assert ex.tokens.shape == (n, L) and (ex.lengths == L).all() and L == d + 5 <= cfg.max_seq_len()
    assert ((ex.tokens >= 0) & (ex.tokens < cfg.vocab_size)).all()
    assert (ex.tokens[:, 0] == 1).all() and (ex.tokens[:, 3] == COLON).all() and (ex.tokens[:, -1] == 2).all()
    expected = np.zeros(L, dtype=bool)
    expected[4 : 4 + d] = True
    assert (ex.loss_mask == expected).all()
    for i in range(n):
        e = ex[i]
        assert e.prompt.tolist() == ex.tokens[i, :4].tolist()
        assert e.answer.tolist() == digits_of(int(ex.meta["number"][i]), d)


@FAST
@given(cfg=configs(), split=SPLITS)
def test_length_stats_are_exact(cfg: PhoneBookConfig, split: str) -> None:
    ex = sample(cfg, 5, 16, split)
    t = ex.lengths.astype(float)
    assert cfg.length_stats(split) == (t.mean(), (t * (t + 1)).mean())


def test_unknown_split_names_the_known_ones() -> None:
    with pytest.raises(UnknownSplit, match="no split 'test'; phonebook has train, eval"):
        sample(PhoneBookConfig(entries=10, name_pool=4), 0, 2, "test")


# ---- the verifier --------------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, data=st.data())
def test_verifier_accepts_the_number_and_rejects_others(
    cfg: PhoneBookConfig, seed: int, data: st.DataObject
) -> None:
    gen = PhoneBook(cfg)
    ex = gen.sample(counter_rng(seed), 8, "eval")
    d = cfg.digits
    for i in range(8):
        e = ex[i]
        right = e.answer.tolist()
        assert gen.verify(e, right) and gen.verify(e, [*right, 2]) and gen.verify(e, [*right, SEMI])
        j = data.draw(st.integers(0, d - 1))
        wrong = list(right)
        wrong[j] = DIGIT0 + (wrong[j] - DIGIT0 + data.draw(st.integers(1, 9))) % 10
        assert not gen.verify(e, wrong)
        assert not gen.verify(e, right[:-1])  # too short
        assert not gen.verify(e, [*right, DIGIT0])  # an extra digit: another number
        assert not gen.verify(e, [])
        # the number of another entry is wrong for this name
        other = (int(e.meta["entry"]) + 1) % cfg.entries
        if other != int(e.meta["entry"]):
            assert not gen.verify(e, gen.digit_tokens(np.array([other]))[0].tolist())


@FAST
@given(cfg=configs(), seed=SEEDS, data=st.data())
def test_verifier_checks_every_line_of_a_document(
    cfg: PhoneBookConfig, seed: int, data: st.DataObject
) -> None:
    gen = PhoneBook(cfg)
    e = gen.sample(counter_rng(seed), 1, "train")[0]
    doc = e.tokens[1:].tolist()
    assert e.prompt.tolist() == [1] and gen.verify(e, doc)
    d, lines = cfg.digits, cfg.lines_per_doc
    k = data.draw(st.integers(0, lines - 1))
    wrong = list(doc)
    at = k * (d + 4) + 3 + data.draw(st.integers(0, d - 1))
    wrong[at] = DIGIT0 + (wrong[at] - DIGIT0 + 1) % 10
    assert not gen.verify(e, wrong)
    assert not gen.verify(e, doc[:-1])  # no EOS
    # other true entries of the book, in another document, are also a correct document
    other = gen.sample(counter_rng(seed + 1), 1, "train")[0]
    assert gen.verify(e, other.tokens[1:].tolist())


@FAST
@given(cfg=configs(), seed=SEEDS)
def test_render_shows_name_and_number(cfg: PhoneBookConfig, seed: int) -> None:
    gen = PhoneBook(cfg)
    q = gen.sample(counter_rng(seed), 1, "eval")[0]
    text = gen.render(q)
    number = str(int(q.meta["number"])).zfill(cfg.digits)
    before, after = text.split("->")
    assert gen.vocab.decode(q.prompt[1:3]) in before and number in after.split()
    doc = gen.sample(counter_rng(seed), 1, "train")[0]
    assert gen.vocab.decode(doc.tokens[1:3]) in gen.render(doc)


# ---- validation and a run ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({"entries": 101, "name_pool": 10}, "entries", "name_pool=10 makes only 100"),
        ({"entries": 1001, "name_pool": 100, "digits": 3}, "entries", "3 digits make only 1000"),
        ({"entries": 50, "eval_entries": 51}, "eval_entries", "exceeds the book's 50 entries"),
        ({"digits": 19}, "digits", "less than or equal to 18"),
    ],
)
def test_infeasible_books_are_rejected(fields: dict, where: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        PhoneBookConfig(**fields)
    assert any(field == where and message in text for field, text in problems(err.value)), problems(err.value)


def test_both_limits_are_reported_at_once() -> None:
    with pytest.raises(ValidationError) as err:
        PhoneBookConfig(entries=2000, name_pool=10, digits=3, eval_entries=3000)
    assert [f for f, _ in problems(err.value)] == ["entries", "entries", "eval_entries"]


@pytest.mark.slow
def test_spec_trains_a_few_steps_and_scores_the_eval_queries(tmp_path, one_thread) -> None:

    spec = load_spec(
        "specs/phonebook.yaml",
        [
            f"run.output={tmp_path}",
            "stages.train.schedule.steps=4",
            "stages.train.schedule.warmup=1",
            "stages.train.logging.every=2",
            "stages.train.evals.0.examples=16",
            "stages.train.data.lines_per_doc=4",
        ],
    )
    results, rows = train_in_process(spec)
    losses = [r["loss"] for r in rows if "loss" in r]
    uniform = np.log(spec.stages["train"].data.vocab_size)
    assert len(losses) == 2 and all(np.isfinite(losses)) and losses[0] < uniform + 1
    assert "acc/eval" in results["train"]
    assert (tmp_path / "train" / "final" / "done.json").exists()


def test_eval_set_is_fixed_and_about_the_subset() -> None:
    cfg = PhoneBookConfig(entries=500, name_pool=30, digits=6, eval_entries=40)
    gen = PhoneBook(cfg)
    a = eval_examples(gen, 0, "train", "eval", None, 100)
    b = eval_examples(gen, 0, "train", "eval", None, 100)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert np.isin(a.meta["entry"], gen.eval_entries).all()
