"""Next-token cross-entropy on answer tokens (`loss_mask`) only, plus the model's auxiliary losses."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from engine.data.base import Examples
from schemas.objectives import NextToken as NextTokenConfig

from .base import Batch, Count, Objective

if TYPE_CHECKING:
    from engine.runtime.context import BuildContext


class NextToken(Objective):
    """loss = CE(logits[t], tokens[t+1]) averaged over the answer tokens + the model's aux_loss (MoE).

    A model that predicts position ids (PPC) adds ppc_weight * CE(position logits[t], positions[t+1]) over the
    same answer tokens: the coupled id each answer token carries (the data's `meta.target_positions`).
    """

    def __init__(self, cfg: NextTokenConfig, models: dict[str, nn.Module], ctx: BuildContext) -> None:
        self.cfg, self.models, self.model, self.stage = cfg, models, models["model"], ctx.stage
        self.vocab_size = ctx.vocab_size

    def collate(self, examples: Examples, device: torch.device) -> Batch:
        """Token tensors on `device`."""
        return Batch.from_examples(examples, device)

    def count(self, examples: Examples) -> Count:
        """The objective config's `step_flops` over the examples' unpadded lengths."""
        lengths = examples.lengths.tolist()
        tokens, sum_t_t1 = sum(lengths), sum(t * (t + 1) for t in lengths)
        f = self.cfg.step_flops(self.stage.model, self.vocab_size, tokens, sum_t_t1)
        return Count(len(lengths), tokens, f.total, f.attention)

    def loss_weight(self, examples: Examples) -> float:
        """The answer tokens the cross-entropy averages over (positions 1.. of `loss_mask`)."""
        return float(examples.loss_mask[:, 1:].sum())

    def predict(
        self, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Logits at the answer positions [M, V], their targets [M], the mask [B, L-1] and the model's aux."""
        pos = None if batch.positions is None else batch.positions[:, :-1]
        logits, aux = self.model(batch.tokens[:, :-1], pos)  # [B, L-1, V]
        mask = batch.loss_mask[:, 1:]  # position t predicts token t+1
        return logits[mask].float(), batch.tokens[:, 1:][mask], mask, aux

    def decoder(self) -> nn.Module:
        """The model, which generation decodes with its KV cache."""
        return self.model

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise and detached metrics (ce, token accuracy, MoE statistics)."""
        logits, targets, mask, aux = self.predict(batch)
        ce = F.cross_entropy(logits, targets, label_smoothing=self.cfg.label_smoothing)
        loss = ce + aux["aux_loss"]
        metrics = {"ce": ce.detach(), "token_acc": (logits.argmax(-1) == targets).float().mean()}
        if "position_logits" in aux:  # PPC: the next token's position id, on the same answer tokens
            pos_logits = aux.pop("position_logits")[mask].float()  # [M, max_position]
            pos_targets = batch.positions[:, 1:][mask]  # [M]
            pos_ce = F.cross_entropy(pos_logits, pos_targets)
            loss = loss + self.cfg.ppc_weight * pos_ce
            metrics["pos_ce"] = pos_ce.detach()
            metrics["pos_acc"] = (pos_logits.argmax(-1) == pos_targets).float().mean()
        metrics.update({k: v.detach() for k, v in aux.items() if k != "aux_loss"})
        return loss, metrics
