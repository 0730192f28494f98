"""Property tests of the sudoku generator (To Backtrack or Not, docs/papers/backtrack.md).

Hypothesis draws the config (clue range, trace kind, token limit), the number of examples and the seed;
the tests check the token format, the lengths and their bounds, the answer mask, unique solutions, traces
that replay to the solution, the shortcut as the full trace without reverted branches, the verifier and
the split, plus the strategies one by one on hand-made candidate grids and a short training run.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from helpers import train_in_process
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.data import sudoku as S
from engine.data.base import Example, Examples, UnknownSplit
from engine.data.stream import counter_rng
from schemas.data import Sudoku as SudokuConfig

SEEDS = st.integers(0, 2**63 - 1)
SPLITS = st.sampled_from(["train", "eval"])
FAST = settings(max_examples=25, deadline=None)
CELLS = range(S.CELL0, S.CELL0 + 81)


@st.composite
def configs(draw: st.DrawFn, trace: str | None = None) -> SudokuConfig:
    """A feasible config; clue counts from 24 up keep generation fast (lower ones only cost more rounds)."""
    lo = draw(st.integers(24, 44))
    hi = draw(st.integers(lo, min(80, lo + draw(st.sampled_from([0, 4, 12, 40])))))
    trace = trace or draw(st.sampled_from(["full", "shortcut", "none"]))
    floor = (
        SudokuConfig.FULL_MIN if trace == "full" else SudokuConfig(trace=trace, clues=(lo, hi)).seq_len(hi)
    )
    max_tokens = draw(st.integers(floor, floor + 3000))
    tries = SudokuConfig.TRIES.get(lo, 1) + draw(st.integers(0, 5))
    return SudokuConfig(clues=(lo, hi), trace=trace, max_tokens=max_tokens, tries=tries)


def sample(cfg: SudokuConfig, seed: int, n: int, split: str = "train", length: int | None = None) -> Examples:
    """n examples from a fresh counter RNG keyed by `seed`."""
    return S.Sudoku(cfg).sample(counter_rng(seed), n, split, length=length)


def identical(a: Examples, b: Examples) -> bool:
    """Whether two batches agree in every array and in their metadata."""
    arrays = [(a.tokens, b.tokens), (a.loss_mask, b.loss_mask), (a.lengths, b.lengths)]
    arrays += [(a.meta[k], b.meta[k]) for k in a.meta]
    same_keys = a.meta.keys() == b.meta.keys()
    return same_keys and all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in arrays
    )


def completion(ex: Example) -> list[int]:
    """The generator's own completion: every token after the prompt."""
    return ex.tokens[len(ex.prompt) :].tolist()


def answer_tokens(grid: list[int], order: range | list[int] = range(81)) -> list[int]:
    """`SOL_S n`, one `(r, c) = v n` line per cell in `order`, `SOL_E END`."""
    out = [S.SOL_S, S.NL]
    for i in order:
        out += [S.CELL0 + i, S.EQ, S.DIGIT0 + grid[i], S.NL]
    return out + [S.SOL_E, S.END]


def trace_lines(ex: Example) -> list[tuple[int, ...]]:
    """The trace of an example as lines of token ids (newline included), as the solver wrote them."""
    after = completion(ex)
    body = after[: after.index(S.SOL_S)]
    lines, line = [], []
    for t in body:
        line.append(t)
        if t == S.NL:
            lines.append(tuple(line))
            line = []
    assert not line, "the trace ends with a newline"
    return lines


