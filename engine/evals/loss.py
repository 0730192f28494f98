"""Held-out cross-entropy of a next-token model on a fixed set of a test data's split (`test_loss/<name>`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engine import registry
from engine.data.base import Generator
from engine.objectives.base import Batch, Objective
from engine.runtime.distributed import Dist, LaunchError
from schemas.evals import Loss as LossConfig

from .exact_match import fixed_sets


def same_vocabulary(test: Generator, test_kind: str, own: Generator, own_kind: str) -> None:
    """Raise a LaunchError naming both kinds and the first differing token unless the two generators' token
    strings are the same, id for id."""
    a, b = tuple(test.vocab.tokens), tuple(own.vocab.tokens)
    if a == b:
        return
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))

    def shown(toks: tuple[str, ...]) -> str:
        return repr(toks[i]) if i < len(toks) else "nothing (its vocabulary ends before)"

    same = ""
    if test_kind == own_kind:
        same = " (the same kind: a setting that shapes its vocabulary differs, e.g. a seed or a size)"
    raise LaunchError(
        f"the loss evaluator's test data ({test_kind}) has another vocabulary than the model's data "
        f"({own_kind}){same}: token id {i} is {shown(a)} in the test data but {shown(b)} in the model's; a loss "
        f"over another vocabulary would be silently wrong: give test data with the model's vocabulary"
    )


class Loss:
    """`test_loss/<name>`: the mean next-token cross-entropy per loss-masked token on a fixed test set.

    Exactly what is averaged: for every example of the set and every position t with `loss_mask[t + 1]` set
    (the answer tokens, and for text-like data every token the generator marks), CE(logits[t], tokens[t + 1])
    in float32 over the model's whole output vocabulary; the sum over all those tokens of all examples of all
    ranks, divided by their count: a token-weighted mean over the whole set, whatever the world size. This is
    the next_token objective's `ce` (the objective's `predict`, the same mask), without its label smoothing,
    its MoE auxiliary loss or a PPC model's position loss, so with label_smoothing 0 and a dense model it equals
    the training `loss` on the same examples. Padding copies that even out the ranks' shares do not count; a
    set without loss-masked tokens scores nan.

    The test data is the config's `data` (built here) or the stage's own; its token strings must be the
    stage's generator's, id for id (checked when the evaluator is built: the spec checks the vocabulary's size).
    """

    def __init__(
        self, cfg: LossConfig, gen: Generator, data_cfg: Any, seed: int, stage: str, dist: Dist
    ) -> None:
        self.cfg, self.dist = cfg, dist
        self.key = f"test_loss/{cfg.metric_name}"
        if cfg.data is None:
            test, test_cfg = gen, data_cfg
        else:
            test, test_cfg = registry.build_data(cfg.data), cfg.data
            same_vocabulary(test, cfg.data.kind, gen, data_cfg.kind)
        sets = fixed_sets([cfg.split], cfg.examples, test, test_cfg, seed, stage, dist)
        self.set, self.real = sets[cfg.split]

    @torch.no_grad()
    def __call__(self, objective: Objective, step: int) -> dict[str, float]:
        """Score the set; every rank runs the same number of forward passes."""
        total = torch.zeros((), dtype=torch.float64, device=self.dist.device)  # summed cross-entropy
        tokens = torch.zeros((), dtype=torch.float64, device=self.dist.device)  # tokens counted
        ex = self.set
        for start in range(0, len(ex), self.cfg.batch):
            part = ex.slice(start, min(start + self.cfg.batch, len(ex)))
            logits, targets, mask, _ = objective.predict(Batch.from_examples(part, self.dist.device))
            ce = F.cross_entropy(logits.float(), targets, reduction="none")
            # the row of each masked token (logits[mask] is row-major): rows past the set's own do not count
            counted = mask.nonzero()[:, 0] < self.real - start
            total += ce[counted].double().sum()
            tokens += counted.sum()
        sums = self.dist.all_reduce(torch.stack([total, tokens]).cpu())
        return {self.key: float(sums[0] / sums[1]) if sums[1] > 0 else float("nan")}  # nan: no answer tokens
