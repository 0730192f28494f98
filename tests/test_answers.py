"""Every token generator's `answer`: what maj@k votes over. Gold completions have one and verify; equal answers
are judged alike (so a vote never merges a right and a wrong completion); tokens after the end do not count."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import registry
from schemas import data as D

KINDS = {
    "sparse_parity": (D.SparseParity(), "eval"),
    "solution_tree": (D.SolutionTree(), "test"),
    "connectivity": (D.Connectivity(depth=2), "eval"),
    "copy": (D.Copy(), "eval"),
    "reverse": (D.Reverse(), "eval"),
    "variable_assignment": (D.VariableAssignment(), "eval"),
    "sudoku": (D.Sudoku(), "eval"),
    "countdown": (D.Countdown(), "eval"),
    "phonebook": (D.PhoneBook(), "eval"),
    "shortest_path": (D.ShortestPath(), "eval"),
    "kg_experts": (D.KgExperts(), "test"),
    "kg_experts_cot": (D.KgExperts(cot=True, mode="generalization"), "test"),
    "math_formats": (D.MathFormats(formats=(1, 1, 1)), "easy"),
    "math_formats_hard": (D.MathFormats(formats=(1, 1, 1)), "hard"),
}
MANY_ANSWERS = {"countdown", "shortest_path"}  # several right answers (other paths); elsewhere one
_GENS: dict = {}


def generator(kind: str):
    """The generator of a kind, built once."""
    if kind not in _GENS:
        _GENS[kind] = registry.build_data(KINDS[kind][0])
    return _GENS[kind]


def examples(kind: str, seed: int, n: int = 4):
    """n examples of the kind's evaluation split, each with its gold completion (the tokens after the prompt)."""
    gen = generator(kind)
    ex = gen.sample(np.random.default_rng(seed), n, KINDS[kind][1])
    out = []
    for i in range(n):
        e = ex[i]
        out.append((e, e.tokens[len(e.prompt) :].tolist()))
    return gen, out


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), flips=st.lists(st.integers(0, 10**6), min_size=1, max_size=3))
def test_answers_judge_equal_completions_alike(kind, seed, flips):
    gen, exs = examples(kind, seed)
    rng = np.random.default_rng(seed)
    V = len(gen.vocab)
    for e, gold in exs:
        assert gen.verify(e, gold), gen.render(e)
        a_gold = gen.answer(e, gold)
        assert a_gold is not None
        # what follows the end of the answer is not read
        if gen.vocab.eos in gold:
            tail = gold + [int(t) for t in rng.integers(3, V, size=3)]
            assert gen.answer(e, tail) == a_gold
        # corrupt answer tokens: equal answers are judged alike; an answer that changed is not the gold one
        for f in flips:
            bad = list(gold)
            j = f % len(bad)
            bad[j] = int((bad[j] + 1 + f % (V - 1)) % V)
            a_bad = gen.answer(e, bad)
            if a_bad == a_gold:
                assert gen.verify(e, bad) == gen.verify(e, gold)
            elif kind not in MANY_ANSWERS:  # one right answer: any other is wrong
                assert not gen.verify(e, bad), (kind, bad)


def test_connectivity_votes_on_the_decision_node():
    gen, exs = examples("connectivity", 0)
    e, gold = exs[0]
    ids = gen.ids
    assert gen.answer(e, gold) == gen.parse(gold)["decision"][0]
    two = gold[: gold.index(ids["decision"])] + [
        ids["decision"],
        ids[":"],
        ids["["],
        gold[-3],
        gold[-3],
        ids["]"],
    ]
    assert gen.answer(e, two) is None, "two decision nodes: no answer"


def test_countdown_votes_on_the_solution_not_the_search():
    """Two traces reaching the same operations are one answer, whatever the search before; none without a path."""
    gen, exs = examples("countdown", 1)
    e, gold = exs[0]
    ops = gen.answer(e, gold)
    assert isinstance(ops, tuple) and len(ops) == 3 and all(len(op) == 4 for op in ops)
    assert gen.answer(e, gold[: len(gold) // 2]) is None
