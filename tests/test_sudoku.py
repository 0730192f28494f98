"""Property tests of the sudoku generator (To Backtrack or Not, docs/papers/backtrack.md).

Hypothesis draws the config (clue range, trace kind, token limit), the number of examples and the seed;
the tests check the token format, the lengths and their bounds, the answer mask, unique solutions, traces
that replay to the solution, the shortcut as the full trace without reverted branches, the verifier and
the split, plus the strategies one by one on hand-made candidate grids and a short training run. The bank
tests check that its examples are symmetries of its base puzzles with unique solutions, that train and eval
banks are disjoint, that banks are the same in every process and that a damaged cache file is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(autouse=True, scope="module")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Banks of these tests live in a temporary cache, not the user's."""
    mp = pytest.MonkeyPatch()
    where = tmp_path_factory.mktemp("engine_cache")
    mp.setenv("ENGINE_CACHE", str(where))
    yield where
    S.save_banks()
    S.clear_banks()
    mp.undo()


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
    assert set(a.meta) == {"clues", "hardest", "guesses", "puzzle", "solution", "base"}
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
def test_without_a_bank_train_and_eval_puzzles_lie_in_disjoint_halves(
    cfg: SudokuConfig, seed: int, n: int
) -> None:
    cfg = cfg.model_copy(update={"bank": 0})
    for k, split in enumerate(cfg.SPLITS):
        ex = sample(cfg, seed, n, split)
        assert all(S.split_of(p.tolist()) == k for p in ex.meta["puzzle"])
        assert (ex.meta["base"] == -1).all()


def test_bank_0_is_the_generator_before_banks() -> None:
    """Digests of batches recorded with the generator of commit 2bf1dbb (a fresh puzzle per example)."""
    cfg = SudokuConfig(clues=(26, 32), trace="full", bank=0)
    for split, digest in (("train", "515fb389a78a199b"), ("eval", "0342b07936e580f8")):
        tokens = sample(cfg, 2026, 6, split).tokens
        assert hashlib.blake2b(tokens.tobytes(), digest_size=8).hexdigest() == digest


# ---- the bank ------------------------------------------------------------------------------------------


