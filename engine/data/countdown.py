"""CountDown (docs/papers/backtrack.md): search traces that combine numbers into a target.

A problem is a target T (10..100 by default; a seeded 10% of the targets is held out) and `count` inputs
(4) drawn from 1..99 and redrawn until some sequence of `+`, `*`, larger`-`smaller and exact larger`/`smaller
turns all of them into T. The example is `START trace END` in the paper's 46-token vocabulary (digits one
token each, no whitespace or newline tokens). The prompt is START and the trace's first line; the loss covers
the rest of the trace and END. `trace: optimal` writes the direct path to the first solution of an exhaustive
search (the paper's solution); rendered:

    Current State: 85:[89, 8, 93, 53], Operations: []
    Exploring Operation: 93-89=4, Resulting Numbers: [8, 53, 4]
    Generated Node #2: [8, 53, 4] from Operation: 93-89=4
    Current State: 85:[8, 53, 4], Operations: ['93-89=4']
    Exploring Operation: 8*4=32, Resulting Numbers: [53, 32]
    Generated Node #3: [53, 32] from Operation: 8*4=32
    Current State: 85:[53, 32], Operations: ['93-89=4', '8*4=32']
    Exploring Operation: 53+32=85, Resulting Numbers: [85]
    85,85 equal: Goal Reached

`trace: dfs` writes the paper's pruned depth-first search: one heuristic per problem, 50/50, `sum` (mean
|n - T| of a node's numbers) or `mult` (sum over its numbers of the distance to the nearest divisor >= 2 of T,
as the authors' code defines it); children are tried in heuristic order (ties in generation order) and dropped
when the heuristic exceeds T; `Generated Node #0,2,1`, `Moving to Node #0,2` and `8,42 unequal: No Solution`
lines, and after each child but the last a `Moving to Node #<parent>` plus the parent's `Current State`. A DFS
trace longer than `max_len` is cut after its last whole line, then END (meta `cut`); it never reaches the goal.

Splits: `train` and `eval` draw the non-held-out targets and split the problems (target and inputs, as a
multiset) by a hash, 1 in 16 to eval, so no eval problem is ever a training problem; `held_out` draws only the
held-out targets. The verifier parses a completion into the path of operations of the paper's rating (the last
`Current State` before the first `Goal Reached` and the `Exploring Operation` that reaches it), replays it on
the inputs (each operand available, the arithmetic exact, all inputs used, the last number T) and rates it
1 - (Exploring lines + 1) / 1152 (the 4-input tree size); invalid traces rate 0 and `verify` is rating > 0.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from itertools import combinations

import numpy as np

from schemas.data import Countdown as CountdownConfig

from .base import Example, Examples, UnknownSplit, Vocab

VOCAB = Vocab(CountdownConfig.VOCAB)
ID = {tok: i for i, tok in enumerate(VOCAB.tokens)}
DIGIT0 = ID["0"]
OPS = "+*-/"  # op codes 0..3, in the order the paper tries them
OP_TOK = np.array([ID[o] for o in OPS], dtype=np.int64)
SUM, MULT = 0, 1  # heuristics of the DFS trace
EVAL_BUCKETS = 16  # 1 in 16 problems (by hash) belongs to the eval split, the rest to train
MAX_ROUNDS = 1000  # redraw rounds (up to 4096 candidates each) before a problem is declared impossible
BIG = np.iinfo(np.int64).max
P10 = 10 ** np.arange(19, dtype=np.int64)
_ND = np.array([len(str(v)) for v in range(10_000)], dtype=np.int64)  # digits of 0..9999
_C = {w: ID[w] for w in ("[", "]", ",", ":", "=", "#", "'")}


def tree_size(count: int) -> int:
    """Leaves of the full search tree: prod over k = count..2 of C(k, 2) * 4 (1152 for four inputs)."""
    return int(np.prod([2 * k * (k - 1) for k in range(2, count + 1)]))


# ---- token pieces ----------------------------------------------------------------------------------------


class Num:
    """A number per row (int64 [R]) written as its decimal digits, one token each."""

    __slots__ = ("v", "nd")

    def __init__(self, v: np.ndarray, nd: np.ndarray | None = None):
        self.v = v
        if nd is None:
            nd = _ND[np.minimum(v, 9999)]
            if len(v) and v.max() >= 10_000:
                nd = nd + (v[:, None] >= P10[None, 4:]).sum(1)
        self.nd = nd  # [R] digits

    def take(self, rows: np.ndarray) -> Num:
        """The numbers of some rows."""
        return Num(self.v[rows], self.nd[rows])

    def digits(self) -> np.ndarray:
        """Digit tokens [R, w], left-aligned, w = the most digits; past a row's last digit they are junk."""
        w = int(self.nd.max(initial=1))
        if w <= 4:
            return _DIGITS[self.v, :w]
        e = self.nd[:, None] - 1 - np.arange(w)  # [R, w] power of ten of each digit, < 0 past the end
        return self.v[:, None] // P10[np.maximum(e, 0)] % 10 + DIGIT0


_DIGITS = np.array([[DIGIT0 + int(d) for d in f"{v:<4}".replace(" ", "0")] for v in range(10_000)])

# A line is a list of pieces: an int is one fixed token, an int array [R] one token per row, a Num digits.
Piece = int | np.ndarray | Num


