"""What the trainer feeds an objective: a batch of tensors on the compute device."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.data.base import Examples


@dataclass
class Batch:
    """Token ids [B, L] (long), answer mask [B, L] (bool), optional coupled position ids [B, L] (long)."""

    tokens: torch.Tensor
    loss_mask: torch.Tensor
    positions: torch.Tensor | None = None

    @classmethod
    def from_examples(cls, ex: Examples, device: torch.device) -> Batch:
        """Move a generator's numpy batch to `device`."""
        nb = device.type == "cuda"
        tokens = torch.from_numpy(ex.tokens).to(device, torch.long, non_blocking=nb)
        mask = torch.from_numpy(ex.loss_mask).to(device, non_blocking=nb)
        pos = (
            None
            if ex.positions is None
            else torch.from_numpy(ex.positions).to(device, torch.long, non_blocking=nb)
        )
        return cls(tokens, mask, pos)
