"""Phone book (docs/papers/mixture_of_parrots.md): memorise a fixed book of N name -> number entries.

Entry i (0 <= i < N) has the name (first, last) = divmod(P_name(i), name_pool) and the number P_num(i), written
with `digits` digits (leading zeros kept), where P_name and P_num are keyed permutations (Feistel networks with
cycle walking) of [0, name_pool**2) and [0, 10**digits), keyed by `book_seed`. Both are bijections, so names
are unique and numbers are unique, and nothing is stored per entry: a book of millions costs nothing to build,
any entry is computed on demand from its index, and a name is looked up by inverting P_name.

train: documents of `lines_per_doc` entries drawn uniformly (with replacement) from the whole book, loss on
every token after BOS (pretraining on the book):

    BOS F12 L873 : 5 5 5 0 1 2 3 4 5 6 ; F7 L1999 : 0 0 3 ... ; EOS

eval: closed-book queries over a fixed subset of `eval_entries` entries (default
min(1000, N)) (P_eval(0..E-1), a keyed permutation
of [0, N)), all of them training entries as in the paper; loss (and exact match) on the digits only:

    BOS F12 L873 : 5 5 5 0 1 2 3 4 5 6 EOS
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.data import PhoneBook as PhoneBookConfig

from .base import Example, Examples, UnknownSplit, Vocab, mix64, through_eos

COLON, SEMI, DIGIT0 = 3, 4, 5  # ids of ':', ';' and '0' (PhoneBookConfig.SPECIALS)
FIRST0 = len(PhoneBookConfig.SPECIALS)  # id of the first first-name token; last names follow the first names

ROUNDS = 4


class Permutation:
    """A keyed bijection of [0, size): a balanced Feistel network on 2h bits (4**h >= size), cycle-walked.

    Applying the network again to values that land outside [0, size) walks the cycle back into range, so the
    map is a permutation of [0, size) (and the inverse walks the inverse network). O(1) memory, vectorised.
    """

    def __init__(self, size: int, key: int, salt: int):
        self.size = size
        self.half = max(1, (max(size - 1, 1).bit_length() + 1) // 2)  # bits per half
        self.mask = np.uint64((1 << self.half) - 1)
        seeds = np.random.SeedSequence([key, salt]).generate_state(ROUNDS, dtype=np.uint64)
        self.keys = [np.uint64(k) for k in seeds]

    def _round(self, r: np.ndarray, k: np.uint64) -> np.ndarray:
        return mix64(r ^ k) & self.mask

    def _forward(self, x: np.ndarray) -> np.ndarray:
        h = np.uint64(self.half)
        left, right = x >> h, x & self.mask
        for k in self.keys:
            left, right = right, left ^ self._round(right, k)
        return (left << h) | right

    def _backward(self, y: np.ndarray) -> np.ndarray:
        h = np.uint64(self.half)
        left, right = y >> h, y & self.mask
        for k in reversed(self.keys):
            left, right = right ^ self._round(left, k), left
        return (left << h) | right

    def _walk(self, x: np.ndarray, step) -> np.ndarray:
        y = step(x)
        out = np.flatnonzero(y >= np.uint64(self.size))
        while out.size:  # terminates: the cycle through x (in range) returns to the range
            y[out] = step(y[out])
            out = out[y[out] >= np.uint64(self.size)]
        return y

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """P(x) for x in [0, size) (any shape), as uint64."""
        return self._walk(np.asarray(x, dtype=np.uint64).reshape(-1), self._forward).reshape(np.shape(x))

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """P^-1(y) for y in [0, size) (any shape), as uint64."""
        return self._walk(np.asarray(y, dtype=np.uint64).reshape(-1), self._backward).reshape(np.shape(y))


class PhoneBook:
    """Generator of phone-book documents (train) and closed-book queries (eval) over one fixed book."""

    def __init__(self, cfg: PhoneBookConfig):
        self.cfg = cfg
        pool = cfg.name_pool
        self.vocab = Vocab(
            (*PhoneBookConfig.SPECIALS, *(f"F{j}" for j in range(pool)), *(f"L{j}" for j in range(pool)))
        )
        self.names = Permutation(pool * pool, cfg.book_seed, 1)
        self.numbers = Permutation(10**cfg.digits, cfg.book_seed, 2)
        order = Permutation(cfg.entries, cfg.book_seed, 3)
        self.eval_entries = order(np.arange(cfg.eval_size)).astype(np.int64)  # [E] the fixed eval subset
        self.powers = 10 ** np.arange(cfg.digits - 1, -1, -1, dtype=np.uint64)  # [D] most significant first

    # ---- the book ------------------------------------------------------------------------------------------

    def name_tokens(self, entry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first, last) token ids of the entries' names (shape of `entry`)."""
        first, last = np.divmod(self.names(entry).astype(np.int64), self.cfg.name_pool)
        return FIRST0 + first, FIRST0 + self.cfg.name_pool + last

    def number(self, entry: np.ndarray) -> np.ndarray:
        """The entries' numbers as int64 (shape of `entry`)."""
        return self.numbers(entry).astype(np.int64)

    def digit_tokens(self, entry: np.ndarray) -> np.ndarray:
        """Digit token ids of the entries' numbers, [*entry.shape, digits], most significant first."""
        num = self.numbers(entry)[..., None]
        return DIGIT0 + ((num // self.powers) % np.uint64(10)).astype(np.int64)

    def lookup(self, first: np.ndarray, last: np.ndarray) -> np.ndarray:
        """The entry whose name has these token ids, or -1 where no entry (or no name) does."""
        pool = self.cfg.name_pool
        f, la = np.asarray(first, dtype=np.int64) - FIRST0, np.asarray(last, dtype=np.int64) - FIRST0 - pool
        valid = (f >= 0) & (f < pool) & (la >= 0) & (la < pool)
        idx = self.names.inverse(np.where(valid, f * pool + la, 0)).astype(np.int64)
        return np.where(valid & (idx < self.cfg.entries), idx, -1)

    # ---- the contract --------------------------------------------------------------------------------------

    def sample(
        self, rng: np.random.Generator, n: int, split: str = "train", length: int | None = None
    ) -> Examples:
        """n documents (train) or n queries about the eval subset (eval); `length` is not used."""
        if split == "train":
            return self._documents(rng, n)
        if split == "eval":
            return self._queries(rng, n)
        raise UnknownSplit(f"no split {split!r}; phonebook has {', '.join(PhoneBookConfig.SPLITS)}")

    def _lines(self, entry: np.ndarray) -> np.ndarray:
        """`first last : d1..dD` token ids of the entries, [*entry.shape, D + 3]."""
        first, last = self.name_tokens(entry)
        head = np.stack([first, last, np.full_like(first, COLON)], axis=-1)
        return np.concatenate([head, self.digit_tokens(entry)], axis=-1)

    def _documents(self, rng: np.random.Generator, n: int) -> Examples:
        lines, d = self.cfg.lines_per_doc, self.cfg.digits
        entry = rng.integers(0, self.cfg.entries, size=(n, lines))  # [n, lines] uniform over the book
        body = np.concatenate([self._lines(entry), np.full((n, lines, 1), SEMI)], axis=-1)  # [n, lines, D+4]
        L = self.cfg.seq_len("train")
        tokens = np.empty((n, L), dtype=np.int32)
        tokens[:, 0] = self.vocab.bos
        tokens[:, 1:-1] = body.reshape(n, lines * (d + 4))
        tokens[:, -1] = self.vocab.eos
        loss_mask = np.ones((n, L), dtype=bool)
        loss_mask[:, 0] = False  # BOS is never a target
        return Examples(tokens, loss_mask, np.full(n, L, dtype=np.int64), None, {"entry": entry})

    def _queries(self, rng: np.random.Generator, n: int) -> Examples:
        entry = self.eval_entries[rng.integers(0, self.cfg.eval_size, size=n)]  # [n]
        L = self.cfg.seq_len("eval")
        tokens = np.empty((n, L), dtype=np.int32)
        tokens[:, 0] = self.vocab.bos
        tokens[:, 1:-1] = self._lines(entry)
        tokens[:, -1] = self.vocab.eos
        loss_mask = np.zeros((n, L), dtype=bool)
        loss_mask[:, 4:-1] = True  # the digits
        meta = {"entry": entry, "number": self.number(entry)}
        return Examples(tokens, loss_mask, np.full(n, L, dtype=np.int64), None, meta)

    def verify(self, example: Example, completion: Sequence[int]) -> bool:
        """Query: the first `digits` generated tokens are the book's number for the name in the prompt, and no
        further digit follows. Document: `lines_per_doc` lines `first last : number ;` of the book, then EOS.
        """
        out = np.asarray(completion, dtype=np.int64)
        d = self.cfg.digits
        if len(example.prompt) > 1:  # a query: BOS first last :
            entry = self.lookup(example.prompt[1:2], example.prompt[2:3])
            if entry[0] < 0 or len(out) < d or (len(out) > d and DIGIT0 <= out[d] < DIGIT0 + 10):
                return False
            return bool(np.array_equal(out[:d], self.digit_tokens(entry)[0]))
        body = self.cfg.lines_per_doc * (d + 4)
        if len(out) < body + 1 or out[body] != self.vocab.eos:
            return False
        lines = out[:body].reshape(self.cfg.lines_per_doc, d + 4)
        entry = self.lookup(lines[:, 0], lines[:, 1])
        if (entry < 0).any() or (lines[:, 2] != COLON).any() or (lines[:, -1] != SEMI).any():
            return False
        return bool(np.array_equal(lines[:, 3:-1], self.digit_tokens(entry)))

    def answer(self, example: Example, completion: Sequence[int]) -> tuple[int, ...]:
        """A query's: the leading run of digits (the number recalled; the verifier wants exactly the book's).
        A document's: the completion through its first EOS."""
        if len(example.prompt) > 1:
            out = [int(t) for t in completion]
            end = next((i for i, t in enumerate(out) if not DIGIT0 <= t < DIGIT0 + 10), len(out))
            return tuple(out[:end])
        return through_eos(completion, self.vocab.eos)

    def render(self, example: Example) -> str:
        """Query: `F12 L873 : -> 5550123456`; document: its first lines, one per line, numbers run together."""
        if len(example.prompt) > 1:
            name = self.vocab.decode(example.prompt[1:])
            digits = "".join(self.vocab.tokens[t] for t in example.answer)
            return f"BOS {name} -> {digits} EOS   (entry {int(example.meta['entry'])})"
        d, shown = self.cfg.digits, min(self.cfg.lines_per_doc, 4)
        lines = example.tokens[1:-1].reshape(self.cfg.lines_per_doc, d + 4)
        text = [
            f"  {self.vocab.decode(row[:3])} {''.join(self.vocab.tokens[t] for t in row[3:-1])} ;"
            for row in lines[:shown]
        ]
        more = self.cfg.lines_per_doc - shown
        tail = [f"  ... {more} more lines (loss on every token)"] if more else ["  (loss on every token)"]
        return "\n".join(["BOS", *text, *tail, "EOS"])
