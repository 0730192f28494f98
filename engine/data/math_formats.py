"""Echo Chamber word problems (docs/papers/echo_chamber.md): templated arithmetic, solved in one of three formats.

A problem is a chain of operations on one quantity: a start value, then sentences that add, subtract, multiply,
divide exactly, or buy boxes (a product added: two operations), then the question. Each operation is drawn
uniformly among those whose operand keeps every value in 0..max_value (a division only by a divisor in 2..9
of the current value), so no draw is ever rejected. Numbers are written one digit per token.

    BOS Tom has 12 apples . Tom buys 3 boxes of 4 apples . Tom loses 5 . How many apples does Tom have ? :

The solution after `:` is in one format, then EOS (the loss covers the solution and EOS):
- code:  `def solve ( ) : a = 12 ; b = 3 * 4 ; c = a + b ; d = c - 5 ; return d`
- nl:    `3 times 4 is 12 . 12 plus 12 is 24 . 24 minus 5 is 19 . The answer is \\boxed{ 19 } .`
- mixed: the first operation's sentence(s), then the rest as a program:
         `3 times 4 is 12 . 12 plus 12 is 24 . <code> a = 24 ; b = a - 5 ; return b </code>`

Filler documents (a `filler` share of `train`) are 4 to 12 random story sentences with random numbers, no
question and no solution; their loss covers every token but BOS.

Splits: `train` is the pretraining mixture (formats by weight, plus filler); `rl` and `easy` draw problems with
easy_ops operations and `hard` with hard_ops, each with one reference solution in a format drawn by weight. The
easy split holds out, per (name, item), a seeded 1/16 of the start values 1..200; train and rl never start a
problem with those, so no easy problem is ever a training or RL problem; hard problems have more operations.

`verify` reads the answer of a completion in any format, decided by its structure: one that starts with
`def solve` is run as a program, else one with a `<code>` block runs the block, else `\\boxed{ N }` is read.
Programs run on this module's own interpreter (`run`), never Python's evaluation: `v = expr ;` statements and
`return expr`, expressions over integers and variables a..z with + - * / and parentheses; division must be
exact, and any error (syntax, undefined variable, division by zero or with a remainder, a value past 10^15)
means no answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.data import MathFormats as MathFormatsConfig
from schemas.data.math_formats import ADD_MAX, BOX_MAX, FACTOR_MAX, FILLER_SENTENCES, FORMATS, MAX_OPS

from .base import Example, Examples, UnknownSplit, Vocab, mix64, through_eos

CODE, NL, MIXED, FILLER = 0, 1, 2, -1  # meta `format`
OPS = ("add", "sub", "mul", "div")  # meta `opcodes` 0..3
START = (1, 200)  # start values, inclusive
HELD_OUT = 16  # the easy split holds out 1 in HELD_OUT start values per (name, item)
HEADER = ("def", "solve", "(", ")", ":")
MAX_COMPLETION = 1024  # tokens before EOS; a longer completion has no answer
MAX_MAGNITUDE = 10**15  # a program value past this is an error (runaway products)
MAX_DIGITS = 15
MAX_DEPTH = 32  # nesting of parentheses
COLUMNS = 64  # uniforms drawn per example (a problem uses at most 6 + 3 * MAX_OPS, filler 1 + 5 * 12)
DIGITS = frozenset("0123456789")
VARIABLES = frozenset(MathFormatsConfig.VARIABLES)


# ---- the interpreter -------------------------------------------------------------------------------------


class ProgramError(ValueError):
    """A program that cannot run: bad syntax, an undefined variable, an inexact or zero division, overflow."""


class _Parser:
    """Recursive descent over token strings: `(v = expr ;)* return expr`, then the end."""

    def __init__(self, tokens: Sequence[str]):
        self.t, self.i, self.env, self.depth = list(tokens), 0, {}, 0

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise ProgramError(f"expected {want or 'a token'} at {self.i}, found {tok}")
        self.i += 1
        return tok

    def program(self) -> int:
        while self.peek() != "return":
            if self.peek() is None:
                raise ProgramError("the program ends without return")
            var = self.take()
            if var not in VARIABLES:
                raise ProgramError(f"{var!r} at {self.i - 1} is not a variable")
            self.take("=")
            self.env[var] = self.expr()
            self.take(";")
        self.take("return")
        value = self.expr()
        if self.i != len(self.t):
            raise ProgramError(f"{self.t[self.i]!r} after the return value")
        return value

    def expr(self) -> int:
        value = self.term()
        while self.peek() in ("+", "-"):
            op, rhs = self.take(), self.term()
            value = _checked(value + rhs if op == "+" else value - rhs)
        return value

    def term(self) -> int:
        value = self.factor()
        while self.peek() in ("*", "/"):
            op, rhs = self.take(), self.factor()
            if op == "*":
                value = _checked(value * rhs)
            elif rhs == 0 or value % rhs:
                raise ProgramError(f"{value} / {rhs} is not an exact division")
            else:
                value //= rhs
        return value

    def factor(self) -> int:
        tok = self.peek()
        if tok == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ProgramError("parentheses nested too deep")
            self.take()
            value = self.expr()
            self.take(")")
            self.depth -= 1
            return value
        if tok in VARIABLES:
            self.take()
            if tok not in self.env:
                raise ProgramError(f"variable {tok} used before it is set")
            return self.env[tok]
        return self.number()

    def number(self) -> int:
        start = self.i
        while self.peek() in DIGITS:
            self.i += 1
        digits = self.t[start : self.i]
        if not digits:
            raise ProgramError(f"expected a number at {start}, found {self.peek()}")
        if len(digits) > MAX_DIGITS or (len(digits) > 1 and digits[0] == "0"):
            raise ProgramError(f"{''.join(digits)} is not a number (too long or a leading zero)")
        return int("".join(digits))


def _checked(value: int) -> int:
    if abs(value) > MAX_MAGNITUDE:
        raise ProgramError(f"{value} is past {MAX_MAGNITUDE}")
    return value


def run(tokens: Sequence[str]) -> int:
    """The value a program (token strings, without `def solve ( ) :`) returns; `ProgramError` if it cannot run."""
    return _Parser(tokens).program()


def evaluate(tokens: Sequence[str]) -> int | None:
    """The value a program returns, or None when it cannot run."""
    try:
        return run(tokens)
    except ProgramError:
        return None


def read_number(tokens: Sequence[str]) -> int | None:
    """The number that a run of digit tokens spells (no leading zero), or None."""
    if not tokens or len(tokens) > MAX_DIGITS or not all(t in DIGITS for t in tokens):
        return None
    if len(tokens) > 1 and tokens[0] == "0":
        return None
    return int("".join(tokens))


def solution_format(words: Sequence[str]) -> int | None:
    """The format a completion (token strings) is in, by its structure: CODE if it starts with `def solve`, else
    MIXED if it has a `<code>` block opener, else NL if it has `\\boxed{`; None when none of these."""
    if tuple(words[:2]) == HEADER[:2]:
        return CODE
    if "<code>" in words:
        return MIXED
    if "\\boxed{" in words:
        return NL
    return None


def read_answer(words: Sequence[str]) -> int | None:
    """The answer of a completion (token strings through its end, EOS excluded) in any format, or None."""
    fmt = solution_format(words)
    if fmt == CODE:
        return evaluate(words[len(HEADER) :]) if tuple(words[: len(HEADER)]) == HEADER else None
    if fmt == MIXED:
        start = words.index("<code>") + 1
        if "</code>" not in words[start:]:
            return None
        return evaluate(words[start : words.index("</code>", start)])
    if fmt == NL:
        start = words.index("\\boxed{") + 1
        if "}" not in words[start:]:
            return None
        return read_number(words[start : words.index("}", start)])
    return None


# ---- the generator ---------------------------------------------------------------------------------------


def _num(v: int) -> list[str]:
    return list(str(v))


def _fill(template: str, **slots: object) -> list[str]:
    """A template's tokens with its `$` slots filled (numbers spelled digit by digit)."""
    out: list[str] = []
    for w in template.split():
        if w[0] != "$":
            out.append(w)
        else:
            v = slots[w[1]]
            out.extend(_num(v) if isinstance(v, int) else [v])
    return out


