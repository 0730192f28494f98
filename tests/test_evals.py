"""The token evaluators against oracle objectives: exact_match per split counts whole answers, on fixed sets."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.data.base import UnknownSplit
from engine.data.sparse_parity import SparseParity
from engine.data.stream import eval_examples
from engine.evals.exact_match import ExactMatch
from engine.objectives.base import Objective
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
    with pytest.raises(UnknownSplit, match="no split 'test'; sparse_parity has train, eval"):
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

    def part(n: int, width: int) -> Examples:
        tokens = np.ones((n, width), np.int32)
        meta = {
            "length": np.full(n, width),
            "sources": np.arange(n * width * 2).reshape(n, width, 2),
            "answer": np.ones((n, width), bool),
        }
        return Examples(tokens, np.zeros((n, width), bool), np.full(n, width), None, meta)

    joined = Examples.concat([part(2, 3), part(1, 5)])
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


class GoldModel(torch.nn.Module):
    """A stand-in decoder that continues each known example with its gold tokens (or a wrong first one).

    It speaks generation's KV-cache protocol: a prefill of the left-padded prompts, then one column per step.
    """

    def __init__(self, examples, vocab: int, corrupt: bool = False):
        super().__init__()
        self.gold = [examples[i] for i in range(len(examples))]
        self.vocab, self.corrupt = vocab, corrupt
        active = SimpleNamespace(active=100)  # parameters a token runs through, for inference FLOPs
        self.cfg = SimpleNamespace(position=SimpleNamespace(kind="rope"), param_count=lambda vocab: active)
        self.vocab_size = vocab
        self.blocks = torch.nn.ModuleList()  # no layers to cache
        self.seen = torch.zeros(0, 0, dtype=torch.long)

    def forward(self, tokens, positions=None, cache=None):
        fresh = cache.length == tokens.shape[1]  # a prefill starts new sequences
        self.seen = tokens if fresh else torch.cat([self.seen, tokens], 1)
        B, W = tokens.shape
        logits = torch.zeros(B, W, self.vocab)
        for b in range(B):
            row = self.seen[b].tolist()
            while row and row[0] == 0:  # left padding
                row.pop(0)
            ex = next((e for e in self.gold if row[: len(e.prompt)] == e.prompt.tolist()), None)
            if ex is None:
                continue
            seq = ex.tokens.tolist()
            nxt = seq[len(row)] if len(row) < len(seq) else 2  # EOS once the gold tokens are out
            if self.corrupt and len(row) == len(ex.prompt):  # the first answer token is off by one
                nxt = (nxt + 1) % self.vocab
            logits[b, -1, nxt] = 1.0
        return logits, {}


class ModelObjective(Objective):
    """The decoding interface of a next-token objective over a stand-in model."""

    def __init__(self, model):
        self.model = model

    def decoder(self):
        return self.model


def test_verified_decodes_greedily_and_scores_with_the_verifier():
    """Gold continuations verify (decision and evidence too); a wrong first answer token fails both."""
    from engine.data.connectivity import Connectivity
    from engine.evals.verified import Verified
    from schemas.data import Connectivity as ConnectivityConfig
    from schemas.evals import Verified as VerifiedConfig

    cfg = ConnectivityConfig(depth=2, strategy="dfs")
    gen = Connectivity(cfg)
    for world in (1, 2):
        evs = [
            Verified(
                VerifiedConfig(splits=["eval"], examples=5, batch=2),
                gen,
                cfg,
                0,
                "s",
                Dist(rank=r, world=world),
            )
            for r in range(world)
        ]
        scores = [ev(ModelObjective(GoldModel(ev.sets["eval"][0], cfg.vocab_size)), 0) for ev in evs]
        for ev, s in zip(evs, scores, strict=True):
            ex, _ = ev.sets["eval"]
            run = sum(
                len(ex[i].tokens) for i in range(len(ex))
            )  # each prompt + its gold answer (EOS included)
            assert s.pop("inference_flops/eval") == 2 * 100 * run, "2·N per token run"
        assert all(
            s == {"verified/eval": 1.0, "check/decision/eval": 1.0, "check/evidence/eval": 1.0}
            for s in scores
        )
    ev = Verified(VerifiedConfig(splits=["eval"], examples=5, batch=2), gen, cfg, 0, "s", Dist())
    bad = ev(ModelObjective(GoldModel(ev.sets["eval"][0], cfg.vocab_size, corrupt=True)), 0)
    assert bad["check/evidence/eval"] == 0.0, bad  # `work: [` then a wrong token: not a certificate


def test_verified_scores_shortest_paths_by_the_verifier():
    """shortest_path (no check()): gold paths verify, a wrong first hop does not. That the verifier accepts
    every other shortest path too is tests/test_shortest_path.py's business."""
    from engine.data.shortest_path import ShortestPath
    from engine.evals.verified import Verified
    from schemas.data import ShortestPath as ShortestPathConfig
    from schemas.evals import Verified as VerifiedConfig

    cfg = ShortestPathConfig()
    gen = ShortestPath(cfg)
    ev = Verified(VerifiedConfig(splits=["eval"], examples=32, batch=8), gen, cfg, 0, "s", Dist())
    ex, _ = ev.sets["eval"]
    assert ev(ModelObjective(GoldModel(ex, cfg.vocab_size)), 0)["verified/eval"] == 1.0
    assert ev(ModelObjective(GoldModel(ex, cfg.vocab_size, corrupt=True)), 0)["verified/eval"] < 1.0
