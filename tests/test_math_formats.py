"""Tests of the Echo Chamber word-problem generator (docs/papers/echo_chamber.md): documents, formats, the
interpreter, the verifier and format detector, the split mixture, the length model and config validation.

Hypothesis draws configs (format weights, filler share, operation ranges, max_value, world seed), seeds and
splits; every test checks an invariant that a wrong generator would break.
"""

from __future__ import annotations

import ast
import inspect
import math
import time

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import engine.data.math_formats as mf
from engine import registry
from engine.data.base import UnknownSplit
from engine.data.math_formats import CODE, FILLER, MIXED, NL, MathFormats, ProgramError, evaluate, run
from engine.data.stream import counter_rng
from schemas import SpecError, load_spec
from schemas.data import MathFormats as Config

SPLITS = st.sampled_from(["train", "rl", "easy", "hard"])
SEEDS = st.integers(0, 2**63 - 1)
FAST = settings(max_examples=25, deadline=None)
ALL = Config(formats=(1, 1, 1))


@st.composite
def configs(draw: st.DrawFn) -> Config:
    """A valid config: some positive format weight, easy operations below hard ones."""
    weights = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=3, max_size=3))
    if sum(weights) == 0:
        weights[draw(st.integers(0, 2))] = 1.0
    lo = draw(st.integers(1, 5))
    hi = draw(st.integers(lo, 6))
    hard_lo = draw(st.integers(hi + 1, 10))
    return Config(
        formats=tuple(weights),
        filler=draw(st.sampled_from([0.0, 0.3, 0.9])),
        easy_ops=(lo, hi),
        hard_ops=(hard_lo, draw(st.integers(hard_lo, 12))),
        max_value=draw(st.sampled_from([100, 137, 1000, 10_000, 1_000_000])),
        world_seed=draw(st.integers(0, 2**31)),
    )


_GENS: dict[str, MathFormats] = {}


def generator(cfg: Config) -> MathFormats:
    """The generator of a config, built once per config."""
    key = cfg.model_dump_json()
    if key not in _GENS:
        _GENS[key] = MathFormats(cfg)
    return _GENS[key]


def gold(ex, i: int) -> list[int]:
    """The tokens after the prompt of example i (its reference solution and EOS)."""
    e = ex[i]
    return e.tokens[len(e.prompt) :].tolist()


def words(gen: MathFormats, ids) -> list[str]:
    return [gen.vocab.tokens[int(t)] for t in ids]


def spell(text: str) -> list[str]:
    """Space-separated words as tokens, numbers spelled digit by digit."""
    return [c for w in text.split() for c in (w if w.isdigit() else [w])]


def ids(gen: MathFormats, text: str) -> list[int]:
    """Token ids of space-separated words; numbers are spelled digit by digit."""
    out = []
    for w in text.split():
        out += [gen.ids[c] for c in w] if w.isdigit() else [gen.ids[w]]
    return out


# ---- documents -------------------------------------------------------------------------------------------


def test_vocabulary_is_small_and_every_template_word_is_in_it() -> None:
    cfg = Config()
    assert cfg.vocab_size == len(cfg.VOCAB) == len(set(cfg.VOCAB)) == 89
    assert cfg.VOCAB[:3] == ("PAD", "BOS", "EOS")
    templates = [*cfg.STORY.values(), *cfg.STEP.values(), cfg.ANSWER]
    assert {w for t in templates for w in t.split() if not w.startswith("$")} <= set(cfg.VOCAB)
    assert registry.build_data(cfg).vocab.tokens == cfg.VOCAB


