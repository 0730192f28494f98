"""Masked video objectives: SALT's pixel reconstruction (stage 1) and frozen-teacher latent prediction
(stage 2), and the V-JEPA baseline with an EMA target encoder (docs/papers/salt.md).

Every objective embeds the clip once and runs the encoder's blocks on the context tokens of each mask
generator (one call of the encoder), then the predictor from those to the target tokens, one loss per
generator, averaged. Masks are drawn for the step's global batch from a
counter-based generator (`augment`), so a resumed run, on any world size, sees the masks an uninterrupted one would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.data.masks import MultiBlockMasks
from engine.data.video import Clips
from engine.models.predictor import Predictor
from engine.models.vit import VisionTransformer
from schemas.models import ViT
from schemas.objectives import EMALatentPrediction, LatentPrediction, PixelReconstruction

from .base import Count, Objective

if TYPE_CHECKING:
    from engine.runtime.context import BuildContext

MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as V-JEPA normalises its inputs
STD = (0.229, 0.224, 0.225)


def to_device(clips: Clips, device: torch.device) -> tuple[Tensor, Tensor]:
    """Clips on `device`: pixels in [0, 1] and the encoder's input normalised with ImageNet statistics."""
    pixels = torch.from_numpy(clips.video).to(device).float().div_(255.0)  # [B, C, T, H, W]
    mean = torch.tensor(MEAN, device=device).view(1, -1, 1, 1, 1)
    std = torch.tensor(STD, device=device).view(1, -1, 1, 1, 1)
    return pixels, (pixels - mean) / std


