"""Probing: a frozen encoder (trained, or random of the same shape) and a probe on its tokens.

Probe kinds (schemas/models.py): `attentive_probe` (trained on the tokens), `linear_probe` (one head per weight
decay, trained together on the mean-pooled tokens, the head with the best validation top-1 evaluated) and
`knn_probe` (no training: neighbours in the labelled set).

Labelled data. Without `labelled` / `per_class`, every step draws fresh clips from the counter-based stream.
With one, the stage's fixed labelled set is drawn once (engine/data/pool.py) and training walks it in epochs;
a linear probe trains on its first N - round(val_fraction * N) clips and holds the rest out as its
validation split. The encoder is frozen and the labelled clips are never augmented again, so the features the
probe reads of them (the tokens, or their mean for pooled probes) are computed once, lazily, in eval mode and
kept on the device: every rank encodes the whole set in the same forward passes (FSDP's forwards are
collectives), so the cache needs no communication and is the same on every rank and world size. Clips of the
eval split (top1) go through the encoder each time; several temporal segments of one video are encoded apart
and their tokens concatenated for the probe (`logits`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from engine import registry
from engine.data.pool import MissingClass, PoolStream, draw_labelled
from engine.data.stream import Stream
from engine.data.video import Clips
from engine.models.probe import VAL_TOP1
from engine.models.vit import VisionTransformer
from engine.runtime.distributed import LaunchError
from engine.runtime.trainer import stage_seed
from schemas.models import ViT
from schemas.spec import ProbeStage
from schemas.training import RandomInit

from .base import Count, Objective
from .jepa import to_device

if TYPE_CHECKING:
    from engine.runtime.context import BuildContext


class ProbeObjective(Objective):
    """Cross-entropy of the probe on the frozen encoder's features of the whole clip (module docstring)."""

    def __init__(self, stage: ProbeStage, ctx: BuildContext) -> None:
        ref = stage.encoder
        self.encoder_name = ref.random if isinstance(ref, RandomInit) else getattr(ref, "stage", "checkpoint")
        self.random = isinstance(ref, RandomInit)
        self.stage, self.name = stage, ctx.name
        enc_cfg = ctx.model_config(ref, ViT)
        if self.random:  # one random encoder per (run seed, shape's stage), whichever probe stage reads it
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(stage_seed(ctx.spec.run.seed, f"random:{ref.random}"))
                encoder = VisionTransformer(enc_cfg)
        else:
            encoder = VisionTransformer(enc_cfg)
            encoder.load_state_dict(ctx.weights(ref))
        classes = stage.data.num_classes  # the spec validator checks that probe.classes agrees, if set
        self.vit, self.device = enc_cfg, ctx.dist.device
        self.encoder = ctx.shard(encoder, frozen=True)
        probe = registry.build_probe(stage.probe, enc_cfg.dim, classes)
        self.probe = ctx.shard(probe) if stage.probe.trains else probe.to(ctx.dist.device)
        self.models = {"probe": self.probe}
        self.probe_cfg, self.classes = stage.probe, classes
        self.pool: Clips | None = None  # the fixed labelled set, once `stream` drew it
        self.encode_batch = 0  # clips per encoder forward when the labelled set is encoded
        self._features: Tensor | None = None  # the labelled set's features, once computed
        self._labels: Tensor | None = None

    # ------------------------------------------------------------------ labelled set

    def stream(self, stream: Stream) -> Stream | PoolStream:
        """The counter-based stream without a labelled set; with one, the set (drawn here, once) in epochs."""
        st = self.stage
        if st.labelled_size is None:
            return stream
        try:
            self.pool = draw_labelled(
                stream.gen,
                stream.seed,
                stream.stage,
                self.classes,
                labelled=st.labelled,
                per_class=st.per_class,
            )
        except MissingClass as e:  # the data's doing, known only once drawn: a one-line error, as for a spec
            raise LaunchError(f"stages.{self.name}.{e}") from e
        self.encode_batch = st.batch.micro or stream.per_rank
        return PoolStream(self.pool, st.training_clips, stream)

    def pool_features(self) -> tuple[Tensor, Tensor]:
        """The labelled set's features (what the probe reads) and labels, computed on first use."""
        if self._features is None:
            assert self.pool is not None, "the labelled set is drawn by `stream` before any batch"
            parts = []
            for lo in range(0, len(self.pool), self.encode_batch):
                part = self.pool.slice(lo, min(lo + self.encode_batch, len(self.pool)))
                parts.append(self.encode(to_device(part, self.device)[1]))
            self._features = torch.cat(parts)
            self._labels = torch.from_numpy(self.pool.labels).to(self.device)
            self.probe.observe(
                self._features[: self.stage.training_clips]
            )  # e.g. a linear probe's statistics
        return self._features, self._labels

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """What the probe reads of normalised clips: the frozen encoder's tokens [B, N, D], or their mean [B, D]."""
        tokens = self.encoder(video)
        return tokens.mean(1) if self.probe_cfg.pooled else tokens

    # ------------------------------------------------------------------ batches

    def collate(self, clips: Clips, device: torch.device) -> dict[str, Tensor]:
        """Labels and, for clips of the labelled set, their cached features, else the normalised video."""
        labels = torch.from_numpy(clips.labels).to(device)
        index = clips.meta.get("pool_index")
        if index is not None and self.pool is not None:
            features, _ = self.pool_features()
            return {"features": features[torch.from_numpy(index).to(device)], "labels": labels}
        return {"video": to_device(clips, device)[1], "labels": labels}

    def count(self, clips: Clips) -> Count:
        """The probe config's `train_flops`: the trained probe, and the frozen encoder unless the clips' features
        are cached (the labelled set's are computed once, which the plan reports apart)."""
        n = len(clips)
        f = self.probe_cfg.train_flops(self.vit, n, self.classes, encode=self.pool is None)
        return Count(n, n * self.vit.tokens, f.total, f.attention)

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        """The batch's cached features, or its video's through the frozen encoder."""
        return batch["features"] if "features" in batch else self.encode(batch["video"])

    def forward(self, features: Tensor) -> Any:
        """The probe's output on features (a kNN probe also reads the labelled set's)."""
        return self.probe(features, self.pool_features() if self.probe_cfg.reads_labelled else None)

    def logits(self, batch: dict[str, Tensor], segments: int = 1) -> Tensor:
        """Class logits [B / segments, classes] (a linear probe's chosen head; a kNN probe's vote scores).

        Each run of `segments` consecutive clips is encoded clip by clip and read as one: their tokens are
        concatenated along the token axis, which for pooled probes is the mean of the clips' means (every clip
        has as many tokens).
        """
        features = self.features(batch)
        if segments > 1:
            features = features.unflatten(0, (-1, segments))  # [B / segments, segments, (N,) D]
            features = features.mean(1) if self.probe_cfg.pooled else features.flatten(1, 2)
        return self.probe.logits(self.forward(features))

    def __call__(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The probe's loss (cross-entropy; a linear probe's sums its heads' with their L2 terms) and metrics."""
        return self.probe.loss(self.forward(self.features(batch)), batch["labels"])

    def trainable(self) -> dict[str, nn.Module]:
        return {"probe": self.probe} if self.probe_cfg.trains else {}

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def classifier_report(self) -> dict[str, float]:
        """The labelled set's size and, where the probe holds a validation split out of it (the clips past its
        training clips), what it chooses on it (a linear probe: its head)."""
        n, train = self.stage.labelled_size, self.stage.training_clips
        if n is None:
            return {}
        out = {"labelled": float(n)}
        if train < n:
            features, labels = self.pool_features()
            out.update(self.probe.validate(self.forward(features[train:]), labels[train:]))
        return out

    def results(self, metrics: dict[str, float]) -> dict[str, Any]:
        """Which encoder was probed ("random" for a fresh init) and how, on which label task, its top-1 on held-out clips beside the
        majority-class and chance top-1, the held-out and labelled set sizes; a linear probe's chosen weight
        decay and every head's validation top-1."""
        out: dict[str, Any] = {
            "encoder": "random" if self.random else self.encoder_name,
            "encoder_stage": self.encoder_name,
            "kind": self.probe_cfg.kind,
            "task": getattr(self.stage.data, "label", "label"),
            "top1": metrics.get("top1"),
            "majority": metrics.get("majority"),
            "chance": 1.0 / self.classes,
            "examples": None if "examples" not in metrics else int(metrics["examples"]),
            "labelled": self.stage.labelled_size,
            "classes": self.classes,
            "step": self.stage.steps,
        }
        if "weight_decay" in metrics:  # what the probe chose on its validation split, and on what
            out["weight_decay"] = metrics["weight_decay"]
        chosen_on = {k.removeprefix(VAL_TOP1): v for k, v in metrics.items() if k.startswith(VAL_TOP1)}
        if chosen_on:
            out["val_top1"] = chosen_on
        return out