@FAST
@given(cfg=configs(), seed=SEEDS, split=SPLITS)
def test_same_seed_same_batch_and_arrays_are_well_formed(cfg, seed, split) -> None:
    gen = generator(cfg)
    a, b = gen.sample(counter_rng(seed), 24, split), gen.sample(counter_rng(seed), 24, split)
    for x, y in ((a.tokens, b.tokens), (a.loss_mask, b.loss_mask), (a.lengths, b.lengths)):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert a.meta.keys() == b.meta.keys() and all(np.array_equal(a.meta[k], b.meta[k]) for k in a.meta)
    other = gen.sample(counter_rng(seed ^ 1), 24, split)
    assert not np.array_equal(other.tokens[:, :8], a.tokens[:, :8]), "another seed, another batch"
    n, width = a.tokens.shape
    assert a.tokens.dtype == np.int32 and a.loss_mask.dtype == bool and a.positions is None
    assert width == a.lengths.max() <= cfg.max_seq_len()
    assert ((a.tokens >= 0) & (a.tokens < cfg.vocab_size)).all()
    cols = np.arange(width)[None, :]
    past = cols >= a.lengths[:, None]
    assert (a.tokens[past] == gen.vocab.pad).all() and not a.loss_mask[past].any()
    assert (a.tokens[:, 0] == gen.vocab.bos).all()
    assert (a.tokens[np.arange(n), a.lengths - 1] == gen.vocab.eos).all()
    assert ((a.tokens == gen.vocab.eos).sum(1) == 1).all()


@FAST
@given(cfg=configs(), seed=SEEDS, split=SPLITS)
def test_loss_covers_the_solution_after_the_delimiter_or_all_filler_but_bos(cfg, seed, split) -> None:
    gen = generator(cfg)
    ex = gen.sample(counter_rng(seed), 24, split)
    colon = gen.ids[":"]
    for i in range(len(ex)):
        t, m, L = ex.tokens[i], ex.loss_mask[i], int(ex.lengths[i])
        if int(ex.meta["format"][i]) == FILLER:
            assert split == "train" and not m[0] and m[1:L].all()
            assert colon not in t[:L].tolist() and gen.ids["?"] not in t[:L].tolist()
            continue
        first = int(np.argmax(m))
        assert first == t.tolist().index(colon) + 1, "the loss starts right after the first delimiter"
        assert t[first - 2] == gen.ids["?"] and m[first:L].all() and not m[:first].any()


