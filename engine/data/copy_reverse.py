"""Copy and reverse with coupled position ids: planted correlations (docs/papers/length_generalisation.md).

Format: `BOS x1 ... xn SEP y1 ... yn EOS` over `symbols` i.i.d. symbols (duplicates allowed); y_j = x_j
(copy) or x_{n+1-j} (reverse). Loss on y1..yn and EOS. Rendered (copy, n=3, o=5):

    BOS 3 1 3 SEP -> 3 1 3 EOS   (copy, n=3, o=5; ids 0 6 7 8 5 | 6 7 8 9)

Coupled position ids (`positions`, docs/papers/length_generalisation.md): BOS -> 0; x_i -> o+i;
SEP -> o (copy) or o+n+1 (reverse);
y_j -> o+j (copy) or o+n+1-j (reverse), i.e. the id of the x it copies; EOS continues the answer's ids:
o+n+1 (copy) or o (reverse). o ~ U{0..P_max-n-1} per example in the train split, 0 in the eval split, so
every id lies in [0, P_max] (a learned table needs P_max + 1 rows). PAD gets id 0.

`meta` (per example; [n, L] arrays are -1 outside the answer):
  length            n
  offset            o
  target_positions  int32 [n, L]: the coupled id each answer token (y_j, EOS) carries, at that token's column;
                    what Predictive Position Coupling learns to predict (shift by one like the tokens)
  sources           int32 [n, L]: at y_j, the column of the one input token it depends on (x_j or x_{n+1-j});
                    -1 at EOS (it depends on n only) and outside the answer

The token width of a batch is fixed by the split (2*hi + 3, or 2*length + 3 when `length` is pinned), not by
the batch's longest example, so that [n, L] meta arrays of evaluation chunks concatenate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.data import CopyTask

from .base import Example, Examples, UnknownSplit, Vocab, through_eos

BOS, EOS, SEP = 1, 2, 3  # symbol s has id SYM0 + s
SYM0 = 4


def make_vocab(symbols: int) -> Vocab:
    """PAD BOS EOS SEP, then the symbols named 0, 1, ..."""
    return Vocab((*CopyTask.SPECIALS, *(str(s) for s in range(symbols))))


def answer(prompt: Sequence[int], reverse: bool) -> list[int] | None:
    """The answer tokens (y1..yn EOS) a prompt `BOS x1..xn SEP` asks for; None when it is not one."""
    p = [int(t) for t in prompt]
    if len(p) < 2 or p[0] != BOS or p[-1] != SEP or any(t < SYM0 for t in p[1:-1]):
        return None
    x = p[1:-1]
    return [*(x[::-1] if reverse else x), EOS]


class CopyReverse:
    """Generator of copy (`kind: copy`) or reverse (`kind: reverse`) examples with coupled positions."""

    def __init__(self, cfg: CopyTask):
        self.cfg = cfg
        self.reverse = cfg.reverse
        self.vocab = make_vocab(cfg.symbols)

    def sample(
        self, rng: np.random.Generator, n: int, split: str = "train", length: int | None = None
    ) -> Examples:
        """n examples of `split` (train | eval), all of input length `length` when it is given."""
        cfg = self.cfg
        if split not in cfg.SPLITS:
            raise UnknownSplit(f"no split {split!r}; {cfg.kind} has {', '.join(cfg.SPLITS)}")
        if length is not None and not 1 <= length <= cfg.max_position_id - 1:
            raise ValueError(
                f"length {length} cannot be numbered below max_position_id={cfg.max_position_id}; "
                f"need 1 <= length <= {cfg.max_position_id - 1}"
            )
        lo, hi = (length, length) if length is not None else getattr(cfg.length, split)
        lens = rng.integers(lo, hi + 1, size=n)  # [n] input length
        x = rng.integers(0, cfg.symbols, size=(n, hi), dtype=np.int32)  # [n, hi] symbol indices
        if split == "train":
            offset = rng.integers(0, cfg.max_position_id - lens)  # [n] o in 0..P_max-n-1
        else:
            offset = np.zeros(n, dtype=np.int64)

        L = 2 * hi + 3
        col = np.arange(L)[None, :]  # [1, L]
        ln, o = lens[:, None], offset[:, None]  # [n, 1]
        is_x = (col >= 1) & (col <= ln)  # [n, L]
        is_y = (col >= ln + 2) & (col <= 2 * ln + 1)
        j = col - ln - 1  # answer index (1..n on y)
        src = np.where(is_y, (ln + 1 - j) if self.reverse else j, -1)  # column of the copied x

        xcols = np.zeros((n, L), dtype=np.int32)  # x laid out at columns 1..hi
        xcols[:, 1 : hi + 1] = x + SYM0
        tokens = np.zeros((n, L), dtype=np.int32)  # PAD = 0
        tokens[:, 0] = self.vocab.bos
        tokens = np.where(is_x, xcols, tokens)
        tokens = np.where(is_y, np.take_along_axis(xcols, np.maximum(src, 0), axis=1), tokens)
        tokens = np.where(col == ln + 1, SEP, tokens)
        eos = col == 2 * ln + 2
        tokens = np.where(eos, self.vocab.eos, tokens).astype(np.int32)

        positions = np.where(is_x, o + col, 0)
        positions = np.where(is_y, o + src, positions)
        positions = np.where(col == ln + 1, o + (ln + 1 if self.reverse else 0), positions)
        positions = np.where(eos, o + (0 if self.reverse else ln + 1), positions).astype(np.int32)

        loss_mask = is_y | eos
        meta = {
            "length": lens,
            "offset": offset,
            "target_positions": np.where(loss_mask, positions, -1).astype(np.int32),
            "sources": src.astype(np.int32),
        }
        return Examples(tokens, loss_mask, 2 * lens + 3, positions, meta)

    def verify(self, example: Example, completion: Sequence[int]) -> bool:
        """Correct iff the completion starts with the copied (or reversed) input and EOS; later tokens are ignored."""
        want = answer(example.prompt, self.reverse)
        return want is not None and [int(t) for t in completion[: len(want)]] == want

    def answer(self, example: Example, completion: Sequence[int]) -> tuple[int, ...]:
        """The completion through its first EOS (what the verifier compares)."""
        return through_eos(completion, self.vocab.eos)

    def render(self, example: Example) -> str:
        """`BOS x.. SEP -> y.. EOS` with n, o and the coupled ids of prompt | answer."""
        k = len(example.prompt)
        pos = example.positions
        ids = "" if pos is None else f"; ids {' '.join(map(str, pos[:k]))} | {' '.join(map(str, pos[k:]))}"
        name = "reverse" if self.reverse else "copy"
        return (
            f"{self.vocab.decode(example.prompt)} -> {self.vocab.decode(example.answer)}   "
            f"({name}, n={int(example.meta['length'])}, o={int(example.meta['offset'])}{ids})"
        )
