"""Collapse diagnostics of a masked-video encoder: effective ranks of its features and its relative loss.

On a fixed set of held-out clips (drawn once, like top1's) with fixed masks (drawn once per group of `batch`
clips from their own counter key), every evaluation logs

- `rank/tokens`: the effective rank of the encoder's output tokens of the whole clips, every token of every
  clip a row [examples * N, D];
- `rank/pooled`: the same of the clips' mean-pooled features [examples, D];
- `loss/relative`: the objective's loss on the set divided by `loss/mean_baseline`, the loss of predicting
  each batch's mean target (the objective computes both in one call); 1 means nothing learnt.

Effective rank (Roy & Vetterli, 2007): exp of the Shannon entropy of the singular values of the centred feature
matrix, normalised to sum 1; between 1 (every row on one line) and D. The singular values come from the
eigenvalues of the centred Gram matrix, whose parts (row count, row sum, X^T X, in float64) are summed over
ranks: the same as gathering every rank's rows, at D x D per rank whatever the number of tokens.

Mask groups are split over ranks whole (rank r takes groups r, r + world, ...), so the value does not depend
on the world size; a rank with fewer groups repeats one with weight 0 to keep sharded forwards in step.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from engine.data.stream import EVAL, counter_rng, stage_key
from engine.data.video import Clips
from engine.objectives.base import Objective
from engine.runtime.distributed import Dist
from schemas.evals import Representation as RepresentationConfig

from .top1 import eval_clips

log = logging.getLogger("engine")

MASKS = 2**32 + 1  # the key of the evaluation masks, apart from eval_clips' chunk keys (EVAL, 0, chunk)


def effective_rank(singular_values: Tensor) -> float:
    """exp(H(p)) for p the singular values normalised to sum 1 (zeros contribute nothing); 0 for all zeros."""
    s = singular_values.double().clamp(min=0)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


class Moments:
    """Row count, row sum and Gram matrix X^T X of feature rows (float64): enough for the singular values of
    the centred rows, and summable over ranks."""

    def __init__(self, dim: int, device: torch.device) -> None:
        self.dim = dim
        self.count = 0.0
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.gram = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def add(self, rows: Tensor, weight: float = 1.0) -> None:
        """Add rows [M, dim] (weight 0: a padding forward, counted nowhere)."""
        if weight == 0.0:
            return
        x = rows.detach().reshape(-1, self.dim).double()
        self.count += weight * x.shape[0]
        self.sum += weight * x.sum(0)
        self.gram += weight * (x.T @ x)

    def all_reduce(self, dist: Dist) -> None:
        """Sum every rank's moments (one collective over the CPU group)."""
        flat = torch.cat(
            [torch.tensor([self.count], dtype=torch.float64), self.sum.cpu(), self.gram.cpu().flatten()]
        )
        dist.all_reduce(flat)
        self.count = float(flat[0])
        self.sum = flat[1 : 1 + self.dim]
        self.gram = flat[1 + self.dim :].view(self.dim, self.dim)

    def singular_values(self) -> Tensor:
        """Singular values of the centred rows, descending: sqrt of the eigenvalues of X^T X - n mu mu^T."""
        if self.count == 0:
            raise ValueError("no rows were added; the evaluation set is empty")
        mean = self.sum / self.count
        centred = self.gram.cpu() - self.count * torch.outer(mean, mean).cpu()
        eig = torch.linalg.eigvalsh((centred + centred.T) / 2)  # symmetric up to rounding
        return eig.clamp(min=0).sqrt().flip(0)

    def effective_rank(self) -> float:
        """The effective rank of the centred rows."""
        return effective_rank(self.singular_values())


def feature_rank(rows: Tensor) -> float:
    """The effective rank of one feature matrix [M, D] (centred): `Moments` of a single process."""
    m = Moments(rows.shape[-1], rows.device)
    m.add(rows)
    return m.effective_rank()


class Representation:
    """`representation` over `examples` held-out clips with fixed masks; mask groups split over the ranks."""

    def __init__(self, cfg: RepresentationConfig, gen, data_cfg, seed: int, stage: str, dist: Dist):
        self.cfg, self.dist, self.stage, self.seed = cfg, dist, stage, seed
        clips = eval_clips(gen, seed, stage, cfg.examples)
        size = min(cfg.batch, cfg.examples)
        groups = -(-cfg.examples // size)
        passes = -(-groups // dist.world)  # forward passes per rank: equal on every rank
        # (group index, its clips, weight: 1, or 0 for a padding pass that repeats a group)
        self.groups: list[tuple[int, Clips, float]] = []
        for i in range(passes):
            g = dist.rank + i * dist.world
            real = g < groups
            g = g if real else g % groups
            self.groups.append((g, clips.slice(g * size, min((g + 1) * size, cfg.examples)), float(real)))

    @torch.no_grad()
    def __call__(self, objective: Objective, step: int) -> dict[str, float]:
        """Effective ranks of the encoder's tokens and pooled features, and the loss relative to the mean
        predictor's; a warning on the console when rank/pooled is below `warn_below`."""
        tokens = pooled = None
        losses = torch.zeros(2, dtype=torch.float64)  # clip-weighted sums of the loss and of the baseline
        for g, clips, weight in self.groups:
            rng = counter_rng(self.seed, stage_key(self.stage), EVAL, MASKS, g)  # the same masks every time
            masks = objective.augment(rng, len(clips))
            batch = objective.collate(
                Clips(clips.video, clips.labels, {**clips.meta, **masks}), self.dist.device
            )
            loss, metrics = objective(batch)
            n = weight * len(clips)
            losses += torch.tensor(
                [float(loss) * n, float(metrics["loss/mean_baseline"]) * n], dtype=torch.float64
            )
            features = objective.represent(batch)  # [n, N, D]
            if tokens is None:
                tokens = Moments(features.shape[-1], features.device)
                pooled = Moments(features.shape[-1], features.device)
            tokens.add(features, weight)
            pooled.add(features.float().mean(1), weight)
        self.dist.all_reduce(losses)
        tokens.all_reduce(self.dist)
        pooled.all_reduce(self.dist)
        out = {
            "rank/tokens": tokens.effective_rank(),
            "rank/pooled": pooled.effective_rank(),
            "loss/relative": float(losses[0] / losses[1]),
        }
        floor = self.cfg.warn_below
        if floor is not None and out["rank/pooled"] < floor and self.dist.main:
            log.warning(
                "%s step %d: rank/pooled %.2f is below warn_below=%g: the encoder's pooled features of the %d "
                "held-out clips span only about that many directions, a sign of representation collapse "
                "(clips mapped to nearly the same features)",
                self.stage,
                step,
                out["rank/pooled"],
                floor,
                self.cfg.examples,
            )
        return out