@FAST
@given(cfg=configs(), seed=SEEDS, split=SPLITS)
def test_operations_stay_in_range_divide_exactly_and_chain(cfg, seed, split) -> None:
    gen = generator(cfg)
    ex = gen.sample(counter_rng(seed), 32, split)
    lo, hi = cfg.hard_ops if split == "hard" else cfg.easy_ops
    M = cfg.max_value
    for i in range(len(ex)):
        ops, fmt = int(ex.meta["ops"][i]), int(ex.meta["format"][i])
        if fmt == FILLER:
            assert ops == 0 and int(ex.meta["answer"][i]) == -1
            continue
        assert lo <= ops <= hi
        code, (x, k), y = (
            ex.meta["opcodes"][i, :ops],
            ex.meta["operands"][i, :ops].T,
            ex.meta["results"][i, :ops],
        )
        assert (ex.meta["opcodes"][i, ops:] == -1).all()
        assert ((x >= 0) & (x <= M) & (k >= 1) & (k <= M) & (y >= 0) & (y <= M)).all()
        expect = np.select([code == 0, code == 1, code == 2], [x + k, x - k, x * k], x // np.maximum(k, 1))
        assert np.array_equal(y, expect)
        assert ((x % np.maximum(k, 1))[code == 3] == 0).all() and (k[code == 3] >= 2).all(), "exact division"
        assert int(ex.meta["answer"][i]) == int(y[-1])
        value, count = solve_story(mf._text(gen.vocab, ex[i].prompt), M)
        assert (value, count) == (int(ex.meta["answer"][i]), ops), "the meta answer is the story's"


def solve_story(text: str, top: int) -> tuple[int, int]:
    """The answer and operation count of a question, read from its sentences (independently of the generator),
    checking that every value stays in 0..top and every division is exact."""
    sentences = text.removeprefix("BOS ").removesuffix(" :").split(" . ")
    first = sentences[0].split()
    assert first[1] == "has"
    value, count = int(first[2]), 0
    for s in sentences[1:-1]:
        w = s.split()
        if w[1:2] == ["loses"]:
            value, count = value - int(w[2]), count + 1
        elif w[1] == "gets" and w[3] == "more":
            value, count = value + int(w[2]), count + 1
        elif w[1] == "gets" and w[3:] == ["times", "as", "many"]:
            value, count = value * int(w[2]), count + 1
        elif w[1:4] == ["keeps", "one", "of"]:
            assert value % int(w[4]) == 0, "exact division"
            value, count = value // int(w[4]), count + 1
        else:
            assert w[1] == "buys" and w[3:5] == ["boxes", "of"]
            assert 0 <= int(w[2]) * int(w[5]) <= top
            value, count = value + int(w[2]) * int(w[5]), count + 2
        assert 0 <= value <= top
    assert sentences[-1].startswith("How many") and sentences[-1].endswith("have ?")
    return value, count


@FAST
@given(cfg=configs(), seed=SEEDS)
def test_pinned_length_fixes_the_operation_count(cfg, seed) -> None:
    gen = generator(cfg)
    for split, (_, hi) in (("rl", cfg.easy_ops), ("hard", cfg.hard_ops)):
        ex = gen.sample(counter_rng(seed), 8, split, length=hi)
        assert (ex.meta["ops"] == hi).all()
        with pytest.raises(ValueError, match="lies outside"):
            gen.sample(counter_rng(seed), 8, split, length=hi + 1)
    with pytest.raises(UnknownSplit, match="train, rl, easy, hard"):
        gen.sample(counter_rng(seed), 8, "eval")


def test_easy_problems_are_held_out_of_train_and_rl() -> None:
    """The easy split starts only from held-out (name, item, start) triples; train and rl never do."""
    cfg = Config(formats=(1, 1, 1))
    gen = generator(cfg)

    def triples(split: str) -> set[tuple[str, str, int]]:
        ex = gen.sample(counter_rng(3), 3000, split)
        out = set()
        for i in range(len(ex)):
            if int(ex.meta["format"][i]) != FILLER:
                w = mf._text(gen.vocab, ex[i].prompt).split()
                out.add((w[1], w[4], int(w[3])))
        return out

    easy, train, rl = triples("easy"), triples("train"), triples("rl")
    assert easy and not easy & (train | rl)
    held = {
        (n, it, v)
        for c, (n, it) in enumerate((n, it) for n in cfg.NAMES for it in cfg.ITEMS)
        for v in gen._starts[True][c]
    }
    assert easy <= held and len(held) == 16 * 13


# ---- the interpreter ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "value"),
    [
        ("return 7", 7),
        ("a = 12 ; b = 3 * 4 ; c = a + b ; return c", 24),
        ("a = 2 + 3 * 4 ; return a", 14),
        ("a = ( 2 + 3 ) * 4 ; return a", 20),
        ("a = 20 - 3 - 2 ; return a", 15),
        ("a = 100 / 5 / 2 ; return a", 10),
        ("a = 7 ; b = a / 7 ; return b - 1", 0),
        ("a = 3 ; a = a * a ; return a", 9),
        ("a = 5 ; return a - 8", -3),
        ("z = 0 ; return z", 0),
    ],
)
def test_interpreter_computes_hand_written_programs(program, value) -> None:
    assert run(spell(program)) == value and evaluate(spell(program)) == value


@pytest.mark.parametrize(
    ("program", "error"),
    [
        ("", "ends without return"),
        ("a = 1 ;", "ends without return"),
        ("return a", "used before it is set"),
        ("a = 5 / 0 ; return a", "not an exact division"),
        ("a = 5 / 2 ; return a", "not an exact division"),
        ("a = ; return a", "expected a number"),
        ("a = 1 return a", "expected ;"),
        ("return 1 ;", "after the return value"),
        ("return 0 7", "leading zero"),
        ("1 = 2 ; return 1", "is not a variable"),
        ("return ( 1 + 2", "expected \\)"),
        ("return " + "( " * 40 + "1" + " )" * 40, "nested too deep"),
        ("a = 99999 ; b = a * a ; c = b * b ; return c", "is past"),
        ("return " + "9 " * 16, "too long"),
        ("def solve ( ) : return 1", "is not a variable"),
    ],
)
def test_interpreter_refuses_broken_programs_cleanly(program, error) -> None:
    with pytest.raises(ProgramError, match=error):
        run(spell(program))
    assert evaluate(spell(program)) is None


def test_the_module_never_evaluates_python() -> None:
    """No exec, eval, compile or __import__ call anywhere in the generator module."""
    tree = ast.parse(inspect.getsource(mf))
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not called & {"exec", "eval", "compile", "__import__"}
    assert "exec(" not in inspect.getsource(mf) and "eval(" not in inspect.getsource(mf)


