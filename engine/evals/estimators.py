"""Estimators of sampling metrics from n judged samples of one prompt: pass@k, maj@k, any@k (pure Python)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of a prompt with c right samples out of n: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which never forms the binomials (C(1024, 512) overflows a float).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def any_at_k(n: int, c: int, k: int, guess: float = 0.5) -> float:
    """Let Me Think's any@k: P(some of k samples carries a certificate), c of n samples having one, plus
    `guess` (the score of answering without one: 0.5 for a choice between two targets) times the rest."""
    a = pass_at_k(n, c, k)
    return a + guess * (1.0 - a)


def maj_at_k(
    answers: Sequence[Hashable | None], correct: Sequence[bool], k: int, rng: np.random.Generator
) -> float:
    """maj@k of one prompt: over the len(answers) // k disjoint blocks of k consecutive samples, the fraction
    whose most common answer (None, an answer that could not be extracted, never counts) is a right one.

    A tie between answers is broken uniformly at random with `rng`; a block without any answer scores 0.
    An answer is right when a sample that gave it was judged right (`correct`).
    """
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"{n} answers but {len(correct)} correctness flags")
    if not 1 <= k <= n:
        raise ValueError(f"maj@k needs 1 <= k <= n; got k={k}, n={n}")
    right = {a for a, ok in zip(answers, correct, strict=True) if ok and a is not None}
    blocks = n // k
    score = 0.0
    for b in range(blocks):
        votes = Counter(a for a in answers[b * k : (b + 1) * k] if a is not None)
        if not votes:
            continue
        top = max(votes.values())
        tied = [a for a, v in votes.items() if v == top]  # in order of first appearance
        winner = tied[int(rng.integers(len(tied)))] if len(tied) > 1 else tied[0]
        score += winner in right
    return score / blocks
