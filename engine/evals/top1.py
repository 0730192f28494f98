"""Top-1 accuracy of a probe on a fixed held-out set; the result also goes to {output}/{stage}/results.json."""

from __future__ import annotations

from functools import partial

import torch

from engine.data.stream import EVAL, EVAL_CHUNK, counter_rng, stage_key
from engine.data.video import Clips
from engine.objectives.base import Objective
from engine.runtime.distributed import Dist
from schemas.evals import Top1 as Top1Config

from .sets import rank_share


def eval_clips(gen, seed: int, stage: str, n: int) -> Clips:
    """The first n clips of the stage's fixed eval set, drawn in keyed chunks: the same for every world size."""
    chunks = -(-n // EVAL_CHUNK)
    parts = [
        gen.sample(counter_rng(seed, stage_key(stage), EVAL, 0, c), EVAL_CHUNK, "eval") for c in range(chunks)
    ]
    return Clips.concat(parts).slice(0, n)


class Top1:
    """`top1` over `examples` clips of the eval split, drawn once and split evenly over the ranks, with the
    top-1 of always answering the set's most frequent class (`majority`), chance (1 / classes), the set's size
    (`examples`) and what the objective reports of its classifier (`Objective.classifier_report`)."""

    def __init__(self, cfg: Top1Config, gen, data_cfg, seed: int, stage: str, dist: Dist):
        self.cfg, self.dist, self.classes = cfg, dist, data_cfg.num_classes
        # a rank's share may be padded past `examples` (every rank runs as many forwards); `members` count
        self.clips, self.members = rank_share(partial(eval_clips, gen, seed, stage), cfg.examples, dist)

    @torch.no_grad()
    def __call__(self, objective: Objective, step: int) -> dict[str, float]:
        """Fraction of held-out clips whose argmax class is the label, and the majority-class baseline."""
        report = objective.classifier_report()
        hits = torch.zeros((), dtype=torch.float64)
        for start in range(0, len(self.clips), self.cfg.batch):
            part = self.clips.slice(start, min(start + self.cfg.batch, len(self.clips)))
            batch = objective.collate(part, self.dist.device)
            hit = objective.logits(batch).argmax(-1) == batch["labels"]
            hits += hit[: max(0, self.members - start)].sum().item()
        labels = torch.from_numpy(self.clips.labels[: self.members]).long()
        counts = torch.cat([hits[None], torch.bincount(labels, minlength=self.classes).double()])
        self.dist.all_reduce(counts)
        hits, by_class = counts[0].item(), counts[1:]
        return {
            "top1": hits / self.cfg.examples,
            "majority": (by_class.max() / self.cfg.examples).item(),
            "chance": 1.0 / self.classes,
            "examples": float(self.cfg.examples),
            **report,
        }