# ---- verify, answer, check -------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, split=SPLITS)
def test_verify_accepts_the_reference_solution_in_every_format(cfg, seed, split) -> None:
    gen = generator(cfg)
    ex = gen.sample(counter_rng(seed), 24, split)
    for i in range(len(ex)):
        e, g, fmt = ex[i], gold(ex, i), int(ex.meta["format"][i])
        if fmt == FILLER:
            assert not gen.verify(e, g) and gen.answer(e, g) is None
            continue
        assert gen.verify(e, g), gen.render(e)
        assert gen.answer(e, g) == int(ex.meta["answer"][i])
        assert gen.answer(e, g + ids(gen, "1 2 3 . EOS")) == gen.answer(e, g), "nothing after EOS is read"
        assert gen.verify(e, g[:-1]), "a completion cut at the length limit (no EOS) is still read"
        checks = gen.check(e, g)
        assert checks == {"format_code": fmt == CODE, "format_nl": fmt == NL, "format_mixed": fmt == MIXED}
        w = words(gen, g)
        if fmt == CODE:  # the code's operators are the problem's operations (a box: * then +)
            assert sum(w.count(op) for op in "+-*/") == int(ex.meta["ops"][i])
            assert w[:5] == ["def", "solve", "(", ")", ":"] and w[-3] == "return" and w[-1] == "EOS"


def corrupt(gen: MathFormats, g: list[int], fmt: int) -> dict[str, list[int]]:
    """Completions derived from a gold one that must be judged wrong."""
    w = words(gen, g)
    out = {}
    if fmt == NL:
        i = w.index("\\boxed{") + 1
        j = w.index("}")
        wrong = str(int("".join(w[i:j])) + 1)
        out["final number changed"] = g[:i] + [gen.ids[c] for c in wrong] + g[j:]
        out["box not closed"] = g[:j] + g[j + 1 :]
        out["box empty"] = g[:i] + g[j:]
    else:
        i = w.index("=") + 1  # the start value a = V
        j = w.index(";")
        wrong = str(int("".join(w[i:j])) + 1)
        out["start value changed"] = g[:i] + [gen.ids[c] for c in wrong] + g[j:]
        out["undefined variable"] = g[: w.index("return") + 1] + [gen.ids["z"]] + g[w.index("return") + 2 :]
        out["statement separator dropped"] = g[:j] + g[j + 1 :]
        out["divide by zero"] = g[: w.index("return") + 2] + ids(gen, "/ 0") + g[w.index("return") + 2 :]
        if fmt == MIXED:
            out["block not closed"] = [t for t in g if t != gen.ids["</code>"]]
        else:
            out["header broken"] = g[:2] + g[3:]
    return out


@FAST
@given(seed=SEEDS, split=st.sampled_from(["rl", "easy", "hard"]))
def test_verify_rejects_corrupted_solutions(seed, split) -> None:
    gen = generator(ALL)
    ex = gen.sample(counter_rng(seed), 12, split)
    for i in range(len(ex)):
        e, fmt = ex[i], int(ex.meta["format"][i])
        for what, bad in corrupt(gen, gold(ex, i), fmt).items():
            assert not gen.verify(e, bad), (what, gen.render(e), mf._text(gen.vocab, bad))