class MathFormats:
    """Generator of Echo Chamber word problems: `train` (formats by weight, plus filler), `rl`, `easy`, `hard`."""

    def __init__(self, cfg: MathFormatsConfig):
        self.cfg = cfg
        self.vocab = Vocab(cfg.VOCAB)
        self.ids = {tok: i for i, tok in enumerate(cfg.VOCAB)}
        shares = cfg.weights.shares()
        self._cum = (shares[0], shares[0] + shares[1])  # u below [0]: code, below [1]: nl, else mixed
        self.max_value = cfg.max_value
        self._starts = self._held_out_starts()

    def _held_out_starts(self) -> dict[bool, list[list[int]]]:
        """Start values per (name, item) (index name * items + item): held out for easy (True) or not (False).

        Each (name, item) holds out the first ceil(1/16) of its start values in a seeded order."""
        lo, hi = START[0], min(START[1], self.max_value)
        values = np.arange(lo, hi + 1, dtype=np.uint64)
        combos = len(self.cfg.NAMES) * len(self.cfg.ITEMS)
        held = -(-len(values) // HELD_OUT)
        out: dict[bool, list[list[int]]] = {True: [], False: []}
        for c in range(combos):
            key = mix64(values + np.uint64(((self.cfg.world_seed * 64 + c) * 1_000_003) % 2**63))
            order = values[np.argsort(key, kind="stable")].astype(np.int64)
            out[True].append(sorted(order[:held].tolist()))
            out[False].append(sorted(order[held:].tolist()))
        return out

    # ---- sampling ---------------------------------------------------------------------------------------

    def sample(
        self, rng: np.random.Generator, n: int, split: str = "train", length: int | None = None
    ) -> Examples:
        """n examples of `split` (train | rl | easy | hard); `length` pins the operations per problem."""
        cfg = self.cfg
        if split not in cfg.SPLITS:
            raise UnknownSplit(f"no split {split!r}; math_formats has {', '.join(cfg.SPLITS)}")
        lo, hi = cfg.hard_ops if split == "hard" else cfg.easy_ops
        if length is not None:
            if not lo <= length <= hi:
                raise ValueError(f"length {length} lies outside the {split} operations [{lo}, {hi}]")
            lo = hi = length
        u_all = rng.random((n, COLUMNS)).tolist()
        filler = cfg.filler if split == "train" else 0.0
        docs = []
        for u in u_all:
            it = iter(u)
            if next(it) < filler:
                docs.append(self._filler(it))
            else:
                docs.append(self._problem(it, lo, hi, held=split == "easy"))
        return self._batch(docs)

    def _problem(self, u, lo: int, hi: int, held: bool) -> dict:
        """One problem and its solution, drawn with the uniforms of iterator `u`."""
        cfg, M = self.cfg, self.max_value
        a = next(u)
        fmt = CODE if a < self._cum[0] else NL if a < self._cum[1] else MIXED
        ops = lo + int(next(u) * (hi - lo + 1))
        name = int(next(u) * len(cfg.NAMES))
        item = int(next(u) * len(cfg.ITEMS))
        starts = self._starts[held][name * len(cfg.ITEMS) + item]
        cur = start = starts[int(next(u) * len(starts))]
        who, what = cfg.NAMES[name], cfg.ITEMS[item]
        steps: list[tuple[str, list[tuple[int, int, int, int]]]] = []  # (sentence, [(op, x, n, y)])
        prompt = ["BOS", *_fill(cfg.STORY["start"], P=who, V=cur, I=what)]
        left = ops
        while left:
            feasible = []
            if cur < M:
                feasible.append("add")
            if cur > 0:
                feasible.append("sub")
            if 0 < cur and 2 * cur <= M:
                feasible.append("mul")
            divisors = [d for d in range(2, FACTOR_MAX + 1) if cur % d == 0] if cur > 0 else []
            if divisors:
                feasible.append("div")
            if left >= 2 and cur + 4 <= M:
                feasible.append("box")
            kind = feasible[int(next(u) * len(feasible))]
            r1, r2 = next(u), next(u)
            if kind == "add":
                k = 1 + int(r1 * min(ADD_MAX, M - cur))
                prims = [(0, cur, k, cur + k)]
                prompt += _fill(cfg.STORY["add"], P=who, N=k)
            elif kind == "sub":
                k = 1 + int(r1 * min(ADD_MAX, cur))
                prims = [(1, cur, k, cur - k)]
                prompt += _fill(cfg.STORY["sub"], P=who, N=k)
            elif kind == "mul":
                k = 2 + int(r1 * (min(FACTOR_MAX, M // cur) - 1))
                prims = [(2, cur, k, cur * k)]
                prompt += _fill(cfg.STORY["mul"], P=who, N=k)
            elif kind == "div":
                k = divisors[int(r1 * len(divisors))]
                prims = [(3, cur, k, cur // k)]
                prompt += _fill(cfg.STORY["div"], P=who, N=k)
            else:  # box: A boxes of B, added
                room = M - cur
                A = 2 + int(r1 * (min(FACTOR_MAX, room // 2) - 1))
                B = 2 + int(r2 * (min(BOX_MAX, room // A) - 1))
                prims = [(2, A, B, A * B), (0, cur, A * B, cur + A * B)]
                prompt += _fill(cfg.STORY["box"], P=who, A=A, B=B, I=what)
            steps.append((kind, prims))
            cur = prims[-1][3]
            left -= len(prims)
        prompt += _fill(cfg.STORY["question"], I=what, P=who)
        prompt.append(cfg.DELIMITER)
        solution = self.solution(fmt, start, steps)
        prims = [p for _, ps in steps for p in ps]
        return {"prompt": prompt, "solution": solution, "format": fmt, "answer": cur, "prims": prims}

    def solution(self, fmt: int, start: int, steps: list) -> list[str]:
        """The solution tokens (EOS included) of a problem in a format, from its start value and steps."""
        if fmt == CODE:
            return [*HEADER, *self._program(start, steps), "EOS"]
        if fmt == NL:
            out = [w for _, prims in steps for p in prims for w in self._sentence(p)]
            return [*out, *_fill(self.cfg.ANSWER, Y=steps[-1][1][-1][3] if steps else start), "EOS"]
        first = [w for p in steps[0][1] for w in self._sentence(p)]
        return [*first, "<code>", *self._program(steps[0][1][-1][3], steps[1:]), "</code>", "EOS"]

    def _sentence(self, prim: tuple[int, int, int, int]) -> list[str]:
        op, x, k, y = prim
        return _fill(self.cfg.STEP[OPS[op]], X=x, N=k, Y=y)

    @staticmethod
    def _program(start: int, steps: list) -> list[str]:
        """`a = start ; b = a op k ; ... ; return v` (a box: `v = A * B ; w = u + v ;`)."""
        names = MathFormatsConfig.VARIABLES
        out, last, nxt = ["a", "=", *_num(start), ";"], "a", 1
        sym = "+-*/"
        for kind, prims in steps:
            if kind == "box":
                (_, A, B, _), _ = prims
                v, w = names[nxt], names[nxt + 1]
                out += [v, "=", *_num(A), "*", *_num(B), ";", w, "=", last, "+", v, ";"]
                last, nxt = w, nxt + 2
            else:
                op, _, k, _ = prims[0]
                v = names[nxt]
                out += [v, "=", last, sym[op], *_num(k), ";"]
                last, nxt = v, nxt + 1
        return [*out, "return", last]

    def _filler(self, u) -> dict:
        """Random story sentences with random numbers: no question, no solution."""
        cfg, M = self.cfg, self.max_value
        kinds = ("start", "add", "sub", "mul", "div", "box")
        lo, hi = FILLER_SENTENCES
        words = ["BOS"]
        for _ in range(lo + int(next(u) * (hi - lo + 1))):
            kind = kinds[int(next(u) * len(kinds))]
            who = cfg.NAMES[int(next(u) * len(cfg.NAMES))]
            what = cfg.ITEMS[int(next(u) * len(cfg.ITEMS))]
            r1, r2 = next(u), next(u)
            V = int(r1 * (M + 1))
            N = 1 + int(r1 * ADD_MAX) if kind in ("add", "sub") else 2 + int(r1 * (FACTOR_MAX - 1))
            B = 2 + int(r2 * (BOX_MAX - 1))
            words += _fill(cfg.STORY[kind], P=who, I=what, V=V, N=N, A=N, B=B)
        words.append("EOS")
        return {"prompt": words[:1], "solution": words[1:], "format": FILLER, "answer": -1, "prims": []}

    def _batch(self, docs: list[dict]) -> Examples:
        """Pad the documents into arrays; the loss covers each solution (every filler token but BOS)."""
        n = len(docs)
        ids = self.ids
        rows = [[ids[w] for w in d["prompt"]] + [ids[w] for w in d["solution"]] for d in docs]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        width = int(lengths.max(initial=1))
        tokens = np.zeros((n, width), dtype=np.int32)
        loss_mask = np.zeros((n, width), dtype=bool)
        opcodes = np.full((n, MAX_OPS), -1, dtype=np.int64)
        operands = np.full((n, MAX_OPS, 2), -1, dtype=np.int64)
        results = np.full((n, MAX_OPS), -1, dtype=np.int64)
        for i, (row, d) in enumerate(zip(rows, docs, strict=True)):
            tokens[i, : len(row)] = row
            loss_mask[i, len(d["prompt"]) : len(row)] = True
            for j, (op, x, k, y) in enumerate(d["prims"]):
                opcodes[i, j], operands[i, j, 0], operands[i, j, 1], results[i, j] = op, x, k, y
        meta = {
            "format": np.array([d["format"] for d in docs], dtype=np.int64),
            "answer": np.array([d["answer"] for d in docs], dtype=np.int64),
            "ops": (opcodes >= 0).sum(1),
            "opcodes": opcodes,
            "operands": operands,
            "results": results,
        }
        return Examples(tokens, loss_mask, lengths, None, meta)

    # ---- checking and showing ---------------------------------------------------------------------------

    def words(self, completion: Sequence[int]) -> list[str] | None:
        """A completion through its first EOS (excluded) as token strings; None past MAX_COMPLETION tokens."""
        toks = through_eos(completion, self.vocab.eos)
        if toks and toks[-1] == self.vocab.eos:
            toks = toks[:-1]
        if len(toks) > MAX_COMPLETION:
            return None
        V = len(self.vocab)
        return [self.vocab.tokens[t] if 0 <= t < V else "?" for t in toks]

    def answer(self, example: Example, completion: Sequence[int]) -> int | None:
        """The integer a completion answers, in any format (code run, `<code>` block run, `\\boxed{ N }` read);
        None when none can be read."""
        words = self.words(completion)
        return None if words is None else read_answer(words)

    def verify(self, example: Example, completion: Sequence[int]) -> bool:
        """Whether the completion's answer (in any format) is the problem's; never for filler."""
        truth = int(example.meta["answer"])
        return truth >= 0 and self.answer(example, completion) == truth

    def check(self, example: Example, completion: Sequence[int]) -> dict[str, bool]:
        """Which format the completion is in (by structure; at most one is True): `format_code`, `format_nl`,
        `format_mixed`."""
        words = self.words(completion)
        fmt = None if words is None else solution_format(words)
        return {f"format_{name}": fmt == i for i, name in enumerate(FORMATS)}

    def render(self, example: Example) -> str:
        """The document as text, digits of a number joined: `question : -> solution   (format, ops, answer)`."""
        fmt = int(example.meta["format"])
        if fmt == FILLER:
            return f"[filler text, loss on every token] {_text(self.vocab, example.tokens)}"
        return (
            f"{_text(self.vocab, example.prompt)} -> {_text(self.vocab, example.answer)}"
            f"   ({FORMATS[fmt]}, {int(example.meta['ops'])} operations, answer {int(example.meta['answer'])})"
        )


def _text(vocab: Vocab, ids: Sequence[int]) -> str:
    """Tokens as words, the digits of each number joined."""
    out: list[str] = []
    digit = False
    for t in ids:
        w = vocab.tokens[int(t)]
        if w in DIGITS and digit:
            out[-1] += w
        else:
            out.append(w)
        digit = w in DIGITS
    return " ".join(out)