def _length(pieces: list[Piece], rows: int) -> np.ndarray:
    """Tokens of each row of a line ([R] int64)."""
    out = np.full(rows, sum(1 for p in pieces if not isinstance(p, Num)), dtype=np.int64)
    for p in pieces:
        if isinstance(p, Num):
            out += p.nd
    return out


def _write(flat: np.ndarray, at: np.ndarray, pieces: list[Piece]) -> None:
    """Write one line per row into `flat` (a flattened token array), row r starting at index at[r].

    A number is written as a block as wide as the widest in its column, so a row's shorter number leaves junk
    after its last digit; the pieces after it overwrite that junk, and a line that ends with a number
    (Generated, Moving) must be followed by a line of the same node written after it.
    """
    run: list[int] = []
    for p in [*pieces, None]:
        if isinstance(p, int):
            run.append(p)
            continue
        if run:
            flat[at[:, None] + np.arange(len(run))] = run
            at = at + len(run)
            run = []
        if isinstance(p, Num):
            tok = p.digits()
            flat[at[:, None] + np.arange(tok.shape[1])] = tok
            at = at + p.nd
        elif p is not None:
            flat[at] = p
            at = at + 1


def _copy(flat: np.ndarray, src: np.ndarray, dst: np.ndarray, size: np.ndarray) -> None:
    """Copy flat[src[r] : src[r] + size[r]] to flat[dst[r] : ...] for every row r."""
    first = np.cumsum(size) - size
    k = np.arange(int(size.sum())) - np.repeat(first, size)  # [sum] place inside each span
    flat[np.repeat(dst, size) + k] = flat[np.repeat(src, size) + k]


def _numbers(nums: list[Num]) -> list[Piece]:
    """`[a, b, c]`."""
    out: list[Piece] = [_C["["]]
    for k, x in enumerate(nums):
        out += [_C[","], x] if k else [x]
    return [*out, _C["]"]]


def _op(a: Num, op: np.ndarray, b: Num, r: Num) -> list[Piece]:
    """`a+b=r` (op: token ids [R])."""
    return [a, op, b, _C["="], r]


def _current(t: Num, nums: list[Num], ops: list[list[Piece]]) -> list[Piece]:
    """`Current State: T:[..], Operations: ['a+b=r', ..]`."""
    listed: list[Piece] = []
    for k, op in enumerate(ops):
        listed += ([_C[","]] if k else []) + [_C["'"], *op, _C["'"]]
    head = [ID["Current"], ID["State"], _C[":"], t, _C[":"], *_numbers(nums)]
    return [*head, _C[","], ID["Operations"], _C[":"], _C["["], *listed, _C["]"]]


def _exploring(op: list[Piece], nums: list[Num]) -> list[Piece]:
    """`Exploring Operation: a+b=r, Resulting Numbers: [..]`."""
    head = [ID["Exploring"], ID["Operation"], _C[":"], *op]
    return [*head, _C[","], ID["Resulting"], ID["Numbers"], _C[":"], *_numbers(nums)]


def _node_id(ranks: list[Num]) -> list[Piece]:
    """`0,r1,r2` (the root is 0)."""
    out: list[Piece] = [DIGIT0]
    for r in ranks:
        out += [_C[","], r]
    return out


def _generated_dfs(ranks: list[Num], t: Num, nums: list[Num], op: list[Piece]) -> list[Piece]:
    """`Generated Node #0,1: T:[..] Operation: a+b=r`."""
    head = [ID["Generated"], ID["Node"], _C["#"], *_node_id(ranks), _C[":"], t, _C[":"], *_numbers(nums)]
    return [*head, ID["Operation"], _C[":"], *op]


def _generated_opt(k: int, nums: list[Num], op: list[Piece]) -> list[Piece]:
    """`Generated Node #k: [..] from Operation: a+b=r` (the optimal trace numbers its nodes 2, 3, ..)."""
    digits = [DIGIT0 + int(d) for d in str(k)]
    head = [ID["Generated"], ID["Node"], _C["#"], *digits, _C[":"], *_numbers(nums)]
    return [*head, ID["from"], ID["Operation"], _C[":"], *op]


def _moving(ranks: list[Num]) -> list[Piece]:
    """`Moving to Node #0,1`."""
    return [ID["Moving"], ID["to"], ID["Node"], _C["#"], *_node_id(ranks)]


def _end(r: Num, t: Num, goal: np.ndarray) -> list[Piece]:
    """`r,T equal: Goal Reached` where goal, else `r,T unequal: No Solution`."""
    word = np.where(goal, ID["equal"], ID["unequal"])
    first, second = np.where(goal, ID["Goal"], ID["No"]), np.where(goal, ID["Reached"], ID["Solution"])
    return [r, _C[","], t, word, _C[":"], first, second]


# ---- the search tree -------------------------------------------------------------------------------------