def test_answer_is_read_in_any_format_whatever_the_reference_format() -> None:
    """A problem whose reference is nl is also solved by a program and by a mixed completion; the format is
    decided by structure, and code inside a completion is run, not read around."""
    gen = generator(ALL)
    e = gen.sample(counter_rng(0), 1, "rl")[0]
    truth = int(e.meta["answer"])
    right = {
        "code": f"def solve ( ) : a = {truth} ; return a EOS",
        "nl": f"{truth} plus 0 is {truth} . The answer is \\boxed{{ {truth} }} . EOS",
        "mixed": f"{truth} plus 0 is {truth} . <code> return {truth} </code> EOS",
    }
    for fmt, text in right.items():
        c = ids(gen, text)
        assert gen.verify(e, c) and gen.answer(e, c) == truth
        assert gen.check(e, c) == {f"format_{f}": f == fmt for f in ("code", "nl", "mixed")}
    # a broken program is wrong even when a right boxed answer follows it
    broken = ids(gen, f"def solve ( ) : return x . The answer is \\boxed{{ {truth} }} . EOS")
    assert gen.check(e, broken)["format_code"] and not gen.verify(e, broken)
    broken_block = ids(gen, f"<code> return {truth} / 0 </code> The answer is \\boxed{{ {truth} }} . EOS")
    assert gen.check(e, broken_block)["format_mixed"] and not gen.verify(e, broken_block)
    # text without any format: no answer
    assert gen.answer(e, ids(gen, f"The answer is {truth} . EOS")) is None
    assert gen.check(e, ids(gen, "EOS")) == dict.fromkeys(("format_code", "format_nl", "format_mixed"), False)


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from(["", "def solve ( ) :", "<code>", "\\boxed{", "1 plus 2 is 3 . <code> a ="]),
    tail=st.lists(st.integers(-5, 95), max_size=60),
)
def test_malformed_completions_are_wrong_and_never_raise(prefix, tail) -> None:
    gen = generator(ALL)
    e = gen.sample(counter_rng(1), 1, "rl")[0]
    c = (ids(gen, prefix) if prefix else []) + tail
    a, ok, checks = gen.answer(e, c), gen.verify(e, c), gen.check(e, c)
    assert a is None or isinstance(a, int)
    assert ok == (a == int(e.meta["answer"])) and sum(checks.values()) <= 1


def test_runaway_completions_have_no_answer() -> None:
    gen = generator(ALL)
    e = gen.sample(counter_rng(2), 1, "rl")[0]
    truth = int(e.meta["answer"])
    long = ids(gen, "a = 1 ;") * 400 + ids(gen, f"return {truth}")
    assert not gen.verify(e, ids(gen, "def solve ( ) :") + long)
    assert gen.answer(e, ids(gen, "def solve ( ) :") + long) is None
    assert gen.verify(e, ids(gen, "def solve ( ) :") + long[-40:]), "the same program, short enough, runs"


# ---- the mixture -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "filler"), [((1, 1, 0), 0.3), ((1, 4, 0), 0.0), ((1, 1, 1), 0.5), ((0, 0, 2), 0.1)]
)
def test_train_formats_and_filler_match_their_shares(weights, filler) -> None:
    """Within 4.5 standard errors over 4000 documents; check() agrees with the reference format of each."""
    cfg = Config(formats=weights, filler=filler)
    gen = generator(cfg)
    n = 4000
    ex = gen.sample(counter_rng(11), n, "train")
    fmt = ex.meta["format"]

    def close(count: int, total: int, p: float) -> bool:
        return abs(count - total * p) <= 4.5 * math.sqrt(max(total * p * (1 - p), 1e-9)) + 1e-9

    assert close(int((fmt == FILLER).sum()), n, filler)
    problems = int((fmt != FILLER).sum())
    for code, share in enumerate(cfg.weights.shares()):
        assert close(int((fmt == code).sum()), problems, share), (code, share)
    sample = np.flatnonzero(fmt != FILLER)[:300]
    names = ("format_code", "format_nl", "format_mixed")
    for i in sample:
        checks = gen.check(ex[int(i)], gold(ex, int(i)))
        assert [k for k, v in checks.items() if v] == [names[int(fmt[i])]]
    for split in ("rl", "easy", "hard"):
        assert (gen.sample(counter_rng(5), 200, split).meta["format"] != FILLER).all()


@pytest.mark.parametrize(
    "cfg",
    [
        Config(),
        Config(formats=(1, 1, 1), filler=0.5),
        Config(formats=(0, 1, 0), easy_ops=(1, 3), hard_ops=(9, 12)),
    ],
)
def test_length_model_matches_fresh_samples(cfg) -> None:
    gen = generator(cfg)
    for split in cfg.SPLITS:
        t = gen.sample(counter_rng(21), 3000, split).lengths.astype(float)
        m1, m2 = cfg.length_stats(split)
        assert abs(t.mean() - m1) / m1 < 0.02 and abs((t * (t + 1)).mean() - m2) / m2 < 0.04, split


