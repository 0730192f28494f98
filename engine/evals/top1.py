"""Top-1 accuracy of a probe on a fixed held-out set; the result also goes to {output}/{stage}/results.json.

Two kinds of held-out set. By default, `examples` clips of the eval split drawn once (`eval_clips`) and kept in
memory. With `examples: null` (every video of the eval manifest once) or with several `segments` or `views`
per video (video_files), the set is a list of manifest entries (`Videos`) whose clips are decoded batch by
batch at every evaluation: a whole validation set of many clips per video does not fit in memory. Each
video's `segments` x `views` clips come from the data's `load`, view-major; for each view the objective reads
the segments together (their tokens concatenated, `Objective.logits(batch, segments)`), the softmax is
averaged over the views (with one view: the logits themselves), and the argmax is the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from engine.data.stream import EVAL, EVAL_CHUNK, counter_rng, stage_key
from engine.data.video import Clips
from engine.objectives.base import Objective
from engine.runtime.distributed import Dist
from schemas.evals import Top1 as Top1Config

from .sets import rank_share

MANIFEST = (
    2**32 + 2
)  # the key of the whole eval manifest's retry keys, apart from eval_clips' (EVAL, 0, chunk)


def eval_clips(gen, seed: int, stage: str, n: int) -> Clips:
    """The first n clips of the stage's fixed eval set, drawn in keyed chunks: the same for every world size."""
    chunks = -(-n // EVAL_CHUNK)
    parts = [
        gen.sample(counter_rng(seed, stage_key(stage), EVAL, 0, c), EVAL_CHUNK, "eval") for c in range(chunks)
    ]
    return Clips.concat(parts).slice(0, n)


@dataclass
class Videos:
    """Held-out videos by manifest entry, with the key each one's retries draw from (video_files' `load`)."""

    entries: np.ndarray
    keys: np.ndarray

    def __len__(self) -> int:
        return len(self.entries)

    def slice(self, start: int, stop: int) -> Videos:
        """Videos start..stop-1."""
        return Videos(self.entries[start:stop], self.keys[start:stop])


def eval_videos(gen, seed: int, stage: str, examples: int | None, n: int) -> Videos:
    """The first n videos of the stage's fixed eval set, the same for every world size: those whose centred
    clips `eval_clips` draws (`examples` given), or every entry of the eval manifest in order, repeated from
    the first past its end (`examples` None)."""
    chunks = range(-(-n // EVAL_CHUNK))
    if examples is not None:
        draws = [
            gen.draw(counter_rng(seed, stage_key(stage), EVAL, 0, c), EVAL_CHUNK, "eval") for c in chunks
        ]
        entries, keys = np.concatenate([e for e, _ in draws]), np.concatenate([k for _, k in draws])
    else:
        entries = np.arange(len(chunks) * EVAL_CHUNK) % gen.videos("eval")
        keys = np.concatenate(
            [
                counter_rng(seed, stage_key(stage), EVAL, MANIFEST, c).integers(0, 2**63, EVAL_CHUNK)
                for c in chunks
            ]
        )
    return Videos(entries[:n], keys[:n])


class Top1:
    """`top1` over the held-out set (module docstring), split evenly over the ranks, with the top-1 of always
    answering the set's most frequent class (`majority`), chance (1 / classes), the set's size (`examples`)
    and what the objective reports of its classifier (`Objective.classifier_report`)."""

    def __init__(self, cfg: Top1Config, gen, data_cfg, seed: int, stage: str, dist: Dist):
        self.cfg, self.gen, self.dist, self.classes = cfg, gen, dist, data_cfg.num_classes
        self.per_example = cfg.clips_per_example
        # a rank's share may be padded past `examples` (every rank runs as many forwards); `members` count
        if cfg.examples is not None and self.per_example == 1:
            self.examples = cfg.examples
            self.set, self.members = rank_share(partial(eval_clips, gen, seed, stage), self.examples, dist)
        else:
            self.examples = cfg.examples if cfg.examples is not None else gen.videos("eval")
            draw = partial(eval_videos, gen, seed, stage, cfg.examples)
            self.set, self.members = rank_share(draw, self.examples, dist)

    def clips(self, part: Clips | Videos) -> Clips:
        """The clips of part of the set: as kept, or decoded (segments x views per video, view-major)."""
        if isinstance(part, Clips):
            return part
        return self.gen.load(part.entries, part.keys, "eval", self.cfg.segments, self.cfg.views)

    @torch.no_grad()
    def __call__(self, objective: Objective, step: int) -> dict[str, float]:
        """Fraction of held-out examples whose predicted class is the label, and the majority-class baseline."""
        report = objective.classifier_report()
        views = self.cfg.views
        hits = torch.zeros((), dtype=torch.float64)
        by_class = torch.zeros(self.classes, dtype=torch.float64)
        step_size = max(1, self.cfg.batch // self.per_example)
        for start in range(0, len(self.set), step_size):
            batch = objective.collate(self.clips(self.set.slice(start, start + step_size)), self.dist.device)
            logits = objective.logits(batch, self.cfg.segments)  # [n * views, classes]
            if views > 1:
                logits = logits.float().softmax(-1).unflatten(0, (-1, views)).mean(1)  # [n, classes]
            labels = batch["labels"][:: self.per_example]  # every clip of a video has its label
            real = max(0, self.members - start)
            hits += (logits.argmax(-1) == labels)[:real].sum().item()
            by_class += torch.bincount(labels[:real].cpu(), minlength=self.classes).double()
        counts = torch.cat([hits[None], by_class])
        self.dist.all_reduce(counts)
        hits, by_class = counts[0].item(), counts[1:]
        return {
            "top1": hits / self.examples,
            "majority": (by_class.max() / self.examples).item(),
            "chance": 1.0 / self.classes,
            "examples": float(self.examples),
            **report,
        }
