"""Sudoku with solver traces (docs/papers/backtrack.md): prompt = the givens, answer = trace + grid.

Our own generator (the paper's rated dataset cannot be downloaded). A base puzzle is made by

1. a full grid by randomised backtracking (row-major, a random digit order per cell);
2. givens removed in a random order while the solution stays unique, until the clue count drawn from
   `clues` is reached; while a pass is stuck above it, up to `tries` local-search rounds put back two
   removed givens and run a new pass. Uniqueness: is there a solution of the smaller puzzle that differs
   from the grid at the removed cell? A bitmask search (singles propagation, fewest-candidate branching,
   the grid's own digit first) answers it; every alternative found is kept as a deadly set (cells that can
   all change at once), with the grid's two-digit unavoidable sets, so a removal that would leave one of
   them without a given is refused without a search;
3. with a bank (`bank` > 0, the default): base puzzles are made once per bank slot, slot k of clue count c
   of a split under the counter key (hash of c, the split, `tries` and the high end of `clues`; k), so every
   rank, process and resumed run has the same bank; the in-process `Bank` keeps them, and a file per bank
   under `cache_dir()` (checked against its key and a checksum, written to a temporary file and renamed)
   keeps them across processes. An example draws a slot of its split's bank, then a random element of the
   group of transforms that keep a sudoku valid (digits relabelled, rows permuted within bands, bands
   permuted, columns within stacks, stacks, transposition: 9! * 6^8 * 2 = 1.2e12 elements) and applies it.
   Train and eval banks are made under different keys: they share no base puzzle, so no puzzle of one is a
   transform of a puzzle of the other (but for a chance coincidence of two random puzzles). Proving
   uniqueness is 90% of the cost of a fresh puzzle; a transform keeps it, so a drawn example costs only its
   solve. Without a bank (`bank: 0`): a fresh base puzzle per example, its digits relabelled at random
   until a hash of the givens falls in the split's half;
4. the strategy solver of the paper: LoneSingle, HiddenSingle, NakedPair, NakedTriplet, LockedCandidate,
   XYWing, UniqueRectangle, always the simplest that applies, then a guess on the fewest-candidate cell
   (lowest digit first) with backtracking. It writes the full trace; the shortcut trace drops reverted
   branches (what the paper's `convert_full_trace_shortcut_solution` keeps: the surviving assignments).

Tokens (109, the paper's set in our order): 0 MASK (= PAD), 1 START (= BOS), 2 END (= EOS), 3-12 digits
0-9, 13-18 `original solving guess revert nocand invalid`, 19-22 `= : [ ]`, 23+9r+c the cell `(r, c)`,
104-108 `, n none SOL_S SOL_E`. One example (trace shortcut), lines joined by the newline token `n`:

    START original : n (0, 1) = 5 n (0, 4) = 2 n ... solving n          <- prompt: the givens, row-major
    (0, 0) = 3 n (0, 2) = 7 n ...                                         <- trace (81 - clues lines)
    SOL_S n (0, 0) = 3 n (0, 1) = 5 n ... (8, 8) = 4 n SOL_E END          <- answer: 81 lines, row-major

`engine sample` shows one with a full trace (most assignments elided; the shortcut drops the reverted branch):

    sudoku: 26 clues, hardest strategy guess, 1 guesses, 757 tokens (full trace)
    puzzle                  answer
    7 . . | . 3 . | . . 2   7 8 9 | 1 3 4 | 5 6 2
    . . . | . 6 . | . . .   4 3 2 | 7 6 5 | 1 9 8
    . . 6 | 8 . 9 | 4 3 .   5 1 6 | 8 2 9 | 4 3 7
    ------+-------+------   ------+-------+------
    . . . | 3 4 . | . 1 5   8 6 7 | 3 4 2 | 9 1 5
    . 5 3 | . 7 . | 8 . .   9 5 3 | 6 7 1 | 8 2 4
    2 . . | . . . | . . 3   2 4 1 | 5 9 8 | 6 7 3
    ------+-------+------   ------+-------+------
    . 2 . | . 8 6 | 7 . .   3 2 5 | 9 8 6 | 7 4 1
    . . . | 2 . . | . . .   1 9 4 | 2 5 7 | 3 8 6
    . . 8 | . . . | . . 9   6 7 8 | 4 1 3 | 2 5 9
    trace (75 lines):
      (2, 1) = 1
      ...
      (5, 7) = 7
      guess: (0, 2) [4, 9] = 4
      (0, 2) = 4
      (5, 1) = 4
      ...
      (8, 5) = 3
      invalid
      revert: (0, 2) [4, 9] = none
      guess: (0, 2) [4, 9] = 9
      (0, 2) = 9
      ...

A full trace adds `guess: (r, c) [2, 7] = 2` (followed by that assignment), `nocand: (r, c)` (the cell has
no candidate left), `invalid` (a digit has no place in a unit) and `revert: (r, c) [2, 7] = none` (undo
back to the matching guess). The loss covers everything after the prompt, END included. The verifier
checks that the grid after SOL_S is complete, free of conflicts and equal to the givens where given.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import multiprocessing.util
import os
import tempfile
from collections.abc import Sequence
from itertools import chain, combinations
from pathlib import Path

import numpy as np

from schemas.data import Sudoku as SudokuConfig

from .base import Example, Examples, UnknownSplit, Vocab
from .stream import counter_rng

VOCAB = Vocab(SudokuConfig.VOCAB)
PAD, START, END = VOCAB.pad, VOCAB.bos, VOCAB.eos
DIGIT0 = VOCAB.id("0")  # digit v is DIGIT0 + v
ORIGINAL, SOLVING, GUESS, REVERT, NOCAND, INVALID = (
    VOCAB.id(t) for t in ("original", "solving", "guess", "revert", "nocand", "invalid")
)
EQ, COLON, LBR, RBR, COMMA, NL, NONE, SOL_S, SOL_E = (
    VOCAB.id(t) for t in ("=", ":", "[", "]", ",", "n", "none", "SOL_S", "SOL_E")
)
CELL0 = VOCAB.id("(0, 0)")  # cell (r, c) is CELL0 + 9r + c
STRATEGIES = SudokuConfig.STRATEGIES  # meta["hardest"] indexes this tuple; the last entry is guessing
log = logging.getLogger("engine")

# ---- grid geometry: cells 0..80 row-major, digit v as bit v-1 of a 9-bit mask --------------------------

ALL = 0x1FF
R = tuple(i // 9 for i in range(81))
C = tuple(i % 9 for i in range(81))
B = tuple(3 * (i // 27) + (i % 9) // 3 for i in range(81))
UNITS = tuple(
    [tuple(9 * r + c for c in range(9)) for r in range(9)]
    + [tuple(9 * r + c for r in range(9)) for c in range(9)]
    + [tuple(9 * (3 * (b // 3) + k // 3) + 3 * (b % 3) + k % 3 for k in range(9)) for b in range(9)]
)
PEERS = tuple(tuple(sorted({p for u in UNITS if i in u for p in u} - {i})) for i in range(81))
PEERSET = tuple(frozenset(p) for p in PEERS)
CELL_UNITS = tuple(tuple(u for u in UNITS if i in u) for i in range(81))
UNIT_MASK = tuple(1 << R[i] | 1 << (9 + C[i]) | 1 << (18 + B[i]) for i in range(81))  # bits of its 3 units
UNIT_AT = {1 << k: u for k, u in enumerate(UNITS)}
EVERY_UNIT = (1 << 27) - 1
BIT = (0,) + tuple(1 << (v - 1) for v in range(1, 10))  # BIT[v] for digit v
POP = tuple(m.bit_count() for m in range(512))
DIGITS = tuple(tuple(v for v in range(1, 10) if m >> (v - 1) & 1) for m in range(512))
DIGIT = tuple(DIGITS[m][0] if POP[m] == 1 else 0 for m in range(512))  # the digit of a single-bit mask
# `[ 2 , 7 ]` for a candidate mask
CANDS = tuple((LBR, *[t for v in DIGITS[m] for t in (COMMA, DIGIT0 + v)][1:], RBR) for m in range(512))
LINE = tuple(tuple((CELL0 + i, EQ, DIGIT0 + v, NL) for v in range(10)) for i in range(81))  # `(r, c) = v n`
LONE, HIDDEN, PAIR, TRIPLE, LOCKED, XYWING, RECTANGLE, GUESSING = range(8)


# ---- uniqueness search (generation) --------------------------------------------------------------------


def _propagate(cand: list[int], todo: list[int], dirty: int = EVERY_UNIT) -> bool:
    """Naked and hidden singles to a fixed point; `todo` holds single cells not yet removed from their peers.

    `cand` [81] candidate masks is changed in place; `dirty` (27 bits) marks the units to scan for hidden
    singles (a unit whose cells did not change since its last scan has none). False on a contradiction.
    """
    pop, push = todo.pop, todo.append
    while True:
        while todo:
            i = pop()
            m = cand[i]
            for p in PEERS[i]:
                q = cand[p]
                if q & m:
                    q ^= m
                    if not q:
                        return False
                    cand[p] = q
                    dirty |= UNIT_MASK[p]
                    if not q & (q - 1):
                        push(p)
        scan, dirty = dirty, 0
        while scan:
            low = scan & -scan
            scan ^= low
            u = UNIT_AT[low]
            once = twice = 0
            for c in u:
                m = cand[c]
                twice |= once & m
                once |= m
            if once != ALL:
                return False
            h = once & ~twice
            if h:
                for c in u:
                    m = cand[c]
                    if m & h and m & (m - 1):  # an open cell holding a digit found nowhere else in u
                        m &= h
                        if m & (m - 1):
                            return False
                        cand[c] = m
                        push(c)
                        dirty |= UNIT_MASK[c]
        if not todo:
            return True


def _branch(cand: list[int]) -> int:
    """The open cell with the fewest candidates (lowest index on ties), or -1 when every cell is single."""
    best, fewest = -1, 10
    for i in range(81):
        m = cand[i]
        if m & (m - 1):
            k = POP[m]
            if k < fewest:
                best, fewest = i, k
                if k == 2:
                    break
    return best


def _any_solution(cand: list[int], prefer: Sequence[int]) -> list[int] | None:
    """A solution (candidate masks, all single) under propagated `cand`, trying `prefer`'s digit first."""
    i = _branch(cand)
    if i < 0:
        return cand
    m = cand[i]
    first = BIT[prefer[i]] & m
    for bit in (first, *(BIT[v] for v in DIGITS[m & ~first])) if first else (BIT[v] for v in DIGITS[m]):
        nxt = cand[:]
        nxt[i] = bit
        if _propagate(nxt, [i], UNIT_MASK[i]):  # `cand` is a fixed point: only i's units change first
            found = _any_solution(nxt, prefer)
            if found is not None:
                return found
    return None