@settings(max_examples=15, deadline=None)
@given(cfg=configs())
def test_max_seq_len_bounds_the_longest_documents(cfg) -> None:
    gen = generator(cfg)
    longest = max(
        int(gen.sample(counter_rng(s), 500, split, length=None).lengths.max())
        for s, split in enumerate(("train", "hard"))
    )
    assert longest <= cfg.max_seq_len() <= 2 * longest + 40


def test_a_batch_is_fast() -> None:
    gen = generator(Config())
    times = []
    for s in range(3):
        t = time.perf_counter()
        gen.sample(counter_rng(s), 256, "train")
        times.append(time.perf_counter() - t)
    assert min(times) < 0.2, f"{min(times):.3f} s for 256 examples"


@FAST
@given(seed=SEEDS, split=SPLITS)
def test_render_shows_question_solution_and_answer(seed, split) -> None:
    gen = generator(ALL)
    ex = gen.sample(counter_rng(seed), 6, split)
    for i in range(len(ex)):
        text = gen.render(ex[i])
        if int(ex.meta["format"][i]) == FILLER:
            assert text.startswith("[filler text, loss on every token] BOS ") and text.endswith(" EOS")
            continue
        assert text.startswith("BOS ") and " ? : -> " in text
        fmt = ("code", "nl", "mixed")[int(ex.meta["format"][i])]
        assert text.endswith(
            f"EOS   ({fmt}, {int(ex.meta['ops'][i])} operations, answer {int(ex.meta['answer'][i])})"
        )


# ---- config validation -----------------------------------------------------------------------------------


def test_format_weights_take_a_mapping_or_three_numbers() -> None:
    assert Config(formats={"code": 2, "mixed": 1}).weights.shares() == (0.5, 0.25, 0.25)
    assert Config(formats=[1, 3, 0]).weights.shares() == (0.25, 0.75, 0.0)
    assert Config().weights.shares() == (0.5, 0.5, 0.0)
    assert Config(formats=(1, 3, 0)).model_dump()["formats"] == {"code": 1.0, "nl": 3.0, "mixed": 0.0}


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({"formats": (0, 0, 0)}, "code", "all format weights are 0"),
        ({"formats": {"code": 0, "nl": 0}}, "code", "give at least one of code, nl, mixed a positive weight"),
        ({"formats": (1, -1, 0)}, "nl", "nl weight -1.0 is negative; weights are relative shares >= 0"),
        ({"formats": (1, 1)}, "formats", "formats"),
        (
            {"easy_ops": (3, 2)},
            "easy_ops",
            "[3, 2] is not a range of operation counts; need 1 <= low <= high",
        ),
        ({"easy_ops": (0, 2)}, "easy_ops", "need 1 <= low <= high <= 12"),
        ({"hard_ops": (5, 13)}, "hard_ops", "need 1 <= low <= high <= 12"),
        ({"hard_ops": (3, 8)}, "hard_ops", "hard_ops [3, 8] overlaps easy_ops [2, 4]"),
        ({"hard_ops": (4, 8)}, "hard_ops", "set hard_ops low > 4"),
        ({"max_value": 50}, "max_value", "greater than or equal to 100"),
        ({"filler": 1.0}, "filler", "less than 1"),
    ],
)
def test_configs_that_cannot_make_data_are_refused(fields, where, message) -> None:
    with pytest.raises(ValidationError) as err:
        Config(**fields)
    assert message in str(err.value)
    problem = err.value.errors()[0]
    assert where in str(problem.get("ctx", {})) + str(problem["loc"])


def test_bad_weights_are_a_spec_error_at_the_weights_key(tmp_path) -> None:
    spec = {
        "run": {"name": "t", "output": str(tmp_path / "out")},
        "stages": {
            "train": {
                "model": {"kind": "transformer", "dim": 32, "depth": 1, "heads": 2},
                "data": {"kind": "math_formats", "formats": {"code": 0, "nl": 0, "mixed": 0}},
                "schedule": {"steps": 10},
                "batch": {"global": 8},
            }
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    with pytest.raises(SpecError, match="all format weights are 0") as err:
        load_spec(str(path))
    assert any(i.path == "stages.train.data.formats.code" for i in err.value.issues), err.value.issues
    spec["stages"]["train"]["data"]["formats"] = [1, 1, 1]
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert load_spec(str(path)).stages["train"].data.weights.mixed == 1
