"""Tests of the sampling estimators against brute force over every k-subset and hand-worked cases."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.evals.estimators import any_at_k, maj_at_k, pass_at_k


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_is_the_subset_average(nck):
    """pass@k equals the fraction of k-subsets of the n samples holding a right one."""
    n, c, k = nck
    flags = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(flags, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets), abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    exact = 1 - Fraction(math.comb(1024 - 3, 512), math.comb(1024, 512))
    assert pass_at_k(1024, 3, 512) == pytest.approx(float(exact), rel=1e-12)
    assert pass_at_k(1024, 0, 512) == 0.0 and pass_at_k(1024, 600, 512) == 1.0
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 8)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(4, 5, 1)


def test_any_at_k_adds_half_of_the_rest():
    assert any_at_k(4, 0, 2) == 0.5
    assert any_at_k(4, 4, 2) == 1.0
    assert any_at_k(4, 1, 2) == pytest.approx(0.5 + 0.5 * 0.5)


def test_maj_at_k_votes_per_block():
    rng = np.random.default_rng(0)
    answers = [1, 1, 2, 3, 3, 3, None, None]
    correct = [True, True, False, False, False, False, False, False]
    # blocks of 2: [1 1] right, [2 3] tie (2 or 3: wrong either way), [3 3] wrong, [None None] nothing
    assert maj_at_k(answers, correct, 2, rng) == 0.25
    # one block of 8: 3 has three votes against two: wrong
    assert maj_at_k(answers, correct, 8, rng) == 0.0
    # k = 1: each sample alone
    assert maj_at_k(answers, correct, 1, rng) == 2 / 8


def test_maj_at_k_breaks_ties_with_the_generator():
    """A 1-1 tie between a right and a wrong answer: the same seed gives the same winner, and both win sometimes."""
    answers, correct = [7, 8], [True, False]
    wins = [maj_at_k(answers, correct, 2, np.random.default_rng(s)) for s in range(40)]
    assert set(wins) == {0.0, 1.0}
    assert wins == [maj_at_k(answers, correct, 2, np.random.default_rng(s)) for s in range(40)]
    with pytest.raises(ValueError, match="k <= n"):
        maj_at_k(answers, correct, 3, np.random.default_rng(0))
