"""Variable assignment (pointer chasing, the PPC task; docs/papers/length_generalisation.md), coupled ids.

Format: `BOS` m shuffled statements `a = b ;` or `a = 7 ;`, the query `? v =`, then the answer `v u ... 7 EOS`
that follows the chain from v to its digit value. Every statement defines a distinct variable (so the chain
is unique); the queried chain has c statements (`hops`; default uniform in 1..m), the other m - c statements
form distractor chains, each ending with probability 1/c after every statement (so they look like the
queried one). Loss on the answer (v ... 7 EOS). Rendered (m=4, c=2):

    BOS c = 4 ; a = b ; d = c ; b = 7 ; ? a = -> a b 7 EOS   (m=4, hops=2, o=0; answer ids 5 13 15 16)

Vocabulary: PAD BOS EOS = ; ?, digits 0..9, then `names` variable names a..z, aa, ab, ... (one token each).

Coupled position ids (`positions`): BOS -> 0, every other prompt token -> o + its column. Each answer token
carries the id of its defining occurrence in the statements
(docs/papers/length_generalisation.md: y_j is coupled to the left-hand
side of the statement defining y_j): a variable the id of that statement's left-hand side, the value the id
of the right-hand side where it is written, EOS the id of that statement's `;` (our choice for the last
two). o ~ U{0..P_max-4m-3} per example in the train split, 0 in the eval split: ids lie in [0, P_max].

`meta` (per example):
  length            m;  hops  c;  offset  o
  target_positions  int32 [n, W]: the coupled id of each answer token at its column, -1 elsewhere (what
                    Predictive Position Coupling learns to predict)
  sources           int32 [n, W, 2]: the input columns an answer token depends on, given the answer so far:
                    v -> (the query's v, -1); the token after y_j -> (left, right side of the statement
                    defining y_j); EOS -> (-1, -1) (it follows the value whatever the input); -1 elsewhere

The width W of a batch is fixed by the split (or the pinned m), so [n, W] meta arrays of evaluation chunks
concatenate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.data import VariableAssignment as VariableAssignmentConfig

from .base import Example, Examples, UnknownSplit, Vocab, through_eos

BOS, EOS, EQ, SEMI, QUERY = 1, 2, 3, 4, 5
DIGIT0 = len(VariableAssignmentConfig.SPECIALS)  # digit d has id DIGIT0 + d
NAME0 = DIGIT0 + VariableAssignmentConfig.VALUES  # name i has id NAME0 + i


def name(i: int) -> str:
    """The i-th variable name: a..z, aa..az, ba.., (bijective base 26)."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(97 + r) + out
    return out


def make_vocab(names: int) -> Vocab:
    """PAD BOS EOS = ; ?, digits 0..9, then the names."""
    digits = (str(d) for d in range(VariableAssignmentConfig.VALUES))
    return Vocab((*VariableAssignmentConfig.SPECIALS, *digits, *(name(i) for i in range(names))))


def parse(prompt: Sequence[int]) -> tuple[np.ndarray, int] | None:
    """(statements [m, 4], queried variable) of a prompt `BOS stmt.. ? v =`; None when it is not one."""
    p = np.asarray(prompt, dtype=np.int64)
    if len(p) < 8 or (len(p) - 4) % 4 or p[0] != BOS or p[-3] != QUERY or p[-1] != EQ or p[-2] < NAME0:
        return None
    stmts = p[1:-3].reshape(-1, 4)
    ok = (stmts[:, 0] >= NAME0) & (stmts[:, 1] == EQ) & (stmts[:, 2] >= DIGIT0) & (stmts[:, 3] == SEMI)
    return (stmts, int(p[-2])) if ok.all() else None