def without_reverted(lines: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The full trace minus every span from a guess to its revert and minus the bookkeeping lines."""
    out: list[tuple[int, ...]] = []
    open_at: list[int] = []
    for line in lines:
        if line[0] == S.GUESS:
            open_at.append(len(out))
            out.append(line)
        elif line[0] == S.REVERT:
            out = out[: open_at.pop()]
        else:
            out.append(line)
    return [line for line in out if line[0] in CELLS]


# ---- determinism, format and lengths -------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 4), split=SPLITS)
def test_same_seed_same_examples_other_seed_others(cfg: SudokuConfig, seed: int, n: int, split: str) -> None:
    a, b = sample(cfg, seed, n, split), sample(cfg, seed, n, split)
    assert identical(a, b)
    assert set(a.meta) == {"clues", "hardest", "guesses", "puzzle", "solution"}
    other = sample(cfg, seed + 1, n, split)
    assert not np.array_equal(a.meta["puzzle"], other.meta["puzzle"])


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 6), split=SPLITS)
def test_format_lengths_and_mask(cfg: SudokuConfig, seed: int, n: int, split: str) -> None:
    ex = sample(cfg, seed, n, split)
    lo, hi = cfg.clues
    assert (
        ex.tokens.dtype == np.int32
        and ex.loss_mask.dtype == np.bool_
        and ex.tokens.shape == ex.loss_mask.shape
    )
    assert ((ex.tokens >= 0) & (ex.tokens < cfg.vocab_size)).all() and cfg.vocab_size == len(S.VOCAB) == 109
    assert (
        ex.tokens.shape == (n, ex.lengths.max()) and ex.lengths.max() <= cfg.max_seq_len() <= cfg.max_tokens
    )
    cols = np.arange(ex.tokens.shape[1])
    np.testing.assert_array_equal(ex.tokens != S.PAD, cols[None, :] < ex.lengths[:, None])
    for i in range(n):
        e = ex[i]
        clues = int(ex.meta["clues"][i])
        assert lo <= clues <= hi and clues == int((ex.meta["puzzle"][i] > 0).sum())
        prompt = e.prompt.tolist()
        assert len(prompt) == cfg.PROMPT + 4 * clues
        assert prompt[:4] == [S.START, S.ORIGINAL, S.COLON, S.NL] and prompt[-2:] == [S.SOLVING, S.NL]
        given = [c for c in range(81) if ex.meta["puzzle"][i][c] > 0]
        expect = [
            t for c in given for t in (S.CELL0 + c, S.EQ, S.DIGIT0 + int(ex.meta["puzzle"][i][c]), S.NL)
        ]
        assert prompt[4:-2] == expect  # the givens, row-major
        assert e.loss_mask[len(prompt) :].all() and not e.loss_mask[: len(prompt)].any()  # trace, answer, END
        after = completion(e)
        assert after[-len(answer_tokens([0] * 81)) :] == answer_tokens(ex.meta["solution"][i].tolist())
        assert after.count(S.SOL_S) == after.count(S.SOL_E) == after.count(S.END) == 1
        assert S.START not in after and S.PAD not in after
        trace = trace_lines(e)
        if cfg.trace == "none":
            assert trace == [] and len(e.tokens) == cfg.seq_len(clues)
        elif cfg.trace == "shortcut":
            assert len(trace) == 81 - clues and len(e.tokens) == cfg.SHORTCUT
        else:
            assert cfg.SHORTCUT <= len(e.tokens) <= cfg.max_tokens
            assert (len(e.tokens) > cfg.SHORTCUT) == (int(ex.meta["guesses"][i]) > 0)


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 4), split=SPLITS, data=st.data())
def test_a_pinned_clue_count(cfg: SudokuConfig, seed: int, n: int, split: str, data: st.DataObject) -> None:
    lo, hi = cfg.clues
    clues = data.draw(st.integers(lo, hi))
    ex = sample(cfg, seed, n, split, length=clues)
    assert (ex.meta["clues"] == clues).all()
    with pytest.raises(ValueError, match="outside clues"):
        sample(cfg, seed, 1, split, length=hi + 1)


def test_unknown_split_names_the_known_ones() -> None:
    with pytest.raises(UnknownSplit, match="no split 'test'; sudoku has train, eval"):
        sample(SudokuConfig(clues=(30, 36)), 0, 1, "test")


# ---- the puzzles and the traces ------------------------------------------------------------------------


@FAST
@given(cfg=configs(trace="full"), seed=SEEDS, n=st.integers(1, 6), split=SPLITS)
def test_unique_solution_and_traces_replay_to_it(cfg: SudokuConfig, seed: int, n: int, split: str) -> None:
    ex = sample(cfg, seed, n, split)
    for i in range(n):
        puzzle, solution = ex.meta["puzzle"][i].tolist(), ex.meta["solution"][i].tolist()
        assert S.count_solutions(puzzle, 3) == 1
        assert S.count_solutions(solution, 2) == 1 and S.valid_solution(solution, puzzle)
        full = trace_lines(ex[i])
        assert S.replay(puzzle, full) == solution  # guesses, reverts and all
        short = S.shortcut(full)
        assert short == without_reverted(full)  # the full trace without its reverted branches
        assert S.replay(puzzle, short) == solution
        assert sorted(line[0] - S.CELL0 for line in short) == [c for c in range(81) if not puzzle[c]]
        assert all(line[2] - S.DIGIT0 == solution[line[0] - S.CELL0] for line in short)  # no dead ends
        assert sum(line[0] == S.GUESS for line in full) >= int(ex.meta["guesses"][i])
        assert (int(ex.meta["hardest"][i]) == S.GUESSING) == (int(ex.meta["guesses"][i]) > 0)


@FAST
@given(cfg=configs(trace="full"), seed=SEEDS, n=st.integers(1, 6))
def test_full_trace_grammar(cfg: SudokuConfig, seed: int, n: int) -> None:
    ex = sample(cfg, seed, n)
    for i in range(n):
        lines = trace_lines(ex[i])
        open_guesses: list[tuple[int, ...]] = []
        for k, line in enumerate(lines):
            head = line[0]
            if head in CELLS:
                assert len(line) == 4 and line[1] == S.EQ and S.DIGIT0 + 1 <= line[2] <= S.DIGIT0 + 9
            elif head in (S.GUESS, S.REVERT):
                cands = line[4 : line.index(S.RBR)]
                digits = [t - S.DIGIT0 for t in cands[::2]]
                assert line[1] == S.COLON and line[2] in CELLS and line[3] == S.LBR and len(digits) >= 2
                assert digits == sorted(set(digits)) and all(t == S.COMMA for t in cands[1::2])
                if head == S.GUESS:
                    value = line[-2] - S.DIGIT0
                    assert value in digits and lines[k + 1] == (line[2], S.EQ, line[-2], S.NL)
                    open_guesses.append(line)
                else:
                    assert line[-2] == S.NONE and line[2:-2] == open_guesses.pop()[2:-2]
            elif head == S.NOCAND:
                assert line[1] == S.COLON and line[2] in CELLS and len(line) == 4
            else:
                assert line == (S.INVALID, S.NL)
        assert all(line[0] in CELLS for line in lines[-1:])  # the last line places the last cell


def test_full_traces_backtrack_and_shortcut_equals_the_paper_conversion() -> None:
    cfg = SudokuConfig(clues=(24, 26), trace="full", tries=20)
    ex = sample(cfg, 7, 24)
    assert (ex.meta["guesses"] > 0).any(), "some low-clue puzzles need a guess"
    reverted = 0
    for i in range(len(ex)):
        full = trace_lines(ex[i])
        reverted += sum(line[0] == S.REVERT for line in full)
        assert S.shortcut(full) == without_reverted(full)
    assert reverted > 0, "some guesses fail and are reverted"
    strategies = set(ex.meta["hardest"].tolist())
    assert len(strategies) >= 3, strategies  # the ladder is climbed, not just lone singles


# ---- the verifier --------------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 4), split=SPLITS, data=st.data())
def test_verifier_accepts_correct_grids_and_rejects_others(
    cfg: SudokuConfig, seed: int, n: int, split: str, data: st.DataObject
) -> None:
    gen = S.Sudoku(cfg)
    ex = gen.sample(counter_rng(seed), n, split)
    for i in range(n):
        e = ex[i]
        solution, puzzle = ex.meta["solution"][i].tolist(), ex.meta["puzzle"][i].tolist()
        assert gen.verify(e, completion(e))
        assert gen.verify(e, answer_tokens(solution))  # the trace is not graded
        shuffled = data.draw(st.permutations(list(range(81))))
        assert gen.verify(e, answer_tokens(solution, shuffled))  # any order of the 81 lines
        # one cell changed: a conflict in its row, column and box
        cell = data.draw(st.integers(0, 80))
        wrong = solution.copy()
        wrong[cell] = data.draw(st.sampled_from([v for v in range(1, 10) if v != solution[cell]]))
        assert not gen.verify(e, answer_tokens(wrong))
        # a valid grid that contradicts the givens: the digits relabelled by a derangement
        relabel = [0, *(v % 9 + 1 for v in range(1, 10))]
        other = [relabel[v] for v in solution]
        assert S.valid_solution(other, [0] * 81) and not gen.verify(e, answer_tokens(other))
        # incomplete, duplicated or malformed answers
        assert not gen.verify(e, answer_tokens(solution, range(80)))
        assert not gen.verify(e, answer_tokens(solution, [*range(81), 0]))
        assert not gen.verify(e, answer_tokens(solution)[:-2])  # no SOL_E
        assert not gen.verify(e, answer_tokens(solution)[1:])  # no SOL_S
        assert not gen.verify(e, [])
        tokens = answer_tokens(solution)
        tokens[2 + 4 * cell + 2] = S.DIGIT0  # digit 0
        assert not gen.verify(e, tokens)
        # the prompt's givens are what counts: change one and the generator's answer fails
        prompt = e.prompt.copy()
        j = 4 + 4 * data.draw(st.integers(0, int(ex.meta["clues"][i]) - 1)) + 2
        prompt[j] = S.DIGIT0 + (prompt[j] - S.DIGIT0) % 9 + 1
        changed = dataclasses.replace(e, tokens=np.concatenate([prompt, e.tokens[len(prompt) :]]))
        assert S.givens(changed.prompt) != puzzle and not gen.verify(changed, completion(e))


def test_verifier_rejects_any_conflict() -> None:
    """Every single-cell change of a solved grid and every swap of two unequal cells is rejected."""
    gen = S.Sudoku(SudokuConfig(clues=(30, 36)))
    e = gen.sample(counter_rng(3), 1)[0]
    solution = e.meta["solution"].tolist()
    empty = [c for c in range(81) if not e.meta["puzzle"][c]]
    for cell in range(81):
        for v in range(1, 10):
            wrong = solution.copy()
            wrong[cell] = v
            assert gen.verify(e, answer_tokens(wrong)) == (v == solution[cell])
    for a in empty[:12]:
        for b in empty:
            if solution[a] != solution[b]:
                swapped = solution.copy()
                swapped[a], swapped[b] = solution[b], solution[a]
                assert not gen.verify(e, answer_tokens(swapped))


# ---- splits --------------------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 6))
def test_train_and_eval_puzzles_lie_in_disjoint_halves(cfg: SudokuConfig, seed: int, n: int) -> None:
    for k, split in enumerate(cfg.SPLITS):
        ex = sample(cfg, seed, n, split)
        assert all(S.split_of(p.tolist()) == k for p in ex.meta["puzzle"])


# ---- the strategies, one by one ------------------------------------------------------------------------


def grid_of(**cells: int) -> tuple[list[int], list[int]]:
    """Candidate masks and values: every cell open with all candidates except `cells` (`c<r><c>=mask`)."""
    cand, val = [S.ALL] * 81, [0] * 81
    for name, mask in cells.items():
        cand[9 * int(name[1]) + int(name[2])] = mask
    return cand, val


def mask(*digits: int) -> int:
    """Candidate mask of some digits."""
    return sum(S.BIT[d] for d in digits)


def test_naked_pair_and_triplet() -> None:
    cand, val = grid_of(c00=mask(1, 2), c05=mask(1, 2))
    assert S._naked_pair(cand, val)
    assert all(cand[c] == S.ALL & ~mask(1, 2) for c in range(9) if c not in (0, 5))
    assert cand[9] == S.ALL  # other units untouched
    cand, val = grid_of(c00=mask(1, 2), c03=mask(2, 3), c08=mask(1, 3))
    assert not S._naked_pair(cand, val) and S._naked_triplet(cand, val)
    assert all(cand[c] == S.ALL & ~mask(1, 2, 3) for c in range(9) if c not in (0, 3, 8))
    cand, val = grid_of(c00=mask(1, 2), c01=mask(1, 2), c02=mask(1, 2))  # three cells, two digits
    with pytest.raises(S._Empty):
        S._naked_pair(cand, val)


def test_locked_candidate_pointing_and_claiming() -> None:
    without7 = S.ALL & ~mask(7)
    # in box 0, digit 7 only in row 0: pointing clears it from row 0 outside the box
    cand, val = grid_of(**{f"c{r}{c}": without7 for r in (1, 2) for c in range(3)})
    assert S._locked_candidate(cand, val)
    assert all(not cand[c] & mask(7) for c in range(3, 9)) and all(cand[c] & mask(7) for c in range(3))
    # in row 4, digit 7 only in box 3: claiming clears it from the rest of box 3
    cand, val = grid_of(**{f"c4{c}": without7 for c in range(3, 9)})
    assert S._locked_candidate(cand, val)
    assert all(not cand[9 * r + c] & mask(7) for r in (3, 5) for c in range(3))
    assert all(cand[36 + c] & mask(7) for c in range(3))


def test_xy_wing() -> None:
    # pivot (0,0) {1,2}, wings (0,5) {1,3} and (4,0) {2,3}: (4,5) sees both wings and loses 3
    cand, val = grid_of(c00=mask(1, 2), c05=mask(1, 3), c40=mask(2, 3))
    assert S._xy_wing(cand, val)
    assert cand[9 * 4 + 5] == S.ALL & ~mask(3)
    assert cand[5] == mask(1, 3) and cand[36] == mask(2, 3) and cand[9 * 4 + 4] == S.ALL


def test_unique_rectangle_type_1() -> None:
    # (0,0) (0,1) (3,0) hold {4,8}; (3,1) holds them and more: it cannot be 4 or 8 (two boxes: 0 and 3)
    cand, val = grid_of(c00=mask(4, 8), c01=mask(4, 8), c30=mask(4, 8), c31=mask(4, 8, 9))
    assert S._unique_rectangle(cand, val)
    assert cand[9 * 3 + 1] == mask(9)
    # the same shape over four boxes is no deadly pattern
    cand, val = grid_of(c00=mask(4, 8), c04=mask(4, 8), c30=mask(4, 8), c34=mask(4, 8, 9))
    assert not S._unique_rectangle(cand, val)


def test_ladder_places_singles_and_reports_contradictions() -> None:
    puzzle = [0] * 81
    puzzle[:8] = range(1, 9)  # row 0 holds 1..8: (0, 8) must be 9
    cand, _ = S._candidates(puzzle)
    out: list[tuple[int, ...]] = []
    assert S._ladder(cand, puzzle.copy(), out, [0, 0]) is True
    assert out[0] == (S.CELL0 + 8, S.EQ, S.DIGIT0 + 9, S.NL)
    # row 0 holds 1..7 and 9 sits in columns 7 and 8 further down: (0, 7) and (0, 8) both need 8
    puzzle = [0] * 81
    puzzle[:7] = range(1, 8)
    puzzle[9 * 3 + 7] = puzzle[9 * 6 + 8] = 9
    cand, _ = S._candidates(puzzle)
    out = []
    assert S._ladder(cand, puzzle.copy(), out, [0, 0]) is False
    assert out == [(S.CELL0 + 7, S.EQ, S.DIGIT0 + 8, S.NL), (S.NOCAND, S.COLON, S.CELL0 + 8, S.NL)]
    # a digit with no place in a unit: row 0 holds 1..6 and its open cells share box 2 with a 9
    puzzle = [0] * 81
    puzzle[:6] = range(1, 7)
    puzzle[9 + 8] = 9
    cand, _ = S._candidates(puzzle)
    out = []
    assert S._ladder(cand, puzzle.copy(), out, [0, 0]) is False
    assert out == [(S.INVALID, S.NL)]


# ---- configuration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({"clues": (16, 30)}, "clues", "fewer than 17 givens"),
        ({"clues": (18, 30)}, "clues", "does not reach fewer than 20"),
        ({"clues": (30, 24)}, "clues", "not a range of clue counts"),
        ({"clues": (30, 81)}, "clues", "not a range of clue counts"),
        ({"clues": (22, 30), "tries": 51}, "tries", "22 needs tries >= 52"),
        ({"clues": (24, 30), "tries": 9}, "tries", "24 needs tries >= 10"),
        ({"trace": "full", "max_tokens": 1000}, "max_tokens", "set max_tokens >= 1024"),
        ({"trace": "shortcut", "max_tokens": 657}, "max_tokens", "every shortcut example is 658 tokens"),
        (
            {"trace": "none", "clues": (30, 40), "max_tokens": 493},
            "max_tokens",
            "with 40 givens is 494 tokens",
        ),
    ],
)
def test_infeasible_configs_are_rejected(fields: dict, where: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        SudokuConfig(**fields)
    assert where in str(err.value)


def test_feasible_edges_are_accepted() -> None:
    SudokuConfig(clues=(22, 30), tries=52)
    SudokuConfig(clues=(20, 80), tries=2200, trace="none", max_tokens=334 + 4 * 80)
    SudokuConfig(trace="full", max_tokens=1024)
    assert SudokuConfig(clues=(27, 27), tries=1).max_seq_len() == 658


def test_tries_table_reaches_the_low_end() -> None:
    """TRIES[24] rounds bring nearly every puzzle to 24 givens (the table claims 99%)."""
    cfg = SudokuConfig(clues=(24, 36), tries=SudokuConfig.TRIES[24], trace="none")
    ex = sample(cfg, 11, 60, length=24)
    assert (ex.meta["clues"] == 24).mean() >= 0.95


def test_max_tokens_redraws_long_full_traces() -> None:
    """With a tight limit the long traces of the same draws are replaced; without one they appear."""
    loose = SudokuConfig(clues=(23, 25), trace="full", tries=40, max_tokens=10**6)
    tight = loose.model_copy(update={"max_tokens": 1024})
    free, capped = sample(loose, 5, 40), sample(tight, 5, 40)
    assert free.lengths.max() > 1024, "this seed draws a trace over the limit"
    assert capped.lengths.max() <= 1024 == tight.max_seq_len()
    assert not np.array_equal(free.meta["puzzle"], capped.meta["puzzle"])


@pytest.mark.parametrize(
    ("trace", "clues", "n"), [("none", (24, 40), 400), ("shortcut", (30, 40), 50), ("full", (26, 40), 2000)]
)
def test_length_stats_match_samples(trace: str, clues: tuple[int, int], n: int) -> None:
    cfg = SudokuConfig(clues=clues, trace=trace, tries=60)
    ex = sample(cfg, 2, n)
    t = ex.lengths.astype(np.float64)
    mean, second = cfg.length_stats("train")
    assert math.isclose(mean, t.mean(), rel_tol=0.1 if trace == "full" else 0.02)
    assert math.isclose(second, (t * (t + 1)).mean(), rel_tol=0.1 if trace == "full" else 0.04)
    if trace == "shortcut":
        assert (mean, second) == (658, 658 * 659) and (t == 658).all()


# ---- end to end ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_example_spec_trains_and_evaluates(tmp_path, one_thread) -> None:
    from schemas import load_spec

    spec = load_spec(
        "specs/sudoku.yaml",
        [
            f"run.output={tmp_path}",
            "stages.train.schedule.steps=4",
            "stages.train.schedule.warmup=1",
            "stages.train.batch.global=4",
            "stages.train.logging.every=2",
            "stages.train.evals.0.every=4",
            "stages.train.evals.0.examples=8",
            "stages.train.model.dim=32",
            "stages.train.model.ffn.hidden=64",
        ],
    )
    _, rows = train_in_process(spec)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses and all(math.isfinite(x) and 0 < x < 2 * math.log(109) for x in losses)
    evals = [r for r in rows if "acc/eval" in r]
    assert evals
    assert rows[-1]["step"] == 4
