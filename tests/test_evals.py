"""The token evaluators against oracle objectives: exact_match per split counts whole answers, on fixed sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F

from engine.data.sparse_parity import SparseParity
from engine.data.stream import eval_examples
from engine.evals.exact_match import ExactMatch
from engine.runtime.distributed import Dist
from schemas.data import SparseParity as SparseParityConfig
from schemas.evals import ExactMatch as ExactMatchConfig

CFG = SparseParityConfig(k=2, length={"train": (4, 8), "eval": (9, 16)})
GEN = SparseParity(CFG)


class Oracle:
    """predict() of a next-token objective that knows the gold answer; `wrong(example, t)` flips some tokens."""

    def __init__(self, wrong=lambda row, col: False):
        self.wrong = wrong

    def predict(self, batch):
        targets = batch.tokens[:, 1:]
        mask = batch.loss_mask[:, 1:]
        guess = targets.clone()
        for row, col in mask.nonzero().tolist():
            if self.wrong(row, col):
                guess[row, col] = (guess[row, col] + 1) % len(GEN.vocab)
        logits = F.one_hot(guess, 64).float()
        return logits[mask], targets[mask], mask, {}


def test_exact_match_scores_whole_answers_per_split():
    cfg = ExactMatchConfig(splits=["train", "eval"], examples=100, batch=32)
    ev = ExactMatch(cfg, GEN, CFG, seed=0, stage="train", dist=Dist())
    assert ev(Oracle(), 0) == {"acc/train": 1.0, "acc/eval": 1.0}
    # Wrong on every example of the batch's even rows: half of each batch of 32 (and of the last 4).
    assert ev(Oracle(lambda row, col: row % 2 == 0), 0) == {"acc/train": 0.5, "acc/eval": 0.5}
    lengths = {s: ex.meta["length"] for s, (ex, _) in ev.sets.items()}
    assert lengths["train"].max() <= 8 and lengths["eval"].min() >= 9, (
        "each split is drawn from its own range"
    )


def test_eval_sets_are_fixed_prefix_stable_and_independent_across_splits():
    a = eval_examples(GEN, 0, "s", "train", None, 70)
    b = eval_examples(GEN, 0, "s", "train", None, 130)
    assert np.array_equal(a.tokens, b.slice(0, 70).tokens), "more examples must only append"
    c = eval_examples(GEN, 1, "s", "train", None, 70)
    assert not np.array_equal(a.tokens, c.tokens), "the seed must change the set"
    # The split's name is in the counter key: two splits of one distribution do not share examples.
    other = eval_examples(GEN, 0, "s", "eval", None, 70)
    assert not np.array_equal(a.tokens[:, :5], other.tokens[:, :5])


def test_exact_match_rejects_a_split_the_generator_lacks():
    with pytest.raises(AttributeError, match="no split 'test'; sparse_parity has train, eval"):
        GEN.sample(np.random.default_rng(0), 2, "test")
    cfg = ExactMatchConfig(splits=["test"], examples=8)
    with pytest.raises(ValueError, match=r"no split \['test'\]"):
        ExactMatch(cfg, GEN, CFG, seed=0, stage="train", dist=Dist())


def test_exact_match_scores_a_fixed_pool_once_each_on_any_world_size():
    """A split that is a finite pool (RL-Wall's test prompts) is scored on its first `examples`, each once."""
    from engine.data.solution_tree import SolutionTree
    from schemas.data import SolutionTree as SolutionTreeConfig

    cfg = SolutionTreeConfig(rl_prompts=8, test_prompts=11)
    gen = SolutionTree(cfg)
    pool = gen.pool("test")
    for world in (1, 2, 3):
        parts = [
            ExactMatch(
                ExactMatchConfig(splits=["test"], examples=100, batch=4),
                gen,
                cfg,
                0,
                "s",
                Dist(rank=r, world=world),
            )
            for r in range(world)
        ]
        sizes = {len(p.sets["test"][0]) for p in parts}
        assert len(sizes) == 1, f"ranks run different numbers of examples: {sizes}"
        counted = np.concatenate([p.sets["test"][0].tokens[: p.sets["test"][1], :8] for p in parts])
        assert np.array_equal(counted, pool.tokens[:, :8]), "each pool member must count exactly once"
    one = ExactMatch(ExactMatchConfig(splits=["test"], examples=100, batch=4), gen, cfg, 0, "s", Dist())
    assert one(Oracle(), 0) == {"acc/test": 1.0}
    five = ExactMatch(ExactMatchConfig(splits=["test"], examples=5, batch=4), gen, cfg, 0, "s", Dist())
    assert np.array_equal(five.sets["test"][0].tokens, pool.slice(0, 5).tokens)


def test_eval_sets_join_per_token_metadata_of_different_widths():
    """Chunks of an eval set may differ in width; per-token meta ([n, L, ...]) is padded with -1 / False."""
    from engine.data.base import Examples
    from engine.data.stream import _concat

    def part(n: int, width: int) -> Examples:
        tokens = np.ones((n, width), np.int32)
        meta = {
            "length": np.full(n, width),
            "sources": np.arange(n * width * 2).reshape(n, width, 2),
            "answer": np.ones((n, width), bool),
        }
        return Examples(tokens, np.zeros((n, width), bool), np.full(n, width), None, meta)

    joined = _concat([part(2, 3), part(1, 5)], pad=0)
    assert joined.tokens.shape == (3, 5) and joined.meta["sources"].shape == (3, 5, 2)
    assert (joined.meta["sources"][:2, 3:] == -1).all() and (joined.meta["sources"][2] >= 0).all()
    assert not joined.meta["answer"][:2, 3:].any() and joined.meta["answer"][2].all()
    assert joined.meta["length"].tolist() == [3, 3, 5]


def test_exact_match_sizes_each_split_on_its_own():
    """A small pool split does not shrink the next split's sample (RL-Wall: rl is 8 prompts, train is drawn)."""
    from engine.data.solution_tree import SolutionTree
    from schemas.data import SolutionTree as SolutionTreeConfig

    cfg = SolutionTreeConfig(rl_prompts=8, test_prompts=11)
    ev = ExactMatch(
        ExactMatchConfig(splits=["rl", "train"], examples=40), SolutionTree(cfg), cfg, 0, "s", Dist()
    )
    assert {s: (len(ex), real) for s, (ex, real) in ev.sets.items()} == {"rl": (8, 8), "train": (40, 40)}


def test_exact_match_logs_the_best_expert_beside_kg_accuracy():
    """kg_experts' transcendence bar (the best single expert's accuracy) is logged next to the model's."""
    from engine.data.kg_experts import KgExperts
    from schemas.data import KgExperts as KgExpertsConfig

    cfg = KgExpertsConfig(entities=60, clusters=4, relations=3, experts=3)
    gen = KgExperts(cfg)
    ev = ExactMatch(ExactMatchConfig(splits=["train", "test"], examples=8), gen, cfg, 0, "s", Dist())
    assert ev.reference == {"test": gen.best_expert_accuracy("test")}, "training text has no expert bar"
    assert 0.0 < ev.reference["test"] <= 1.0