def next_token(prompt: Sequence[int], previous: int | None) -> int | None:
    """The answer token after `previous` (None: the first): the query's variable, the right-hand side of the
    one statement defining `previous`, or EOS after a value. None when no single statement defines it."""
    parsed = parse(prompt)
    if parsed is None:
        return None
    stmts, query = parsed
    if previous is None:
        return query
    if DIGIT0 <= previous < NAME0:
        return EOS
    where = np.flatnonzero(stmts[:, 0] == previous)
    return int(stmts[where[0], 2]) if len(where) == 1 else None


def solve(prompt: Sequence[int]) -> list[int] | None:
    """The whole answer `v .. value EOS` by following the chain; None when it breaks or loops."""
    parsed = parse(prompt)
    if parsed is None:
        return None
    stmts, query = parsed
    defs: dict[int, list[int]] = {}
    for lhs, rhs in zip(stmts[:, 0].tolist(), stmts[:, 2].tolist(), strict=True):
        defs.setdefault(lhs, []).append(rhs)
    out, var = [query], query
    for _ in range(len(stmts)):
        rhs = defs.get(var, [])
        if len(rhs) != 1:
            return None
        out.append(rhs[0])
        if rhs[0] < NAME0:  # a value ends the chain
            return [*out, EOS]
        var = rhs[0]
    return None  # a loop