def invariant(puzzle: np.ndarray) -> tuple:
    """A fingerprint that every transform keeps: per given, the givens in its row and column (unordered, as
    transposition swaps them), in its box and with its digit; sorted."""
    g = np.asarray(puzzle).reshape(9, 9)
    given = g > 0
    rows, cols = given.sum(1), given.sum(0)
    boxes = given.reshape(3, 3, 3, 3).sum((1, 3))
    digits = np.bincount(g.reshape(-1), minlength=10)
    return tuple(
        sorted(
            (min(rows[r], cols[c]), max(rows[r], cols[c]), boxes[r // 3, c // 3], digits[g[r, c]])
            for r, c in zip(*np.nonzero(given), strict=True)
        )
    )


@FAST
@given(seed=SEEDS, clues=st.integers(24, 40))
def test_transforms_keep_grids_valid_and_puzzles_unique(seed: int, clues: int) -> None:
    rng = counter_rng(seed)
    puzzle, solution = (np.array(a, dtype=np.int8) for a in S.make_puzzle(rng, clues, 20, 40))
    a, b = counter_rng(seed, 1), counter_rng(seed, 1)  # the same transform for the puzzle and its solution
    p, s = S.transform(puzzle, a), S.transform(solution, b)
    assert S.valid_solution(s.tolist(), p.tolist()) and S.count_solutions(p.tolist(), 2) == 1
    assert S.solve(p.tolist())[0] == s.tolist() and invariant(p) == invariant(puzzle)
    assert sorted(np.bincount(p, minlength=10)) == sorted(np.bincount(puzzle, minlength=10))
    assert (p > 0).sum() == (puzzle > 0).sum()


def test_transforms_reach_the_whole_group() -> None:
    """Each transform maps lines to lines and boxes to boxes; digit relabelling, moves of rows within bands and
    of whole bands (columns and stacks likewise) and transposition all occur, the moves not always."""
    seen: dict[str, set[bool]] = {k: set() for k in ("relabel", "row", "band", "col", "stack", "transpose")}
    for k in range(60):
        to = np.zeros(81, dtype=np.int64)  # where transform k sends each cell
        for j in range(81):
            one = np.zeros(81, dtype=np.int8)
            one[j] = 1
            to[j] = int(np.flatnonzero(S.transform(one, counter_rng(k)))[0])
        digits = [int(S.transform(np.full(81, v, np.int8), counter_rng(k))[0]) for v in range(1, 10)]
        assert sorted(digits) == list(range(1, 10))
        r, c = to // 9, to % 9
        transposed = len(set(r[:9].tolist())) == 9  # row 0 went to a column
        if transposed:
            r, c = c, r
        assert all(len(set(r[list(u)].tolist())) == 1 for u in S.UNITS[:9])  # rows stay rows
        assert all(len(set(c[list(u)].tolist())) == 1 for u in S.UNITS[9:18])  # columns stay columns
        assert all(len({int(to[i]) // 27 * 3 + int(to[i]) % 9 // 3 for i in u}) == 1 for u in S.UNITS[18:])
        for name, moved in (
            ("relabel", digits != list(range(1, 10))),
            ("row", r[0] % 3 != 0),
            ("band", r[0] // 3 != 0),
            ("col", c[0] % 3 != 0),
            ("stack", c[0] // 3 != 0),
            ("transpose", transposed),
        ):
            seen[name].add(bool(moved))
    relabel = seen.pop("relabel")
    assert relabel == {True} and all(v == {False, True} for v in seen.values()), seen  # 1 in 9! keeps digits


@pytest.mark.parametrize("split", ["train", "eval"])
def test_bank_examples_are_symmetries_of_their_split_bank_with_unique_solutions(split: str) -> None:
    cfg = SudokuConfig(clues=(30, 31), bank=3, trace="full")
    ex = sample(cfg, 5, 24, split)
    which, other = cfg.SPLITS.index(split), 1 - cfg.SPLITS.index(split)
    assert set(ex.meta["base"].tolist()) <= {0, 1, 2}
    for i in range(len(ex)):
        puzzle, solution = ex.meta["puzzle"][i].tolist(), ex.meta["solution"][i].tolist()
        assert S.count_solutions(puzzle, 2) == 1 and S.valid_solution(solution, puzzle)
        clues = int(ex.meta["clues"][i])
        mine = S.bank(clues, which, cfg.tries, 31).puzzle(int(ex.meta["base"][i]))
        theirs = [S.bank(clues, other, cfg.tries, 31).puzzle(k) for k in range(3)]
        assert invariant(np.array(puzzle)) == invariant(mine)
        assert invariant(mine) not in {invariant(p) for p in theirs}  # never a base of the other split
    assert len({tuple(p) for p in ex.meta["puzzle"].tolist()}) == len(ex)  # 6 bases, 24 distinct puzzles


def test_banks_are_the_same_in_every_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bank depends on the config alone: rebuilt from nothing, or read back from disk, it is the same."""
    cfg = SudokuConfig(clues=(33, 34), bank=4)
    a = sample(cfg, 9, 12)
    S.save_banks()
    S.clear_banks()
    b = sample(cfg, 9, 12)  # read from disk
    monkeypatch.setenv("ENGINE_CACHE", str(tmp_path))
    c = sample(cfg, 9, 12)  # made again in an empty cache
    assert identical(a, b) and identical(a, c) and not identical(a, sample(cfg, 10, 12))
    assert list(tmp_path.glob("sudoku/*.npz")), "the bank was saved"
    other = SudokuConfig(clues=(33, 34), bank=4, tries=7)  # another key: other puzzles
    assert not np.array_equal(sample(other, 9, 12).meta["puzzle"], a.meta["puzzle"])


def test_a_damaged_cache_file_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ENGINE_CACHE", str(tmp_path))
    bank = S.bank(30, 0, 5, 30)
    made = {k: bank.puzzle(k).copy() for k in range(4)}
    bank.save()
    path = bank.path
    assert path.exists() and S.Bank(30, 0, 5, 30).puzzles.keys() == made.keys()
    good = path.read_bytes()
    with np.load(path) as f:
        fields = dict(f)

    def damaged(**change: np.ndarray) -> None:
        with open(path, "wb") as f:
            np.savez(f, **{**fields, **change})

    tampered = fields["puzzles"].copy()
    tampered[0, np.argmax(tampered[0] == 0)] = 1  # one more given: the checksum no longer matches
    cases = [
        lambda: path.write_bytes(good[: len(good) // 2]),  # torn write
        lambda: path.write_bytes(b"not a bank"),
        lambda: damaged(puzzles=tampered),
        lambda: damaged(key=np.array("0" * 32)),
    ]
    for damage in cases:
        damage()
        S.clear_banks()
        with caplog.at_level(logging.WARNING, logger="engine"):
            fresh = S.bank(30, 0, 5, 30)
        assert fresh.puzzles == {} and "rebuilding it" in caplog.text
        caplog.clear()
        assert all(np.array_equal(fresh.puzzle(k), made[k]) for k in made)  # made again, the same
        fresh.save()
        assert S.Bank(30, 0, 5, 30).puzzles.keys() == made.keys()  # the file is whole again


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