def _count(cand: list[int], limit: int) -> int:
    """Solutions under propagated `cand`, counted up to `limit`."""
    i = _branch(cand)
    if i < 0:
        return 1
    n = 0
    for v in DIGITS[cand[i]]:
        nxt = cand[:]
        nxt[i] = BIT[v]
        if _propagate(nxt, [i], UNIT_MASK[i]):
            n += _count(nxt, limit - n)
            if n >= limit:
                break
    return n


def _candidates(grid: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """Candidate masks of a grid (0 = empty) and its open cells with one candidate; None on a clash."""
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9
    for i, v in enumerate(grid):
        if v:
            b = BIT[v]
            if (rows[R[i]] | cols[C[i]] | boxes[B[i]]) & b:
                return None
            rows[R[i]] |= b
            cols[C[i]] |= b
            boxes[B[i]] |= b
    cand, todo = [0] * 81, []
    for i, v in enumerate(grid):
        if v:
            cand[i] = BIT[v]
        else:
            m = ALL & ~(rows[R[i]] | cols[C[i]] | boxes[B[i]])
            if not m:
                return None
            cand[i] = m
            if not m & (m - 1):
                todo.append(i)
    return cand, todo


def count_solutions(grid: Sequence[int], limit: int = 2) -> int:
    """Solutions of a grid of 81 digits (0 = empty), counted up to `limit` (a bitmask search)."""
    start = _candidates(grid)
    if start is None or not _propagate(*start):
        return 0
    return _count(start[0], limit)


# ---- generation ----------------------------------------------------------------------------------------


def fill_grid(order: np.ndarray) -> list[int]:
    """A full grid by randomised backtracking, row-major; `order` [81, 9] holds each cell's digit order."""
    order = order.tolist()
    grid = [0] * 81
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9

    def place(i: int) -> bool:
        if i == 81:
            return True
        r, c, b = R[i], C[i], B[i]
        used = rows[r] | cols[c] | boxes[b]
        for v in order[i]:
            bit = BIT[v]
            if not used & bit:
                rows[r] |= bit
                cols[c] |= bit
                boxes[b] |= bit
                if place(i + 1):
                    grid[i] = v
                    return True
                rows[r] ^= bit
                cols[c] ^= bit
                boxes[b] ^= bit
        return False

    place(0)
    return grid


def pair_sets(solution: Sequence[int]) -> list[int]:
    """The two-digit unavoidable sets of a full grid, as 81-bit cell masks.

    For digits a, b the cells holding them split into cycles, linked by the a- and b-cell of each unit;
    swapping a and b on one cycle gives another valid grid, so a puzzle must keep a given in every cycle.
    """
    where = [[0] * 27 for _ in range(10)]  # where[v][unit] = the cell of digit v in that unit
    for i, v in enumerate(solution):
        where[v][R[i]] = where[v][9 + C[i]] = where[v][18 + B[i]] = i
    sets = []
    for a in range(1, 10):
        wa = where[a]
        for b in range(a + 1, 10):
            wb = where[b]
            link: dict[int, list[int]] = {}
            for u in range(27):
                link.setdefault(wa[u], []).append(wb[u])
                link.setdefault(wb[u], []).append(wa[u])
            seen = 0
            for start in link:
                if seen >> start & 1:
                    continue
                mask, stack = 1 << start, [start]
                while stack:
                    for nxt in link[stack.pop()]:
                        if not mask >> nxt & 1:
                            mask |= 1 << nxt
                            stack.append(nxt)
                seen |= mask
                sets.append(mask)
    return sets


class DeadlySets:
    """Known deadly sets of one full grid (cells that can all change at once), indexed by cell.

    A puzzle is unique only if it keeps a given in each; alternatives found by the search are added, and the
    grid's two-digit unavoidable sets once the first alternative shows that removals start to fail.
    """

    def __init__(self, solution: list[int]):
        self.solution = solution
        self.by_cell: list[list[int]] = [[] for _ in range(81)]
        self.primed = False

    def add(self, d: int) -> None:
        """Record the deadly set with cell mask d under each of its cells."""
        rest = d
        while rest:
            low = rest & -rest
            self.by_cell[low.bit_length() - 1].append(d)
            rest ^= low

    def prime(self) -> None:
        """Add the grid's two-digit unavoidable sets (once)."""
        if not self.primed:
            self.primed = True
            for d in pair_sets(self.solution):
                self.add(d)


def _reduce(grid: list[int], order: list[int], target: int, deadly: DeadlySets) -> tuple[list[int], int]:
    """One removal pass over a unique puzzle: givens go in `order` while it stays unique, down to `target`.

    Returns the puzzle (0 = empty) and its clue count (above `target` when the pass got stuck).
    """
    solution, by_cell = deadly.solution, deadly.by_cell
    grid = grid[:]
    removed, clues = 0, 0
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9  # digits given per unit
    for i, v in enumerate(grid):
        if v:
            b = BIT[v]
            rows[R[i]] |= b
            cols[C[i]] |= b
            boxes[B[i]] |= b
            clues += 1
        else:
            removed |= 1 << i
    if clues <= target:
        return grid, clues
    for i in order:
        gone = removed | 1 << i
        if any(not d & ~gone for d in by_cell[i]):  # a known deadly set would be left without a given
            continue
        v = grid[i]
        b = BIT[v]
        r, c, x = R[i], C[i], B[i]
        rows[r] ^= b
        cols[c] ^= b
        boxes[x] ^= b
        grid[i] = 0
        if ALL & ~(rows[r] | cols[c] | boxes[x]) != b and not _hidden_given(grid, rows, cols, boxes, i, b):
            other = _alternative(
                grid, rows, cols, boxes, i, b, solution
            )  # not a single of the givens: search
            if other is not None:
                grid[i] = v
                rows[r] |= b
                cols[c] |= b
                boxes[x] |= b
                d = 0
                for j in range(81):
                    if other[j] != BIT[solution[j]]:
                        d |= 1 << j
                deadly.add(d)
                deadly.prime()
                continue
        removed = gone
        clues -= 1
        if clues == target:
            break
    return grid, clues


def _hidden_given(
    grid: list[int], rows: list[int], cols: list[int], boxes: list[int], i: int, b: int
) -> bool:
    """Whether the digit of mask b has no other open cell than i in one of i's units, given the givens."""
    for u in CELL_UNITS[i]:
        for j in u:
            if j != i and not grid[j] and not (rows[R[j]] | cols[C[j]] | boxes[B[j]]) & b:
                break
        else:
            return True
    return False


def _alternative(
    grid: list[int], rows: list[int], cols: list[int], boxes: list[int], i: int, b: int, solution: list[int]
) -> list[int] | None:
    """A solution of `grid` whose cell i is not the digit of mask b (candidate masks), or None if unique."""
    cand, todo = [0] * 81, []
    for j, v in enumerate(grid):
        if v:
            cand[j] = BIT[v]
        else:
            m = ALL & ~(rows[R[j]] | cols[C[j]] | boxes[B[j]])
            if j == i:
                m &= ~b
            if not m:
                return None
            cand[j] = m
            if not m & (m - 1):
                todo.append(j)
    if not _propagate(cand, todo):
        return None
    return _any_solution(cand, solution)


def make_puzzle(rng: np.random.Generator, target: int, tries: int, most: int) -> tuple[list[int], list[int]]:
    """A puzzle with a unique solution and `target` clues (or the fewest reached, at most `most`).

    One removal pass in a random order over a random grid; while it is stuck above `target`, up to `tries`
    rounds put back two removed givens at random and run a new pass over the givens (a round is kept when it
    ends with no more clues than before). Past `tries`, rounds go on only while the count exceeds `most`.
    Returns (puzzle, solution) as lists of 81 digits, 0 = empty.
    """
    solution = fill_grid(rng.random((81, 9)).argsort(axis=1) + 1)
    deadly = DeadlySets(solution)
    puzzle, clues = _reduce(solution, rng.permutation(81).tolist(), target, deadly)
    rounds = 0
    while clues > target and (rounds < tries or clues > most):
        rounds += 1
        order = rng.permutation(81).tolist()
        trial = puzzle[:]
        back = 0
        for i in reversed(order):  # the last two empty cells of the new order: tried last, so kept longest
            if not trial[i]:
                trial[i] = solution[i]
                back += 1
                if back == 2:
                    break
        trial, n = _reduce(trial, [i for i in order if trial[i]], target, deadly)
        if n <= clues:
            puzzle, clues = trial, n
    return puzzle, solution


# ---- the bank: base puzzles made once, drawn under random symmetries ----------------------------------

BANK_VERSION = 1  # bump when make_puzzle or the key changes what a slot holds: old cache files then go unused


def cache_dir() -> Path:
    """Where banks are kept on disk: $ENGINE_CACHE/sudoku, else $XDG_CACHE_HOME/engine/sudoku (~/.cache)."""
    root = os.environ.get("ENGINE_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "engine")
    return Path(root) / "sudoku"


class Bank:
    """Base puzzles of one clue count and split: slot k is make_puzzle under the counter key (key, k).

    A slot is a pure function of (clues, split, tries, most), never of the run's seed, rank or world size, so
    every process that draws it makes the same puzzle. Slots are made on first draw, kept in memory and saved to
    `cache_dir()/<key>.npz` (merged with what other processes saved, written to a temporary file and renamed
    into place); a file that does not match its key and checksum is ignored and overwritten.
    """

    def __init__(self, clues: int, split: int, tries: int, most: int):
        self.clues, self.split, self.tries, self.most = clues, split, tries, most
        text = f"sudoku-bank v{BANK_VERSION} clues={clues} split={split} tries={tries} most={most}"
        self.key = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        self.path = cache_dir() / f"{self.key}.npz"
        self.puzzles = self.load()
        self.saved = len(self.puzzles)

    def puzzle(self, slot: int) -> np.ndarray:
        """Base puzzle `slot` [81] int8 (0 = empty), made now if no process made it before."""
        p = self.puzzles.get(slot)
        if p is None:
            made = make_puzzle(counter_rng(int(self.key, 16), slot), self.clues, self.tries, self.most)[0]
            p = self.puzzles[slot] = np.array(made, dtype=np.int8)
        return p

    def _checksum(self, slots: np.ndarray, puzzles: np.ndarray) -> np.ndarray:
        """16-byte digest of a file's slots and puzzles, bound to the bank's key."""
        h = hashlib.blake2b(self.key.encode(), digest_size=16)
        h.update(slots.astype("<i8").tobytes())
        h.update(puzzles.astype(np.int8).tobytes())
        return np.frombuffer(h.digest(), dtype=np.uint8)

    def load(self) -> dict[int, np.ndarray]:
        """The slots saved on disk; none when the file is missing, unreadable or does not check out."""
        try:
            with np.load(self.path, allow_pickle=False) as f:
                key, slots, puzzles, digest = str(f["key"]), f["slots"], f["puzzles"], f["checksum"]
        except FileNotFoundError:
            return {}
        except Exception as e:  # a torn, truncated or foreign file: rebuilt, never trusted
            log.warning(
                "sudoku bank %s is unreadable (%s: %s); rebuilding it", self.path, type(e).__name__, e
            )
            return {}
        ok = (
            key == self.key
            and slots.ndim == 1
            and puzzles.shape == (len(slots), 81)
            and np.array_equal(digest, self._checksum(slots, puzzles))
        )
        if ok:
            n = (puzzles > 0).sum(1)
            ok = bool(
                ((puzzles >= 0) & (puzzles <= 9)).all() and ((n >= self.clues) & (n <= self.most)).all()
            )
        if not ok:
            log.warning("sudoku bank %s does not match its key or checksum; rebuilding it", self.path)
            return {}
        return {int(s): p for s, p in zip(slots.tolist(), puzzles.astype(np.int8), strict=True)}

    def save(self) -> None:
        """Write every slot known here or on disk to the file, atomically (temporary file, then rename)."""
        merged = {**self.load(), **self.puzzles}
        if not merged:
            return
        slots = np.array(sorted(merged), dtype=np.int64)  # [m]
        puzzles = np.stack([merged[s] for s in sorted(merged)]).astype(np.int8)  # [m, 81]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.key}.", suffix=".npz", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    checksum = self._checksum(slots, puzzles)
                    np.savez(f, key=np.array(self.key), slots=slots, puzzles=puzzles, checksum=checksum)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:  # a read-only or full disk costs only remaking the slots in a later process
            log.warning("cannot save the sudoku bank to %s (%s); it stays in memory", self.path, e)
        self.puzzles.update(merged)
        self.saved = len(self.puzzles)

    def flush(self, size: int) -> None:
        """Save when a quarter more slots than saved (at least 16) are new, or every one of `size` is made."""
        new = len(self.puzzles) - self.saved
        if new > 0 and (new >= max(16, self.saved // 4) or len(self.puzzles) >= size):
            self.save()


_BANKS: dict[
    tuple[int, int, int, int, str], Bank
] = {}  # in-process cache, by (clues, split, tries, most, dir)


def bank(clues: int, split: int, tries: int, most: int) -> Bank:
    """The bank of one clue count and split, shared by every generator of this process."""
    at = (clues, split, tries, most, str(cache_dir()))
    b = _BANKS.get(at)
    if b is None:
        if not _BANKS:  # a process that a multiprocessing worker runs ends by os._exit, past atexit
            multiprocessing.util.Finalize(None, save_banks, exitpriority=10)
        b = _BANKS[at] = Bank(clues, split, tries, most)
    return b


def clear_banks() -> None:
    """Forget the banks held in memory (the files stay): the next draw reads them from disk again."""
    _BANKS.clear()


@atexit.register
def save_banks() -> None:
    """Save every bank with slots not yet on disk (also run when the interpreter or a data worker exits)."""
    for b in _BANKS.values():
        if len(b.puzzles) > b.saved:
            b.save()


def transform(puzzle: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random validity-preserving transform of a grid [81] (0 = empty): digits relabelled, rows within bands,
    bands, columns within stacks and stacks permuted, then transposed with probability 1/2."""
    order = rng.random((2, 4, 3)).argsort(axis=2)  # [rows | cols, band perm + 3 within-band perms, 3]
    lines = 3 * order[:, :1, :].transpose(0, 2, 1) + order[:, 1:, :][np.arange(2)[:, None], order[:, 0, :]]
    relabel = np.concatenate([[0], rng.permutation(9) + 1]).astype(np.int8)  # [10]
    grid = puzzle.reshape(9, 9)[lines[0].reshape(9)][:, lines[1].reshape(9)]
    if rng.integers(2):
        grid = grid.T
    return relabel[grid].reshape(81)


# ---- the strategy solver and its trace -----------------------------------------------------------------


class _Empty(Exception):
    """A cell lost its last candidate (the solver writes `nocand` for it)."""

    def __init__(self, cell: int):
        self.cell = cell


def _assign(cand: list[int], val: list[int], i: int, v: int, out: list[tuple[int, ...]]) -> int:
    """Write `(r, c) = v`, set it, remove v from the peers; the peer left without candidates, or -1."""
    b = BIT[v]
    val[i] = v
    cand[i] = b
    out.append((CELL0 + i, EQ, DIGIT0 + v, NL))
    for p in PEERS[i]:
        q = cand[p]
        if q & b:
            q ^= b
            cand[p] = q
            if not q:
                return p
    return -1


def _drop(cand: list[int], val: list[int], cells: Sequence[int], mask: int, keep: Sequence[int] = ()) -> bool:
    """Remove `mask` from the open `cells` not in `keep`; True if any went (_Empty when a cell empties)."""
    changed = False
    for c in cells:
        if not val[c] and cand[c] & mask and c not in keep:
            q = cand[c] & ~mask
            if not q:
                raise _Empty(c)
            cand[c] = q
            changed = True
    return changed


def _hidden_singles(cand: list[int], val: list[int], out: list[tuple[int, ...]]) -> int:
    """Place each digit with one open cell left in a unit; the count placed, -1 after a contradiction line."""
    placed = 0
    for u in UNITS:
        once = twice = 0
        for c in u:
            m = cand[c]
            twice |= once & m
            once |= m
        if once != ALL:  # a digit with no place in this unit
            out.append((INVALID, NL))
            return -1
        h = once & ~twice
        if h:
            for c in u:
                if not val[c]:
                    m = cand[c] & h
                    if m:
                        if m & (m - 1):  # two digits that both need this cell
                            out.append((INVALID, NL))
                            return -1
                        p = _assign(cand, val, c, DIGIT[m], out)
                        if p >= 0:
                            out.append((NOCAND, COLON, CELL0 + p, NL))
                            return -1
                        placed += 1
    return placed


def _naked_pair(cand: list[int], val: list[int]) -> bool:
    """Two open cells of a unit with the same two candidates: no other cell of the unit takes those digits."""
    for u in UNITS:
        seen: dict[int, int] = {}
        for c in u:
            m = cand[c]
            if not val[c] and POP[m] == 2:
                if m in seen:
                    if _drop(cand, val, u, m, (c, seen[m])):
                        return True
                else:
                    seen[m] = c
    return False


def _naked_triplet(cand: list[int], val: list[int]) -> bool:
    """Three open cells of a unit with three candidates between them: no other cell takes those digits."""
    for u in UNITS:
        small = [c for c in u if not val[c] and POP[cand[c]] <= 3]
        for trio in combinations(small, 3):
            m = cand[trio[0]] | cand[trio[1]] | cand[trio[2]]
            if POP[m] == 3 and _drop(cand, val, u, m, trio):
                return True
    return False


def _locked_candidate(cand: list[int], val: list[int]) -> bool:
    """A digit confined to one line within a box (pointing) or to one box within a line (claiming)."""
    for k, u in enumerate(UNITS):
        free = [(c, cand[c]) for c in u if not val[c]]
        once = twice = 0
        for _, m in free:
            twice |= once & m
            once |= m
        while twice:  # the digits with two or more open cells in u, lowest first
            b = twice & -twice
            twice ^= b
            where, lines = [], 0
            for c, m in free:
                if m & b:
                    where.append(c)
                    lines |= UNIT_MASK[c]
            if k >= 18:  # a box: pointing along a row or a column
                for first in (0, 9):
                    one = lines >> first & 0x1FF
                    if not one & (one - 1) and _drop(
                        cand, val, UNITS[first + one.bit_length() - 1], b, where
                    ):
                        return True
            else:  # a line: claiming within a box
                one = lines >> 18
                if not one & (one - 1) and _drop(cand, val, UNITS[17 + one.bit_length()], b, where):
                    return True
    return False


def _xy_wing(cand: list[int], val: list[int]) -> bool:
    """Pivot {x,y} seeing wings {x,z} and {y,z}: a cell seeing both wings cannot be z."""
    pairs = [i for i in range(81) if not val[i] and POP[cand[i]] == 2]
    for p in pairs:
        mp = cand[p]
        wings = [a for a in pairs if a in PEERSET[p] and POP[cand[a] & mp] == 1]
        for a, b in combinations(wings, 2):
            ma, mb = cand[a], cand[b]
            z = ma & mb & ~mp
            if z and ma & mp != mb & mp:
                common = [c for c in PEERS[a] if c in PEERSET[b]]
                if _drop(cand, val, common, z):
                    return True
    return False


def _unique_rectangle(cand: list[int], val: list[int]) -> bool:
    """Type 1: three corners of a two-box rectangle hold only {a,b}; the fourth cannot be a or b."""
    for r1 in range(9):
        for c1, c2 in combinations(range(9), 2):
            i, j = 9 * r1 + c1, 9 * r1 + c2
            m = cand[i]
            if val[i] or val[j] or POP[m] != 2 or cand[j] != m:
                continue
            for r2 in range(9):
                k, q = 9 * r2 + c1, 9 * r2 + c2
                if r2 == r1 or val[k] or val[q] or len({B[i], B[j], B[k], B[q]}) != 2:
                    continue
                for same, other in ((k, q), (q, k)):
                    if cand[same] == m and cand[other] & m == m and cand[other] != m:
                        return _drop(cand, val, (other,), m)
    return False


TECHNIQUES = (
    (PAIR, _naked_pair),
    (TRIPLE, _naked_triplet),
    (LOCKED, _locked_candidate),
    (XYWING, _xy_wing),
    (RECTANGLE, _unique_rectangle),
)


def _ladder(cand: list[int], val: list[int], out: list[tuple[int, ...]], used: list[int]) -> bool:
    """Apply the strategies, always the simplest that applies, until none does; False after a contradiction.

    Placements are written to `out`; `used[0]` keeps the hardest strategy applied.
    """
    while True:
        placed = False
        for i in [i for i in range(81) if not val[i]]:  # LoneSingle, row-major (only i is assigned in turn i)
            m = cand[i]
            if not m & (m - 1):
                p = _assign(cand, val, i, DIGIT[m], out)
                placed = True
                if p >= 0:
                    out.append((NOCAND, COLON, CELL0 + p, NL))
                    return False
        if placed:
            continue
        if 0 not in val:
            return True
        h = _hidden_singles(cand, val, out)
        if h < 0:
            return False
        if h:
            used[0] = max(used[0], HIDDEN)
            continue
        for level, technique in TECHNIQUES:
            try:
                progress = technique(cand, val)
            except _Empty as e:
                out.append((NOCAND, COLON, CELL0 + e.cell, NL))
                return False
            if progress:
                used[0] = max(used[0], level)
                break
        else:
            return True


def _search(cand: list[int], val: list[int], out: list[tuple[int, ...]], used: list[int]) -> list[int] | None:
    """Ladder, then a guess on the fewest-candidate cell (lowest digit first), backtracking; the solution."""
    if not _ladder(cand, val, out, used):
        return None
    best, fewest = -1, 10
    for i in range(81):
        if not val[i]:
            k = POP[cand[i]]
            if k < fewest:
                best, fewest = i, k
                if k == 2:
                    break
    if best < 0:
        return val
    used[0] = GUESSING
    used[1] += 1
    m = cand[best]
    for v in DIGITS[m]:
        out.append((GUESS, COLON, CELL0 + best, *CANDS[m], EQ, DIGIT0 + v, NL))
        c2, v2 = cand[:], val[:]
        p = _assign(c2, v2, best, v, out)
        if p >= 0:
            out.append((NOCAND, COLON, CELL0 + p, NL))
        else:
            found = _search(c2, v2, out, used)
            if found is not None:
                return found
        out.append((REVERT, COLON, CELL0 + best, *CANDS[m], EQ, NONE, NL))
    out.append((NOCAND, COLON, CELL0 + best, NL))  # every candidate of this cell failed
    return None


def solve(puzzle: Sequence[int]) -> tuple[list[int], list[tuple[int, ...]], int, int]:
    """Strategy solver of a unique puzzle (81 digits, 0 = empty): (solution, full trace, hardest, guesses).

    Each trace line is a tuple of token ids ending in the newline token; `hardest` indexes STRATEGIES.
    """
    start = _candidates(puzzle)
    if start is None:
        raise ValueError("the puzzle breaks a sudoku rule")
    cand, val, out, used = start[0], list(puzzle), [], [LONE, 0]
    solution = _search(cand, val, out, used)
    if solution is None:
        raise ValueError("the puzzle has no solution")
    return solution, out, used[0], used[1]


def shortcut(lines: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The full trace without its reverted branches: the assignments that survive (the paper's conversion)."""
    kept: list[tuple[int, ...]] = []
    marks: list[int] = []
    for line in lines:
        head = line[0]
        if head >= CELL0 and head < CELL0 + 81:
            kept.append(line)
        elif head == GUESS:
            marks.append(len(kept))
        elif head == REVERT:
            del kept[marks.pop() :]
    return kept


def replay(puzzle: Sequence[int], lines: Sequence[Sequence[int]]) -> list[int]:
    """The grid a trace leads to: assignments fill empty cells, a guess saves the grid, a revert restores it.

    Raises ValueError when a line assigns a filled cell or reverts a guess it does not match.
    """
    grid = list(puzzle)
    saved: list[tuple[int, list[int]]] = []
    for line in lines:
        head = line[0]
        if CELL0 <= head < CELL0 + 81:
            i = head - CELL0
            if grid[i]:
                raise ValueError(f"cell {i} is assigned twice")
            grid[i] = line[2] - DIGIT0
        elif head == GUESS:
            saved.append((line[2], grid[:]))
        elif head == REVERT:
            cell, grid = saved.pop()
            if cell != line[2]:
                raise ValueError("a revert does not match the open guess")
    return grid


def split_of(puzzle: Sequence[int]) -> int:
    """Which split (index into SPLITS) a puzzle belongs to: one bit of a hash of its givens."""
    return hashlib.blake2b(bytes(puzzle), digest_size=8).digest()[0] & 1


def _lines(tokens: Sequence[int]) -> list[list[int]]:
    """Token ids cut into lines at the newline token (the newline dropped)."""
    lines, line = [], []
    for t in tokens:
        if t == NL:
            lines.append(line)
            line = []
        else:
            line.append(int(t))
    if line:
        lines.append(line)
    return lines


def _text(line: Sequence[int]) -> str:
    """One line as text: `guess: (0, 3) [2, 7] = 2`."""
    s = " ".join(VOCAB.tokens[t] for t in line)
    return s.replace(" :", ":").replace("[ ", "[").replace(" ]", "]").replace(" ,", ",")


def _grid_text(grid: Sequence[int]) -> list[str]:
    """A 9x9 grid as 11 text rows, `.` for empty cells."""
    rows = []
    for r in range(9):
        cells = [str(grid[9 * r + c]) if grid[9 * r + c] else "." for c in range(9)]
        rows.append(" | ".join(" ".join(cells[3 * k : 3 * k + 3]) for k in range(3)))
        if r in (2, 5):
            rows.append("------+-------+------")
    return rows


def givens(prompt: Sequence[int]) -> list[int]:
    """The puzzle (81 digits, 0 = empty) written in a prompt's `(r, c) = v` lines."""
    grid = [0] * 81
    for j in range(len(prompt) - 2):
        t = int(prompt[j])
        if CELL0 <= t < CELL0 + 81 and prompt[j + 1] == EQ:
            grid[t - CELL0] = int(prompt[j + 2]) - DIGIT0
    return grid


def answer_grid(completion: Sequence[int]) -> list[int] | None:
    """The grid between the first SOL_S and the next SOL_E, a `(r, c) = v` line per cell; None if malformed."""
    tokens = [int(t) for t in completion]
    if SOL_S not in tokens:
        return None
    s = tokens.index(SOL_S)
    if SOL_E not in tokens[s:]:
        return None
    grid = [0] * 81
    for line in _lines(tokens[s + 1 : tokens.index(SOL_E, s)]):
        if not line:
            continue
        if len(line) != 3 or not CELL0 <= line[0] < CELL0 + 81 or line[1] != EQ:
            return None
        i, v = line[0] - CELL0, line[2] - DIGIT0
        if grid[i] or not 1 <= v <= 9:
            return None
        grid[i] = v
    return grid


def valid_solution(grid: Sequence[int], puzzle: Sequence[int]) -> bool:
    """Whether `grid` is complete, free of conflicts in rows, columns and boxes, and keeps the givens."""
    if len(grid) != 81 or any(not 1 <= v <= 9 for v in grid):
        return False
    if any(p and p != g for p, g in zip(puzzle, grid, strict=True)):
        return False
    return all(len({grid[c] for c in u}) == 9 for u in UNITS)


REDRAWS = 1000  # draws of a puzzle whose full trace fits max_tokens before giving up


class Sudoku:
    """Generator of sudoku examples: the givens, the solver's trace (full | shortcut | none), the grid."""

    chunk = 1  # key each example, so that no rank makes puzzles (or, with a bank, solves) that it drops

    vocab = VOCAB

    def __init__(self, cfg: SudokuConfig):
        self.cfg = cfg

    def example(
        self, rng: np.random.Generator, clues: int, split: int
    ) -> tuple[list[int], int, list[int], list[int], int, int, int]:
        """One example within max_tokens: (tokens, prompt length, puzzle, solution, hardest, guesses, base slot).

        With a bank: a random slot of the split's bank for `clues` under a random transform (base slot >= 0);
        without (bank 0): a fresh puzzle, its digits relabelled until it hashes into the split (base slot -1).
        """
        cfg = self.cfg
        for _ in range(REDRAWS):  # full traces over max_tokens are redrawn (the validator keeps that rare)
            if cfg.bank:
                slot = int(rng.integers(cfg.bank))
                base = bank(clues, split, cfg.tries, cfg.clues[1]).puzzle(slot)
                mine = transform(base, rng).tolist()
            else:
                slot = -1
                puzzle, _ = make_puzzle(rng, clues, cfg.tries, cfg.clues[1])
                while True:  # relabel the digits until the puzzle hashes into the split
                    relabel = [0, *(rng.permutation(9) + 1).tolist()]
                    mine = [relabel[v] for v in puzzle]
                    if split_of(mine) == split:
                        break
            found, lines, hardest, guesses = solve(mine)
            tokens = [START, ORIGINAL, COLON, NL]
            tokens += chain.from_iterable(LINE[i][v] for i, v in enumerate(mine) if v)
            tokens += (SOLVING, NL)
            prompt = len(tokens)
            if cfg.trace != "none":
                tokens += chain.from_iterable(lines if cfg.trace == "full" else shortcut(lines))
            tokens += (SOL_S, NL)
            tokens += chain.from_iterable(LINE[i][v] for i, v in enumerate(found))
            tokens += (SOL_E, END)
            if len(tokens) <= cfg.max_tokens:
                return tokens, prompt, mine, found, hardest, guesses, slot
        raise ValueError(
            f"no sudoku with {clues} givens fit max_tokens={cfg.max_tokens} in {REDRAWS} draws: every puzzle "
            f"drawn has a longer full trace; raise max_tokens, the low end of clues or bank"
        )

    def sample(
        self, rng: np.random.Generator, n: int, split: str = "train", length: int | None = None
    ) -> Examples:
        """n examples of `split` (train | eval); `length` pins the clue count (inside `clues`)."""
        if split not in self.cfg.SPLITS:
            raise UnknownSplit(f"no split {split!r}; sudoku has {', '.join(self.cfg.SPLITS)}")
        lo, hi = self.cfg.clues
        if length is not None:
            if not lo <= length <= hi:
                raise ValueError(f"clue count {length} lies outside clues [{lo}, {hi}]")
            lo = hi = length
        targets = rng.integers(lo, hi + 1, size=n).tolist()
        which = self.cfg.SPLITS.index(split)
        rows = [self.example(rng, t, which) for t in targets]
        if self.cfg.bank:
            for t in set(targets):  # save the slots made here (now and then, not on every call)
                bank(t, which, self.cfg.tries, self.cfg.clues[1]).flush(self.cfg.bank)
        lengths = np.array([len(r[0]) for r in rows], dtype=np.int64)  # [n]
        width = int(lengths.max(initial=1))
        tokens = np.full((n, width), PAD, dtype=np.int32)  # [n, L]
        loss_mask = np.zeros((n, width), dtype=bool)  # [n, L]
        for k, (row, prompt, *_rest) in enumerate(rows):
            tokens[k, : len(row)] = row
            loss_mask[k, prompt : len(row)] = True
        puzzles = np.array([r[2] for r in rows], dtype=np.int8).reshape(n, 81)
        meta = {
            "clues": (puzzles > 0).sum(1),
            "hardest": np.array([r[4] for r in rows], dtype=np.int64),
            "guesses": np.array([r[5] for r in rows], dtype=np.int64),
            "puzzle": puzzles,
            "solution": np.array([r[3] for r in rows], dtype=np.int8).reshape(n, 81),
            "base": np.array([r[6] for r in rows], dtype=np.int64),
        }
        return Examples(tokens, loss_mask, lengths, None, meta)

    def verify(self, example: Example, completion: Sequence[int]) -> bool:
        """Correct iff the grid after SOL_S is complete, conflict-free and keeps the prompt's givens."""
        grid = answer_grid(completion)
        return grid is not None and valid_solution(grid, givens(example.prompt))

    def answer(self, example: Example, completion: Sequence[int]) -> tuple[int, ...] | None:
        """The grid after SOL_S, row-major (None when there is none)."""
        grid = answer_grid(completion)
        return None if grid is None else tuple(int(v) for v in np.asarray(grid).reshape(-1))

    def render(self, example: Example, max_lines: int = 40) -> str:
        """Puzzle and solution grids side by side, then the trace (up to `max_lines` lines)."""
        puzzle = givens(example.prompt)
        after = [int(t) for t in example.tokens[len(example.prompt) :]]
        cut = after.index(SOL_S) if SOL_S in after else len(after)
        trace = [line for line in _lines(after[:cut]) if line]
        grid = answer_grid(after) or [0] * 81
        m = example.meta
        head = (
            f"sudoku: {sum(1 for v in puzzle if v)} clues, hardest strategy {STRATEGIES[int(m['hardest'])]}, "
            f"{int(m['guesses'])} guesses, {len(example.tokens)} tokens ({self.cfg.trace} trace)"
        )
        out = [head, f"{'puzzle':<24}answer"]
        out += [f"{a:<24}{b}" for a, b in zip(_grid_text(puzzle), _grid_text(grid), strict=True)]
        out.append(f"trace ({len(trace)} lines):" if trace else "trace: none")
        out += ["  " + _text(line) for line in trace[:max_lines]]
        if len(trace) > max_lines:
            out.append(f"  ... {len(trace) - max_lines} more lines")
        return "\n".join(out)