@functools.cache
def _pairs(c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs i < j of c numbers in the paper's order, and the other indices of each ([P], [P], [P, c-2])."""
    pairs = list(combinations(range(c), 2))
    rest = [[k for k in range(c) if k not in p] for p in pairs]
    return (
        np.array([i for i, _ in pairs]),
        np.array([j for _, j in pairs]),
        np.array(rest, dtype=np.int64).reshape(len(pairs), c - 2),
    )


def _expand(
    vals: np.ndarray, valid: np.ndarray, ops: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Children of every node: (numbers [n, M*B, c-1], valid [n, M*B], shown operands a, b [n, M*B] or None).

    vals [n, M, c]; children of node m are m*B .. m*B+B-1, pair-major then op (+ * - /), the paper's order;
    a child keeps the other numbers in order and appends the result. Inexact divisions are invalid.
    """
    n, m, c = vals.shape
    first, second, rest = _pairs(c)
    a, b = vals[:, :, first], vals[:, :, second]  # [n, M, P]
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    quot, rem = np.divmod(hi, np.maximum(lo, 1))
    child = np.empty((n, m, len(first), 4, c - 1), dtype=vals.dtype)  # [n, M, P, op, c-1]
    child[..., : c - 2] = vals[:, :, rest][:, :, :, None, :]
    np.add(a, b, out=child[..., 0, c - 2])
    np.multiply(a, b, out=child[..., 1, c - 2])
    np.subtract(hi, lo, out=child[..., 2, c - 2])
    child[..., 3, c - 2] = quot
    ok = np.empty((n, m, len(first), 4), dtype=bool)
    ok[..., :3] = valid[:, :, None, None]
    np.logical_and(valid[:, :, None], (lo > 0) & (rem == 0), out=ok[..., 3])
    width = m * len(first) * 4
    child, ok = child.reshape(n, width, c - 1), ok.reshape(n, width)
    if not ops:
        return child, ok, None, None
    shown_a = np.stack([a, a, hi, hi], axis=-1).reshape(n, width)  # + and * keep the pair's order
    shown_b = np.stack([b, b, lo, lo], axis=-1).reshape(n, width)
    return child, ok, shown_a, shown_b


class _Tree:
    """The full search tree of n problems, level by level: level L holds M_L nodes of count - L numbers."""

    def __init__(self, nums: np.ndarray, ops: bool = True):
        n, c = nums.shape
        self.n, self.depth = n, c - 1
        self.vals = [nums[:, None, :].astype(np.int64)]  # level L: [n, M_L, c-L]
        self.valid = [np.ones((n, 1), dtype=bool)]
        self.a: list[np.ndarray | None] = [None]
        self.b: list[np.ndarray | None] = [None]
        self.branch = [1]  # children per node of the level above
        for _ in range(self.depth):
            v, ok, a, b = _expand(self.vals[-1], self.valid[-1], ops)
            self.branch.append(v.shape[1] // self.vals[-1].shape[1])
            self.vals.append(v)
            self.valid.append(ok)
            self.a.append(a)
            self.b.append(b)

    def size(self, level: int) -> int:
        """Nodes per problem at a level."""
        return self.vals[level].shape[1]

    def opcode(self, level: int) -> np.ndarray:
        """Op code (0..3 = + * - /) of every node of a level ([M_L])."""
        return np.tile(np.arange(4), self.size(level) // 4)


class _Level:
    """The nodes the paper's DFS keeps at one level, for all problems together (flat arrays, one per node)."""

    def __init__(self, **arrays: np.ndarray):
        self.e: np.ndarray = arrays["e"]  # [A] problem
        self.vals: np.ndarray = arrays["vals"]  # [A, c - L] numbers
        self.key: np.ndarray = arrays["key"]  # [A] pre-order key: sibling ranks as digits
        self.rank: np.ndarray = arrays["rank"]  # [A] place among its kept siblings, in heuristic order
        self.last: np.ndarray = arrays["last"]  # [A] the last kept sibling
        self.parent: np.ndarray = arrays.get("parent", self.e)  # [A] index in the level above
        self.slot: np.ndarray = arrays.get("slot", self.e)  # [A] parent * children + child number
        self.a: np.ndarray = arrays.get("a", self.e)  # [A] operands as written, and the op code
        self.b: np.ndarray = arrays.get("b", self.e)
        self.op: np.ndarray = arrays.get("op", self.e)
        self.order: np.ndarray | None = arrays.get("order")  # [A_parent, children] siblings in rank order
        self.up: list[np.ndarray] = []  # [l] index of each node's ancestor at level l (itself last)


def _ops(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[..., 4] results of + * - / on a and b; an inexact division repeats the sum (a duplicate is harmless)."""
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    quot, rem = np.divmod(hi, np.maximum(lo, 1))
    add = a + b
    return np.stack([add, a * b, hi - lo, np.where((lo > 0) & (rem == 0), quot, add)], axis=-1)


def _last_step(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Whether one operation on x and y gives t (elementwise, broadcast)."""
    hi, lo = np.maximum(x, y), np.minimum(x, y)
    return (x + y == t) | (x * y == t) | (hi - lo == t) | ((lo > 0) & (hi == t * lo))


_SPLITS4 = np.array([(0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2), (1, 2, 0, 3), (1, 3, 0, 2), (2, 3, 0, 1)]).T


def _solvable4(v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """`solvable` for four numbers: a first pair, then the other pair or a chain through one of them."""
    i, j, k, m = _SPLITS4
    first = _ops(v[:, i], v[:, j])  # [n, 6, 4]
    vk, vm, tt = v[:, k, None], v[:, m, None], t[:, None, None, None]  # [n, 6, 1]
    hit = _last_step(first[..., :, None], _ops(vk[..., 0], vm[..., 0])[..., None, :], tt)  # (ij)(km)
    hit = hit.reshape(len(v), -1).any(1)
    hit |= _last_step(_ops(first, vk), vm[..., None], tt).reshape(len(v), -1).any(1)  # ((ij)k)m
    return hit | _last_step(_ops(first, vm), vk[..., None], tt).reshape(len(v), -1).any(1)  # ((ij)m)k


def solvable(nums: np.ndarray, target: np.ndarray, dtype: type = np.int64) -> np.ndarray:
    """Whether some order of operations turns all of each row's numbers into its target ([n] bool).

    Expands the tree to the nodes of two numbers and checks the last operation there (four numbers take a
    shortcut with the same answer), in chunks that stay in cache; `dtype` np.int32 is exact when
    (max_number + 1) ** count and T * (max_number + 1) ** (count - 1) stay below 2**31.
    """
    n, c = nums.shape
    chunk = max(1, (1 << 18) // tree_size(c))
    out = np.zeros(n, dtype=bool)
    for s in range(0, n, chunk):
        vals, t = nums[s : s + chunk].astype(dtype), target[s : s + chunk].astype(dtype)
        if c == 4:
            out[s : s + chunk] = _solvable4(vals, t)
            continue
        vals, valid = vals[:, None, :], np.ones((len(vals), 1), dtype=bool)
        for _ in range(c - 2):
            vals, valid, _, _ = _expand(vals, valid, ops=False)
        out[s : s + chunk] = (valid & _last_step(vals[..., 0], vals[..., 1], t[:, None])).any(1)
    return out


@functools.cache
def _divisor_distance(lo: int, hi: int) -> np.ndarray:
    """[hi+1, hi+1]: entry [t, v] = min |v - d| over divisors d >= 2 of t, for lo <= t <= hi and v <= t."""
    table = np.zeros((hi + 1, hi + 1), dtype=np.int64)
    v = np.arange(hi + 1)
    for t in range(lo, hi + 1):
        d = np.flatnonzero(t % np.arange(2, t + 1) == 0) + 2
        table[t] = np.abs(v[:, None] - d[None, :]).min(1)
    return table


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit hash of each uint64."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def eval_problem(target: np.ndarray, nums: np.ndarray) -> np.ndarray:
    """Whether each problem (target, inputs as a multiset) belongs to the eval split (1 in EVAL_BUCKETS)."""
    key = target.astype(np.uint64)
    for col in np.sort(nums, axis=1).T:
        key = key * np.uint64(1000) + col.astype(np.uint64)
    return _mix(key) % np.uint64(EVAL_BUCKETS) == 0


# ---- the generator ---------------------------------------------------------------------------------------


class Countdown:
    """Generator of CountDown problems with optimal or DFS traces (see the module docstring)."""

    vocab = VOCAB

    def __init__(self, cfg: CountdownConfig):
        self.cfg = cfg
        held = set(cfg.held_out_targets())
        every = range(cfg.targets[0], cfg.targets[1] + 1)
        train = np.array([t for t in every if t not in held], dtype=np.int64)
        self.pools = {"train": train, "eval": train, "held_out": np.array(sorted(held), dtype=np.int64)}
        self.max_nodes = tree_size(cfg.count)
        self.distance = _divisor_distance(*cfg.targets)
        big = (cfg.max_number + 1) ** (cfg.count - 1) * max(cfg.max_number + 1, cfg.targets[1])
        self.dtype = np.int32 if big < 2**31 else np.int64  # exact and twice as fast where it fits
        # candidates drawn per missing problem in the first redraw round (then adapted to the acceptance)
        first = {3: 32, 4: 8, 5: 2}[cfg.count]
        self.per_slot = {"train": first, "held_out": first, "eval": first * EVAL_BUCKETS}

    # -- problems

    def problems(self, rng: np.random.Generator, n: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        """n solvable problems of a split: (targets [n], inputs [n, count]).

        As in the paper the target is drawn first (uniform over the split's targets), then inputs are redrawn
        until they solve it (and fall on the split's side of the eval hash): the first acceptable of a row of
        candidates, which is a sequential redraw done in bulk.
        """
        if split not in self.pools:
            raise UnknownSplit(f"no split {split!r}; countdown has {', '.join(self.cfg.SPLITS)}")
        pool, c = self.pools[split], self.cfg.count
        target = pool[rng.integers(0, len(pool), size=n)]
        nums = np.zeros((n, c), dtype=np.int64)
        todo, per = np.arange(n), self.per_slot[split]
        for _ in range(MAX_ROUNDS):
            if not len(todo):
                return target, nums
            tt = np.repeat(target[todo], per)  # [len(todo) * per]
            cand = rng.integers(1, self.cfg.max_number + 1, size=(len(tt), c))
            ok = (
                eval_problem(tt, cand) == (split == "eval") if split != "held_out" else np.ones(len(tt), bool)
            )
            ok[ok] = solvable(cand[ok], tt[ok], self.dtype)
            ok = ok.reshape(len(todo), per)
            got = ok.any(1)
            nums[todo[got]] = cand[np.flatnonzero(got) * per + ok.argmax(1)[got]]
            todo = todo[~got]
            per = int(min(4096, max(2, np.ceil(2 / max(ok.mean(), 1e-4)))))
        raise RuntimeError(
            f"countdown: no solvable {split} problem for target(s) {sorted(set(target[todo].tolist()))} in "
            f"{MAX_ROUNDS} rounds of redraws; raise max_number or lower targets"
        )

    # -- sampling

    def sample(
        self, rng: np.random.Generator, n: int, split: str = "train", length: int | None = None
    ) -> Examples:
        """n examples of `split` (train | eval | held_out); countdown has no length axis (`length` is refused)."""
        if length is not None:
            raise ValueError("countdown has no length axis; sample it without `length`")
        target, nums = self.problems(rng, n, split)
        chunk = max(1, (1 << 20) // self.max_nodes)  # problems per pass: their trees stay small
        if self.cfg.trace == "optimal":
            parts = [self._optimal(target[s : s + chunk], nums[s : s + chunk]) for s in range(0, n, chunk)]
            return _concat(parts, np.arange(n))
        heuristic = (rng.random(n) < 0.5).astype(np.int64)  # SUM or MULT, 50/50
        parts, rows = [], []
        for h in (SUM, MULT):  # each heuristic on its own, in chunks; then back in order
            idx = np.flatnonzero(heuristic == h)
            for s in range(0, len(idx), chunk):
                rows.append(idx[s : s + chunk])
                parts.append(self._dfs(target[rows[-1]], nums[rows[-1]], h))
        return _concat(parts, np.argsort(np.concatenate(rows)))

    def _prompt(self, target: np.ndarray, nums: np.ndarray) -> tuple[Num, list[Piece], np.ndarray]:
        """The first line of every problem: (T as a Num, the line's pieces, prompt lengths with START [n])."""
        t = Num(target)
        line = _current(t, [Num(x) for x in nums.T], [])
        return t, line, 1 + _length(line, len(target))

    @staticmethod
    def _finish(out: np.ndarray, prompt: np.ndarray, total: np.ndarray, meta: dict) -> Examples:
        """START, END and padding on the written rows; the loss covers everything after the prompt."""
        n = len(total)
        width = int(total.max())
        col = np.arange(out.shape[1])[None, :]
        np.multiply(out, col < total[:, None], out=out)  # PAD after END (and no junk past a cut)
        out[:, 0] = VOCAB.bos
        out[np.arange(n), total - 1] = VOCAB.eos
        loss = (col >= prompt[:, None]) & (col < total[:, None])
        return Examples(out[:, :width], loss[:, :width], total, None, meta)

    def _optimal(self, target: np.ndarray, nums: np.ndarray) -> Examples:
        """The paper's optimal trace of every problem: the path to the first solution of the exhaustive search.

        As the authors' code writes it, the listed numbers drop each operand's first occurrence by value and
        append the result (the search itself drops them by position).
        """
        n, c = nums.shape
        tree = _Tree(nums)
        first = (tree.valid[-1] & (tree.vals[-1][..., 0] == target[:, None])).argmax(1)  # [n] leaf
        t, line, prompt = self._prompt(target, nums)
        rows = np.arange(n)
        shown = nums.copy()
        lines, ops, at = [], [], prompt.copy()
        for level in range(1, c):
            i = first // (tree.size(c - 1) // tree.size(level))
            a, b = tree.a[level][rows, i], tree.b[level][rows, i]
            r = tree.vals[level][rows, i, -1]
            ops.append(_op(Num(a), OP_TOK[tree.opcode(level)[i]], Num(b), Num(r)))
            keep = np.ones(shown.shape, dtype=bool)
            for x in (a, b):  # list.remove: the first occurrence among those still kept
                keep[rows, np.argmax(keep & (shown == x[:, None]), axis=1)] = False
            shown = np.concatenate([shown[keep].reshape(n, -1), r[:, None]], axis=1)
            listed = [Num(x) for x in shown.T]
            step = [_exploring(ops[-1], listed)]
            if level < c - 1:
                step += [_generated_opt(level + 1, listed, ops[-1]), _current(t, listed, list(ops))]
            else:
                step.append(_end(Num(r), t, np.ones(n, dtype=bool)))
            for pieces in step:
                lines.append((at, pieces))
                at = at + _length(pieces, n)
        total = at + 1
        width = int(total.max())
        out = np.zeros((n, width), dtype=np.int32)
        flat, base = out.reshape(-1), rows * width
        _write(flat, base + 1, line)
        for start, pieces in lines:
            _write(flat, base + start, pieces)
        return self._finish(out, prompt, total, {"target": target, "nums": nums})

    def _search(self, target: np.ndarray, nums: np.ndarray, heuristic: int) -> list[_Level]:
        """The nodes the paper's DFS keeps, level by level, expanding only the kept ones."""
        n, c = nums.shape
        depth, base = c - 1, 2 * c * (c - 1) + 1  # a key digit per level: more than the most children
        rows = np.arange(n)
        root = _Level(e=rows, vals=nums, key=np.zeros(n, np.int64), rank=rows * 0, last=rows >= 0)
        root.up = [rows]
        levels = [root]
        flat_distance, width_d = self.distance.reshape(-1), self.distance.shape[1]
        for level in range(1, c):
            up = levels[-1]
            vals, valid, _, _ = _expand(up.vals[:, None, :], np.ones((len(up.e), 1), bool), ops=False)
            width = vals.shape[1]  # [A_up, B, c - L]: the children of every kept node
            t = target[up.e][:, None, None]
            if heuristic == MULT:  # the distance of each number to the nearest divisor >= 2 of T, summed
                h = np.where(vals >= t, vals - t, flat_distance[t * width_d + np.minimum(vals, t)]).sum(-1)
                ok = valid & (h <= t[..., 0])  # prune above T
            else:  # the mean |n - T| (times the count, the same for siblings)
                h = np.abs(vals - t).sum(-1)
                ok = valid & (h <= t[..., 0] * (c - level))
            order = np.argsort(np.where(ok, h, BIG), axis=-1, kind="stable")  # ties: generation order
            rank = np.empty_like(order)
            rank[np.arange(len(order))[:, None], order] = np.arange(width)
            kids = ok.sum(1)
            p, j = np.nonzero(ok)
            first, second, _ = _pairs(c - level + 1)
            x, y, op = up.vals[p, first[j // 4]], up.vals[p, second[j // 4]], j % 4
            node = _Level(
                e=up.e[p],
                vals=vals[p, j],
                key=up.key[p] + (rank[p, j] + 1) * base ** (depth - level),
                rank=rank[p, j],
                last=rank[p, j] == kids[p] - 1,
                parent=p,
                slot=p * width + j,
                a=np.where(op < 2, x, np.maximum(x, y)),  # + * keep the pair's order; - / larger first
                b=np.where(op < 2, y, np.minimum(x, y)),
                op=op,
                order=order,
            )
            node.up = [u[p] for u in up.up] + [np.arange(len(p))]
            levels.append(node)
        return levels

    def _dfs(self, target: np.ndarray, nums: np.ndarray, heuristic: int) -> Examples:
        """The paper's pruned DFS trace of every problem, cut to max_len (every level vectorised).

        Each kept node gets a pre-order key (its sibling ranks as digits), the lengths of its lines and the
        size of its block (its lines, its subtree, the backtrack lines after it), so each line's place in
        the trace is known without walking the tree. Lines past the goal or past the budget are dropped.
        """
        n, c = nums.shape
        depth, base = c - 1, 2 * c * (c - 1) + 1
        levels = self._search(target, nums, heuristic)
        leaves = levels[-1]
        goal_key = np.full(n, BIG)
        is_goal = leaves.vals[:, 0] == target[leaves.e]
        np.minimum.at(goal_key, leaves.e[is_goal], leaves.key[is_goal])

        cached = [None] + [
            {
                "a": Num(node.a),
                "b": Num(node.b),
                "r": Num(node.vals[:, -1]),
                "rank": Num(node.rank),
                "op": OP_TOK[node.op],
            }
            for node in levels[1:]
        ]

        def pieces(level: int, idx: np.ndarray) -> dict[str, list[Piece]]:
            """The lines that nodes idx of a level write on entering them."""
            node = levels[level]
            e = node.e[idx]
            t = Num(target[e])
            ups = [node.up[lv][idx] for lv in range(level + 1)]  # ancestors at each level

            def op(lv: int) -> list[Piece]:
                own = cached[lv]
                u = ups[lv]
                return _op(own["a"].take(u), own["op"][u], own["b"].take(u), own["r"].take(u))

            if level == depth:
                r = cached[level]["r"].take(idx)
                return {"X": _exploring(op(level), [r]), "E": _end(r, t, r.v == target[e])}
            listed = [Num(x) for x in node.vals[idx, :-1].T] + [cached[level]["r"].take(idx)]
            ranks = [cached[lv]["rank"].take(ups[lv]) for lv in range(1, level + 1)]
            ops = [op(lv) for lv in range(1, level + 1)]
            return {
                "X": _exploring(ops[-1], listed),
                "G": _generated_dfs(ranks, t, listed, ops[-1]),
                "M": _moving(ranks),
                "C": _current(t, listed, ops),
            }

        # Line lengths of every kept node, then block sizes bottom-up and starts top-down.
        _, first_line, prompt = self._prompt(target, nums)
        lens: list[dict[str, np.ndarray]] = [{"M": np.full(n, 5), "C": prompt - 1}]
        for level in range(1, c):
            lines = pieces(level, np.arange(len(levels[level].e)))
            lens.append({k: _length(line, len(levels[level].e)) for k, line in lines.items()})
        enter = [sum(lens[level].values()) for level in range(c)]
        back = [None] + [(lens[lv - 1]["M"] + lens[lv - 1]["C"])[levels[lv].parent] for lv in range(1, c)]
        block: list = [None] * c
        for level in range(depth, 0, -1):
            node = levels[level]
            block[level] = enter[level] + back[level] * ~node.last
            if level < depth:
                below = np.bincount(levels[level + 1].parent, block[level + 1], len(node.e))
                block[level] += below.astype(np.int64)
        start, inner = [np.zeros(n, np.int64)], [np.zeros(n, np.int64)]
        for level in range(1, c):
            node, order = levels[level], levels[level].order
            sizes = np.zeros(order.size, np.int64)
            sizes[node.slot] = block[level]
            rows = np.arange(len(order))[:, None]
            sizes = sizes.reshape(order.shape)[rows, order]
            before = np.empty_like(sizes)
            before[rows, order] = np.cumsum(sizes, axis=-1) - sizes
            start.append(inner[level - 1][node.parent] + before.reshape(-1)[node.slot])
            inner.append(start[-1] + enter[level])

        # What is written: lines up to the goal whose end fits the budget (a prefix of the trace).
        budget = self.cfg.max_len - prompt - 1
        used = np.zeros(n, dtype=np.int64)
        plan = []
        for level in range(1, c):
            node = levels[level]
            seen = node.key <= goal_key[node.e]
            at, room = start[level], budget[node.e]
            for size in lens[level].values():
                used += np.bincount(node.e, size * (seen & (at + size <= room)), n).astype(np.int64)
                at = at + size
            back_at = start[level] + block[level] - back[level]
            backs = seen & ~node.last & (node.key + base ** (depth - level) <= goal_key[node.e])
            moving = lens[level - 1]["M"][node.parent]  # the two backtrack lines are cut one by one
            size = np.where(backs & (back_at + moving <= room), moving, 0)
            size = np.where(backs & (back_at + back[level] <= room), back[level], size)
            used += np.bincount(node.e, size, n).astype(np.int64)
            plan.append((level, seen & (start[level] + lens[level]["X"] <= room), back_at, size))
        total = prompt + used + 1
        width = int(total.max())
        for level, shown, _, _ in plan:  # whole nodes are written; what passes the cut is cleared after
            ends = prompt[levels[level].e] + start[level] + enter[level]
            width = max(width, int(ends[shown].max(initial=0)))
        out = np.zeros((n, width), dtype=np.int32)
        flat, base_at = out.reshape(-1), np.arange(n) * width + prompt
        _write(flat, base_at - prompt + 1, first_line)
        for level, shown, _, _ in plan:
            idx = np.flatnonzero(shown)
            at = base_at[levels[level].e[idx]] + start[level][idx]
            for k, line in pieces(level, idx).items():
                _write(flat, at, line)
                at = at + lens[level][k][idx]
        for level, _, back_at, size in plan:  # backtracking repeats the parent's Moving and Current lines
            idx = np.flatnonzero(size)
            e, dst = levels[level].e[idx], base_at[levels[level].e[idx]] + back_at[idx]
            if level == 1:  # the root's: `Moving to Node #0` and the prompt's line
                _write(flat, dst, _moving([]))
                whole = size[idx] > 5
                _copy(flat, e[whole] * width + 1, dst[whole] + 5, prompt[e[whole]] - 1)
            else:
                up = levels[level].parent[idx]
                moving_at = start[level - 1] + lens[level - 1]["X"] + lens[level - 1]["G"]
                _copy(flat, base_at[e] + moving_at[up], dst, size[idx])
        solved = goal_key < BIG
        full = np.bincount(levels[1].e, block[1], n).astype(np.int64)
        hit = is_goal & (leaves.key == goal_key[leaves.e])
        full[leaves.e[hit]] = (start[depth] + enter[depth])[hit]
        meta = {
            "target": target,
            "nums": nums,
            "heuristic": np.full(n, heuristic),
            "solved": solved,
            "cut": full > budget,
            "full_len": prompt + full + 1,
        }
        return self._finish(out, prompt, total, meta)

    # -- verifier and renderer

    def solution(self, example: Example, completion: Sequence[int]) -> tuple[tuple, int] | None:
        """The operations (a, op, b, result) of the path a completion reaches the target by, and its count of
        Exploring lines up to the goal; None when it reaches none validly (see `rate`)."""
        comp = np.asarray(completion, dtype=np.int64).reshape(-1)
        stop = np.flatnonzero((comp == VOCAB.eos) | (comp == VOCAB.pad) | (comp < 0) | (comp >= len(VOCAB)))
        comp = comp[: stop[0]] if len(stop) else comp
        trace = compact(np.concatenate([np.asarray(example.prompt, dtype=np.int64)[1:], comp]))
        goal = _GOAL.search(trace)
        if goal is None:
            return None
        head = trace[: goal.start()]
        final = _last(_EXPLORING.finditer(head))
        if final is None or final.end() != goal.start():
            return None
        state = _last(_STATE.finditer(head, 0, final.start()))
        target = int(example.meta["target"])
        if state is None or int(state[1]) != target or not _OP_LIST.fullmatch(state[2]):
            return None
        if int(goal[1]) != int(final[4]) or int(goal[2]) != target:
            return None
        path = [m.groups() for m in _OP.finditer(state[2])] + [final.groups()]
        left = [int(x) for x in np.asarray(example.meta["nums"]).tolist()]
        ops = []
        for a, op, b, r in path:
            a, b, r = int(a), int(b), int(r)
            if not _exact(a, op, b, r):
                return None
            for x in (a, b):
                if x not in left:
                    return None
                left.remove(x)
            left.append(r)
            ops.append((a, op, b, r))
        if left != [target]:
            return None
        return tuple(ops), head.count("X")

    def rate(self, example: Example, completion: Sequence[int]) -> float:
        """The paper's rating of a completion: 1 - (Exploring lines + 1) / tree size for a valid path, else 0.

        The path is the operations of the last `Current State` before the first `Goal Reached` plus the
        `Exploring Operation` right before that goal line; it must replay on the inputs (operands available,
        + and * in either order, - and / larger first, / exact) to a single number equal to the target.
        Exploring lines are counted up to the goal; tokens after the first END are ignored.
        """
        found = self.solution(example, completion)
        return 0.0 if found is None else max(0.0, 1.0 - (found[1] + 1) / self.max_nodes)

    def answer(self, example: Example, completion: Sequence[int]) -> tuple | None:
        """The operations of the valid path to the target (None without one): two traces that find the same
        solution vote together, however long their search was."""
        found = self.solution(example, completion)
        if found is None or found[1] + 1 >= self.max_nodes:  # rated 0: not an answer the verifier accepts
            return None
        return found[0]

    def verify(self, example: Example, completion: Sequence[int]) -> bool:
        """Correct iff the completion's rating is above 0 (a valid path to the target, as in the paper)."""
        return self.rate(example, completion) > 0

    def render(self, example: Example) -> str:
        """The prompt line, the trace as the paper writes it, and what the example is."""
        meta = example.meta
        about = f"target {int(meta['target'])}, inputs {np.asarray(meta['nums']).tolist()}"
        if "heuristic" in meta:
            about += f", heuristic {('sum', 'mult')[int(meta['heuristic'])]}, solved {bool(meta['solved'])}"
            about += f", cut {bool(meta['cut'])} (uncut {int(meta['full_len'])} tokens)"
        about += f", rating {self.rate(example, example.tokens[len(example.prompt) :]):.4f}"
        return f"START {text(example.prompt)}\n-> {text(example.answer)} END\n({about})"


def _last(matches: Iterator[re.Match]) -> re.Match | None:
    """The last of some regex matches, or None."""
    out = None
    for out in matches:  # noqa: B007
        pass
    return out


def _exact(a: int, op: str, b: int, r: int) -> bool:
    """Whether `a op b = r` is one of the game's operations, exactly."""
    if op == "+":
        return a + b == r
    if op == "*":
        return a * b == r
    if op == "-":
        return a >= b and a - b == r
    return 0 < b and a % b == 0 and a // b == r


def _concat(parts: list[Examples], order: np.ndarray) -> Examples:
    """The examples of several parts, right-padded to the widest, rows taken in `order`."""
    if len(parts) == 1:
        return parts[0]
    width = max(p.tokens.shape[1] for p in parts)

    def pad(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, width - a.shape[1])))

    return Examples(
        np.concatenate([pad(p.tokens) for p in parts])[order],
        np.concatenate([pad(p.loss_mask) for p in parts])[order],
        np.concatenate([p.lengths for p in parts])[order],
        None,
        {k: np.concatenate([p.meta[k] for p in parts])[order] for k in parts[0].meta},
    )


# ---- text ------------------------------------------------------------------------------------------------

# One character per token, so that a trace can be parsed with regular expressions: digits and symbols stand
# for themselves, each word for one letter, PAD START END UNK for _ < > ?.
_LETTER = dict(zip(CountdownConfig.WORDS, "XfSsquRtPDNCOnMGFTBL", strict=True))
_CHARS = "".join(
    {"PAD": "_", "START": "<", "END": ">", "UNK": "?"}.get(tok, _LETTER.get(tok, tok)) for tok in VOCAB.tokens
)
_BYTES = np.frombuffer(_CHARS.encode("ascii"), dtype=np.uint8)
_N = r"(\d{1,18})"
_GOAL = re.compile(rf"{_N},{_N}q:LD")  # r,T equal: Goal Reached
_EXPLORING = re.compile(rf"XO:{_N}([-+*/]){_N}={_N},RB:\[[\d,]*\]")  # Exploring Operation: .., Resulting ..
_STATE = re.compile(r"CT:(\d{1,18}):\[[\d,]*\],P:\[([^\]]*)\]")  # Current State: T:[..], Operations: [..]
_OP = re.compile(rf"'{_N}([-+*/]){_N}={_N}'")
_OP_LIST = re.compile(r"(?:'\d+[-+*/]\d+=\d+'(?:,'\d+[-+*/]\d+=\d+')*)?")
_LINE_WORDS = {"Current", "Exploring", "Generated", "Moving"}


def compact(ids: np.ndarray) -> str:
    """Token ids as one character each (see _CHARS)."""
    return _BYTES[np.asarray(ids, dtype=np.int64)].tobytes().decode("ascii")


def text(ids: Sequence[int]) -> str:
    """Token ids as the paper's text: lines, spaces, no START/END/PAD (the inverse of its tokeniser)."""
    out: list[str] = []
    depth, prev, run_after_colon, colon_after_target = 0, "", False, False
    for tok in (VOCAB.tokens[int(i)] for i in ids):
        if tok in ("PAD", "START", "END"):
            continue
        if not out:
            sep = ""
        elif tok in _LINE_WORDS or (tok.isdigit() and prev == "]"):
            sep = "\n"
        elif tok[0].isalpha() or tok == "#":
            sep = " "
        elif prev == ":":
            sep = "" if tok == "[" and colon_after_target else " "
        elif prev == ",":
            sep = " " if depth else ""
        else:
            sep = ""
        if tok.isdigit() and not prev.isdigit():
            run_after_colon = prev == ":"
        if tok == ":":
            colon_after_target = prev.isdigit() and run_after_colon
        depth += (tok == "[") - (tok == "]")
        out.append(sep + tok)
        prev = tok
    return "".join(out)