def patchify(video: Tensor, tubelet: int, patch: int) -> Tensor:
    """[B, C, T, H, W] -> [B, N, tubelet*patch*patch, C], tokens in (t, h, w) order like the patch embed."""
    B, C, T, H, W = video.shape
    x = video.reshape(B, C, T // tubelet, tubelet, H // patch, patch, W // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # [B, t, h, w, tubelet, p, p, C]
    return x.reshape(B, (T // tubelet) * (H // patch) * (W // patch), tubelet * patch * patch, C)


def pixel_targets(video: Tensor, tubelet: int, patch: int, normalize: bool) -> Tensor:
    """Per-token pixel targets [B, N, tubelet*patch*patch*C]; normalised per patch and channel (VideoMAE)."""
    x = patchify(video, tubelet, patch)  # [B, N, P, C]
    if normalize:
        x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return x.flatten(2)


def unpatchify(patches: Tensor, grid: tuple[int, int, int], tubelet: int, patch: int) -> Tensor:
    """Inverse of `patchify`: [B, N, tubelet*patch*patch, C] -> [B, C, T, H, W]."""
    t, h, w = grid
    B, _, _, C = patches.shape
    x = patches.reshape(B, t, h, w, tubelet, patch, patch, C).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(B, C, t * tubelet, h * patch, w * patch)


def gather(x: Tensor, idx: Tensor) -> Tensor:
    """Rows idx [B, K] of x [B, N, D] -> [B, K, D]."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _unpad(idx: np.ndarray) -> np.ndarray:
    """Index rows of one mask group: the columns padded with -1 (to another group's width) dropped."""
    keep = (idx >= 0).all(axis=0)
    if not keep.all():
        if not np.array_equal((idx >= 0), np.broadcast_to(keep, idx.shape)):
            raise ValueError(
                "a micro-batch holds clips of two mask groups; make batch.micro divide masks.group"
            )
        idx = idx[:, keep]
    return idx


class MaskedVideo(Objective):
    """Shared machinery: masks, video collation, the predictor, FLOP counting."""

    def __init__(self, cfg: Any, models: dict[str, nn.Module], ctx: BuildContext, out_dim: int) -> None:
        st = ctx.stage
        self.cfg, self.stage, self.vit = cfg, st, st.model
        self.encoder = models["model"]
        self.masks = MultiBlockMasks(cfg.masks, self.vit.grid)
        self.augment = self.masks.extras  # the masks of a group of clips, drawn with the batch
        predictor = Predictor(st.predictor, self.vit.dim, out_dim, self.vit.grid)
        self.predictor = ctx.shard(predictor)
        self.models = {"model": self.encoder, "predictor": self.predictor}
        self.teacher_cfg: ViT | None = None  # a frozen teacher's config (latent_prediction), for `count`

    @property
    def batch_group(self) -> int:
        """Clips whose masks are drawn and trimmed together; a micro-batch never holds clips of two groups."""
        return self.cfg.masks.group

    def collate(self, clips: Clips, device: torch.device) -> dict[str, Any]:
        """Pixels in [0, 1] and normalised input, mask indices, labels: tensors on `device`.

        A rank's batch may hold several mask groups, their index arrays padded with -1 to the widest; a
        micro-batch lies within one group, so its padding columns are dropped here.
        """
        pixels, video = to_device(clips, device)
        masks = [
            (
                torch.from_numpy(_unpad(clips.meta[f"context_{i}"])).to(device),
                torch.from_numpy(_unpad(clips.meta[f"target_{i}"])).to(device),
            )
            for i in range(len(self.cfg.masks.masks))
        ]
        return {"pixels": pixels, "video": video, "masks": masks}

    def count(self, clips: Clips) -> Count:
        """The objective config's `step_flops` on the clips' trimmed (context, target) counts."""
        n = len(clips)
        pairs = [
            (int(kc), int(kt))
            for i in range(len(self.cfg.masks.masks))
            for kc, kt in zip(  # per clip: groups differ in counts
                (clips.meta[f"context_{i}"] >= 0).sum(1),
                (clips.meta[f"target_{i}"] >= 0).sum(1),
                strict=True,
            )
        ]
        f = self.cfg.step_flops(self.vit, self.stage.predictor, pairs, n, teacher=self.teacher_cfg)
        return Count(n, n * self.vit.tokens, f.total, f.attention)

    def represent(self, batch: dict[str, Any]) -> Tensor:
        """The trained encoder (the student; for V-JEPA not the EMA target) on the whole clips: [B, N, D]."""
        return self.encoder(batch["video"])

    def targets(self, batch: dict[str, Any]) -> Tensor:
        """Per-token regression targets [B, N, out_dim] for the whole clip."""
        raise NotImplementedError

    def regress(self, pred: Tensor, target: Tensor) -> Tensor:
        """The regression loss between predictions and targets."""
        raise NotImplementedError

    def __call__(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Average over mask generators of the loss at that generator's target tokens.

        Also logs `loss/mean_baseline`: the loss of predicting the batch's mean target at every target token.
        A loss that stays at it means the model has learnt nothing about where it is and what it sees.
        """
        targets = self.targets(batch)
        losses, baselines = [], []
        # one encoder call: the clip's patch embedding once, the blocks once per mask's context
        encoded = self.encoder(batch["video"], keep=[context for context, _ in batch["masks"]])
        for i, ((context, target), z) in enumerate(zip(batch["masks"], encoded, strict=True)):
            pred = self.predictor(z, context, target, i)  # [B, Kt, out_dim] from z [B, Kc, D]
            truth = gather(targets, target).float()  # [B, Kt, out_dim]
            losses.append(self.regress(pred.float(), truth))
            with torch.no_grad():  # what predicting the batch's mean target would score
                baselines.append(self.regress(truth.mean(dim=(0, 1), keepdim=True).expand_as(truth), truth))
        loss = torch.stack(losses).mean()
        metrics = {f"loss/mask_{i}": part.detach() for i, part in enumerate(losses)}
        metrics["loss/mean_baseline"] = torch.stack(baselines).mean()
        return loss, metrics


class PixelReconstructionObjective(MaskedVideo):
    """MSE to (per-patch normalised) pixels of the masked tubelets."""

    shows_images = True

    def __init__(self, cfg: PixelReconstruction, models: dict[str, nn.Module], ctx: BuildContext) -> None:
        super().__init__(cfg, models, ctx, out_dim=ctx.stage.model.patch_dim)

    def targets(self, batch: dict[str, Any]) -> Tensor:
        return pixel_targets(batch["pixels"], self.vit.tubelet, self.vit.patch, self.cfg.norm_pixels)

    def regress(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(pred, target)

    @torch.no_grad()
    def images(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        """The first clip's frames side by side: input, masked input (grey), reconstruction; HWC uint8."""
        tub, p = self.vit.tubelet, self.vit.patch
        context, target = (m[:1] for m in batch["masks"][-1])  # the last generator: the long-range masks
        z = self.encoder(batch["video"][:1], keep=context)
        pred = self.predictor(z, context, target, len(batch["masks"]) - 1).float()  # [1, Kt, P*C]
        truth = patchify(batch["pixels"][:1], tub, p)  # [1, N, P, C]
        pred = pred.view(1, -1, truth.shape[2], truth.shape[3])
        if self.cfg.norm_pixels:  # back to pixels with the true patches' statistics, as VideoMAE shows them
            t = truth[:, target[0]]
            pred = pred * (t.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6) + t.mean(
                dim=-2, keepdim=True
            )
        masked, recon = truth.clone(), truth.clone()
        masked[:, target[0]] = 0.5
        recon[:, target[0]] = pred.clamp(0, 1)
        rows = [unpatchify(x, self.vit.grid, tub, p)[0] for x in (truth, masked, recon)]  # [C, T, H, W] each
        grid = torch.cat([torch.cat(list(r.unbind(1)), dim=2) for r in rows], dim=1)  # [C, 3H, T*W]
        return {"reconstruction": (grid.permute(1, 2, 0) * 255).round().byte().cpu().numpy()}


class LatentPredictionObjective(MaskedVideo):
    """SALT: L1 (or L2) to a frozen teacher's layer-normalised latents at the masked positions."""

    def __init__(self, cfg: LatentPrediction, models: dict[str, nn.Module], ctx: BuildContext) -> None:
        teacher_cfg = ctx.model_config(cfg.teacher, ViT)
        teacher = VisionTransformer(teacher_cfg)
        teacher.load_state_dict(ctx.weights(cfg.teacher))
        super().__init__(cfg, models, ctx, out_dim=teacher_cfg.dim)
        self.teacher = ctx.shard(teacher, frozen=True)
        self.teacher_cfg = teacher_cfg

    @torch.no_grad()
    def targets(self, batch: dict[str, Any]) -> Tensor:
        h = self.teacher(batch["video"]).float()  # [B, N, D_teacher], the full clip
        return F.layer_norm(h, (h.shape[-1],)) if self.cfg.target_norm else h

    def regress(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(pred, target) if self.cfg.loss == "l1" else F.mse_loss(pred, target)


class EMALatentPredictionObjective(LatentPredictionObjective):
    """V-JEPA: the target encoder is an exponential moving average of the student (checkpointed with it)."""

    def __init__(self, cfg: EMALatentPrediction, models: dict[str, nn.Module], ctx: BuildContext) -> None:
        MaskedVideo.__init__(self, cfg, models, ctx, out_dim=ctx.stage.model.dim)
        target = ctx.shard(VisionTransformer(self.vit), frozen=True)
        with torch.no_grad():
            for t, s in zip(target.parameters(), self.encoder.parameters(), strict=True):
                t.copy_(s)
        self.teacher = target
        self.models = {**self.models, "target": target}
        self.steps = ctx.stage.schedule.steps

    def trainable(self) -> dict[str, nn.Module]:
        return {"model": self.encoder, "predictor": self.predictor}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """target <- m * target + (1 - m) * student, m linear from momentum[0] to momentum[1]."""
        lo, hi = self.cfg.momentum
        m = lo + (hi - lo) * min(1.0, step / self.steps)
        for t, s in zip(self.teacher.parameters(), self.encoder.parameters(), strict=True):
            t.lerp_(s, 1.0 - m)