class VariableAssignment:
    """Generator of pointer-chasing examples with coupled positions; m drawn per example from the split."""

    def __init__(self, cfg: VariableAssignmentConfig):
        self.cfg = cfg
        self.vocab = make_vocab(cfg.names)

    def sample(
        self, rng: np.random.Generator, n: int, split: str = "train", length: int | None = None
    ) -> Examples:
        """n examples of `split` (train | eval), all with `length` statements when it is given."""
        cfg = self.cfg
        if split not in cfg.SPLITS:
            raise UnknownSplit(f"no split {split!r}; variable_assignment has {', '.join(cfg.SPLITS)}")
        if length is not None:
            low, top = cfg.length_bounds()[0], min(cfg.names, (cfg.max_position_id - 3) // 4)
            if not low <= length <= top:
                raise ValueError(f"{length} statements cannot be made; need {low} <= length <= {top}")
        lo, hi = (length, length) if length is not None else getattr(cfg.length, split)
        M = hi
        ms = rng.integers(lo, hi + 1, size=n)  # [n] statements
        if cfg.hops is None:
            cs = rng.integers(1, ms + 1)  # [n] chain statements, uniform in 1..m
        else:
            h_lo, h_hi = cfg.hops_range
            cs = rng.integers(h_lo, h_hi + 1, size=n)
        c_max = M if cfg.hops is None else cfg.hops_range[1]
        names = rng.permuted(np.broadcast_to(np.arange(cfg.names), (n, cfg.names)), axis=1)[:, :M]
        values = rng.integers(0, cfg.VALUES, size=(n, M))  # [n, M] value of a chain end
        stay = rng.random((n, M))  # [n, M] distractor chains go on where stay >= 1/c
        shuffle = rng.random((n, M))
        if split == "train":
            offset = rng.integers(0, cfg.max_position_id - 4 * ms - 2)  # [n] o in 0..P_max-4m-3
        else:
            offset = np.zeros(n, dtype=np.int64)

        # Slot s < m defines names[s]; slots 0..c-1 are the queried chain, the rest distractor chains.
        s = np.arange(M)[None, :]  # [1, M]
        m, c, o = ms[:, None], cs[:, None], offset[:, None]  # [n, 1]
        valid = s < m
        ends = (s == c - 1) | (s == m - 1) | ((s >= c) & (stay < 1.0 / c))  # [n, M] chain ends here
        nxt = np.concatenate([names[:, 1:], names[:, :1]], axis=1)  # names[s + 1] (wraps; unused at ends)
        lhs = NAME0 + names
        rhs = np.where(ends, DIGIT0 + values, NAME0 + nxt)
        order = np.argsort(np.where(valid, shuffle, 2.0), axis=1)  # [n, M] slot written t-th
        where = np.argsort(order, axis=1)  # [n, M] statement index of slot s
        stmts = np.stack(
            [
                np.take_along_axis(lhs, order, 1),
                np.full((n, M), EQ),
                np.take_along_axis(rhs, order, 1),
                np.full((n, M), SEMI),
            ],
            axis=2,
        ).reshape(n, 4 * M)  # [n, 4M] statements in written order (rows past 4m unused)

        W = 4 * M + 6 + c_max
        col = np.arange(W)[None, :]  # [1, W]
        q = 4 * m + 1  # column of '?'
        j = col - (q + 3)  # answer index: 0..c-1 variables, c the value, c+1 EOS
        in_stmt = (col >= 1) & (col < q)
        is_var = (j >= 0) & (j < c)
        is_val, is_eos = j == c, j == c + 1
        jv = np.clip(j, 0, M - 1)
        lhs_col = 1 + 4 * where  # [n, M] column of each slot's left-hand side
        last = np.take_along_axis(lhs_col, c - 1, 1)  # [n, 1] that of the chain's last statement

        tokens = np.zeros((n, W), dtype=np.int64)  # PAD = 0
        tokens[:, 0] = BOS
        tokens = np.where(in_stmt, np.take_along_axis(stmts, np.clip(col - 1, 0, 4 * M - 1), 1), tokens)
        tokens = np.where(col == q, QUERY, tokens)
        tokens = np.where((col == q + 1) | is_var, np.take_along_axis(lhs, jv, 1), tokens)
        tokens = np.where(col == q + 2, EQ, tokens)
        tokens = np.where(is_val, DIGIT0 + np.take_along_axis(values, c - 1, 1), tokens)
        tokens = np.where(is_eos, EOS, tokens).astype(np.int32)

        positions = np.where((col >= 1) & (col <= q + 2), o + col, 0)
        positions = np.where(is_var, o + np.take_along_axis(lhs_col, jv, 1), positions)
        positions = np.where(is_val, o + last + 2, positions)
        positions = np.where(is_eos, o + last + 3, positions).astype(np.int32)

        loss_mask = is_var | is_val | is_eos
        # Answer index j in 1..c depends on the statement of slot j-1 (its LHS and RHS); v on the query's v.
        prev = np.take_along_axis(lhs_col, np.clip(j - 1, 0, M - 1), 1)  # [n, W]
        prev = np.where((j >= 1) & (j <= c), prev, -1)
        first = np.where(j == 0, q + 1, prev)
        sources = np.stack([first, np.where(prev >= 0, prev + 2, -1)], axis=2).astype(np.int32)  # [n, W, 2]
        meta = {
            "length": ms,
            "hops": cs,
            "offset": offset,
            "target_positions": np.where(loss_mask, positions, -1).astype(np.int32),
            "sources": sources,
        }
        return Examples(tokens, loss_mask, 4 * ms + 6 + cs, positions, meta)

    def verify(self, example: Example, completion: Sequence[int]) -> bool:
        """Correct iff the completion starts with the chain from the query to its value, then EOS."""
        want = solve(example.prompt)
        return want is not None and [int(t) for t in completion[: len(want)]] == want

    def answer(self, example: Example, completion: Sequence[int]) -> tuple[int, ...]:
        """The completion through its first EOS (what the verifier compares)."""
        return through_eos(completion, self.vocab.eos)

    def render(self, example: Example) -> str:
        """`BOS statements ? v = -> v .. value EOS` with m, hops, o and the answer's coupled ids."""
        k = len(example.prompt)
        ids = "" if example.positions is None else f"; answer ids {' '.join(map(str, example.positions[k:]))}"
        meta = example.meta
        return (
            f"{self.vocab.decode(example.prompt)} -> {self.vocab.decode(example.answer)}   "
            f"(m={int(meta['length'])}, hops={int(meta['hops'])}, o={int(meta['offset'])}{ids})"
        )
