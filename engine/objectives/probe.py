"""Attentive probing: a frozen encoder (trained, or random of the same shape) and a trained attentive probe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.data.video import Clips
from engine.models.probe import AttentiveProbe
from engine.models.vit import VisionTransformer
from schemas.models import ViT
from schemas.spec import ProbeStage
from schemas.training import RandomInit

from .base import Count, Objective
from .jepa import to_device

if TYPE_CHECKING:
    from engine.runtime.context import BuildContext


class ProbeObjective(Objective):
    """Cross-entropy of the probe on the frozen encoder's tokens of the whole clip."""

    def __init__(self, stage: ProbeStage, ctx: BuildContext) -> None:
        ref = stage.encoder
        self.encoder_name = ref.random if isinstance(ref, RandomInit) else getattr(ref, "stage", "checkpoint")
        self.random = isinstance(ref, RandomInit)
        self.stage = stage
        enc_cfg = ctx.model_config(ref, ViT)
        encoder = VisionTransformer(enc_cfg)  # random: a fresh init from the stage's seeded RNG
        if not self.random:
            encoder.load_state_dict(ctx.weights(ref))
        classes = stage.data.num_classes  # the spec validator checks that probe.classes agrees, if set
        self.vit = enc_cfg
        self.encoder = ctx.shard(encoder, frozen=True)
        self.probe = ctx.shard(AttentiveProbe(stage.probe, enc_cfg.dim, classes))
        self.models = {"probe": self.probe}
        self.probe_cfg, self.classes = stage.probe, classes

    def collate(self, clips: Clips, device: torch.device) -> dict[str, Tensor]:
        """Normalised video and labels on `device`."""
        return {"video": to_device(clips, device)[1], "labels": torch.from_numpy(clips.labels).to(device)}

    def count(self, clips: Clips) -> Count:
        """The probe config's `train_flops`: the frozen encoder and the trained probe on all tokens of the clips."""
        n = len(clips)
        f = self.probe_cfg.train_flops(self.vit, n, self.classes)
        return Count(n, n * self.vit.tokens, f.total, f.attention)

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Class logits [B, classes] from the frozen encoder's tokens."""
        with torch.no_grad():
            tokens = self.encoder(batch["video"])  # [B, N, D]
        return self.probe(tokens).float()

    def __call__(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy and batch top-1."""
        logits = self.logits(batch)
        loss = F.cross_entropy(logits, batch["labels"])
        return loss, {"top1": (logits.argmax(-1) == batch["labels"]).float().mean()}

    def trainable(self) -> dict[str, nn.Module]:
        return {"probe": self.probe}

    def results(self, metrics: dict[str, float]) -> dict[str, Any]:
        """Which encoder was probed ("random" for a fresh init), its top-1 on the data's classes, the step."""
        return {
            "encoder": "random" if self.random else self.encoder_name,
            "top1": metrics.get("top1"),
            "classes": self.stage.data.num_classes,
            "encoder_stage": self.encoder_name,
            "step": self.stage.schedule.steps,
        }
