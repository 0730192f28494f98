"""Probes on a frozen encoder's tokens -> class logits: attentive (V-JEPA 2's), linear heads, k nearest neighbours.

Each probe is built as `Probe(cfg, in_dim, classes)` and answers what the probe objective asks of every kind
(`ProbeModule`): `forward(features, labelled)`, and from its output the training loss, the class logits and
what it chooses on a validation split. The attentive probe reads the tokens [B, N, D]; the linear and kNN
probes read their mean over the clip, one vector [B, D] per clip (`cfg.pooled`). Only the kNN probe reads the
labelled set's features at every forward (`cfg.reads_labelled`); the others get None.

Attentive probe (V-JEPA 2's AttentiveClassifier).

Layout, following the V-JEPA 2 authors' src/models/attentive_pooler.py:
  blocks   `depth` pre-LN self-attention blocks over the tokens (no positions: the encoder put them in),
           width = the encoder's, MLP hidden int(width * mlp_ratio). V-JEPA 2's `depth` counts the
           cross-attention block too: its 4 probe blocks are our depth 3.
  cross    one learned query token attends to the tokens: q + xattn(q, norm1(tokens)), where xattn has
           q and kv projections (with biases) and NO output projection, and only the tokens are normalised;
           then q + mlp(norm2(q)).
  head     Linear(width -> classes) on the pooled query; no LayerNorm before it (V-JEPA 2 has none).
LayerNorm eps is cfg.norm_eps (1e-5, torch's default, as V-JEPA 2's pooler).

Parameters: `schemas.models.AttentiveProbe.params(in_dim, classes)` counts them from the config in pure
Python; tests compare it with this module's. `classes` is cfg.classes when set, else the builder's
argument (the data's number of classes).

Init (V-JEPA 2): trunc-normal(0, init_std) query and Linear weights, zero biases, LayerNorms 1/0; block
i's (1-based) attn.proj and mlp.fc2 weights divided by sqrt(2 i), and the cross block's mlp.fc2 by
sqrt(2 max(depth, 1)) (V-JEPA 2 reuses the last block's id). Unlike V-JEPA 2, whose classifier Linear
keeps torch's default init, the head is trunc-normal(init_std) with a zero bias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from schemas.models import AttentiveProbe as ProbeConfig
from schemas.models import KnnProbe as KnnConfig
from schemas.models import LinearProbe as LinearConfig
from schemas.models import probe_classes

from .layers import MLP, Attention
from .vit import Block, init_vit_weights, rescale_blocks

__all__ = ["AttentiveProbe", "KnnProbe", "LinearProbe", "ProbeModule", "build"]

VAL_TOP1 = "val_top1/"  # prefix of a probe's per-choice validation top-1 in what `validate` returns

Labelled = tuple[Tensor, Tensor] | None  # the labelled set's features and labels, for probes that read them


class ProbeModule(nn.Module):
    """What the probe objective asks of every probe: `forward(features, labelled) -> output`, and from that
    output the loss and metrics of a training batch, the class logits, and the choice made on the labelled
    set's validation split. Defaults: the output is the logits, the loss their cross-entropy, no choice."""

    def loss(self, out: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy of the logits and batch top-1."""
        logits = self.logits(out)
        return F.cross_entropy(logits, labels), {"top1": (logits.argmax(-1) == labels).float().mean()}

    def logits(self, out: Tensor) -> Tensor:
        """Class logits [B, classes] (fp32) of a forward's output."""
        return out.float()

    def validate(self, out: Tensor, labels: Tensor) -> dict[str, float]:
        """Choose on the validation split's output and labels what `logits` answers with; return the choice and
        what it was based on (nothing to choose by default)."""
        return {}

    def observe(self, features: Tensor) -> None:
        """See the training clips' features [N, ...] once, before the first step (nothing by default)."""


class CrossAttentionBlock(nn.Module):
    """q + xattn(q, norm1(x)), then + mlp(norm2(q))."""

    def __init__(self, dim: int, heads: int, mlp: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.xattn = Attention(dim, heads, layout="vjepa", cross=True, bias=True, out_proj=False)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp, bias=True, layout="vjepa")

    def forward(self, q: Tensor, x: Tensor) -> Tensor:
        """Queries q [B, Q, dim], tokens x [B, N, dim] -> [B, Q, dim]."""
        q = q + self.xattn(q, ctx=self.norm1(x))
        return q + self.mlp(self.norm2(q))


class AttentiveProbe(ProbeModule):
    """Self-attention `blocks`, attentive pooling by one learned query, linear classifier."""

    def __init__(self, cfg: ProbeConfig, in_dim: int, classes: int | None = None) -> None:
        super().__init__()
        classes = probe_classes(cfg, classes)
        if in_dim % cfg.heads:
            raise ValueError(
                f"probe heads={cfg.heads} does not divide the encoder width {in_dim}; "
                "pick heads with width % heads == 0"
            )
        self.cfg = cfg
        hidden = int(in_dim * cfg.mlp_ratio)
        self.query = nn.Parameter(torch.zeros(1, 1, in_dim))  # [1, 1, D]
        self.blocks = nn.ModuleList(
            [Block(in_dim, cfg.heads, hidden, cfg.norm_eps, qkv_bias=True) for _ in range(cfg.depth)]
        )
        self.cross = CrossAttentionBlock(in_dim, cfg.heads, hidden, cfg.norm_eps)
        self.head = nn.Linear(in_dim, classes)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re)initialise every parameter from the torch RNG (module docstring)."""
        init_vit_weights(self, self.cfg.init_std)
        rescale_blocks(self.blocks)
        self.cross.mlp.fc2.weight.div_(math.sqrt(2.0 * max(self.cfg.depth, 1)))
        nn.init.trunc_normal_(self.query, mean=0.0, std=self.cfg.init_std, a=-2.0, b=2.0)

    def forward(self, tokens: Tensor, labelled: Labelled = None) -> Tensor:
        """Frozen encoder tokens [B, N, in_dim] -> class logits [B, classes]."""
        x = tokens
        for block in self.blocks:
            x = block(x)
        q = self.cross(self.query.expand(x.shape[0], -1, -1), x)  # [B, 1, D]
        return self.head(q[:, 0])  # [B, classes]


class LinearProbe(ProbeModule):
    """Linear heads, one per weight decay of the config, on standardised mean-pooled tokens.

    The features are standardised per feature with the mean and standard deviation of the labelled training
    clips' features (`observe`, once, before the first step; MAE's BatchNorm without affine parameters, with
    its statistics fixed instead of per batch, so a clip's logits do not depend on its batch), then head h
    computes x @ weight[h] + bias[h]. The loss is the sum over heads of CE_h + wd_h ||W_h||^2 / 2:
    the heads share nothing but their input, each one's gradient is its own loss's, so training them together
    equals training each alone under Adam. `validate` picks the head that `logits` answers with.
    """

    def __init__(self, cfg: LinearConfig, in_dim: int, classes: int | None = None) -> None:
        super().__init__()
        self.cfg, self.in_dim = cfg, in_dim
        classes = probe_classes(cfg, classes)
        heads = len(cfg.weight_decays)
        self.weight = nn.Parameter(torch.empty(heads, in_dim, classes))  # [H, D, C]
        self.bias = nn.Parameter(torch.zeros(heads, classes))  # [H, C]
        self.chosen = 0  # the head `logits` answers with (`validate` chooses it)
        # per-feature standardisation, from the labelled training clips (`observe`); saved with the heads
        self.register_buffer("shift", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        self.init_weights()

    @torch.no_grad()
    def observe(self, features: Tensor) -> None:
        """Fix the standardisation: the mean and standard deviation (+ norm_eps) of each feature over the
        training clips' pooled features [N, D]."""
        x = features.double()
        self.shift.copy_(x.mean(0))
        self.scale.copy_(x.std(0, unbiased=False) + self.cfg.norm_eps)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated-normal(init_std) weights, zero biases."""
        nn.init.trunc_normal_(self.weight, mean=0.0, std=self.cfg.init_std, a=-2.0, b=2.0)
        self.bias.zero_()

    def forward(self, features: Tensor, labelled: Labelled = None) -> tuple[Tensor, Tensor]:
        """Pooled features [B, D] -> every head's logits [H, B, C] and squared weight norms ||W_h||^2 [H]."""
        x = (features - self.shift) / self.scale
        logits = torch.einsum("bd,hdc->hbc", x, self.weight) + self.bias[:, None]
        return logits, self.weight.pow(2).sum((1, 2))

    def loss(self, out: tuple[Tensor, Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The sum over heads of CE_h + wd_h ||W_h||^2 / 2; each head's cross-entropy and top-1 under its weight
        decay."""
        logits, norms = out[0].float(), out[1].float()  # [H, B, C], [H]
        decays = torch.tensor(self.cfg.weight_decays, device=norms.device)
        ce = torch.stack([F.cross_entropy(h, labels) for h in logits])
        top1 = (logits.argmax(-1) == labels).float().mean(1)
        metrics = {}
        for h, wd in enumerate(self.cfg.weight_decays):
            metrics.update({f"ce/{wd:g}": ce[h].detach(), f"top1/{wd:g}": top1[h]})
        return ce.sum() + (decays * norms).sum() / 2, metrics

    def logits(self, out: tuple[Tensor, Tensor]) -> Tensor:
        """The chosen head's logits [B, C]."""
        return out[0][self.chosen].float()

    def validate(self, out: tuple[Tensor, Tensor], labels: Tensor) -> dict[str, float]:
        """Every head's validation top-1 and the weight decay of the best (ties: the larger), whose head
        `logits` answers with from now on."""
        acc = (out[0].argmax(-1) == labels).double().mean(1).tolist()  # [H]
        decays = self.cfg.weight_decays
        self.chosen = max(range(len(decays)), key=lambda h: (acc[h], decays[h]))
        return {
            **{f"{VAL_TOP1}{wd:g}": a for wd, a in zip(decays, acc, strict=True)},
            "weight_decay": decays[self.chosen],
        }


class KnnProbe(ProbeModule):
    """k nearest neighbours by cosine similarity, votes weighted by (1 + similarity) / 2; no parameters.

    Neighbours are the k labelled clips most similar to the query (ties: the one earlier in the labelled set
    first, by a stable sort); each adds (1 + similarity) / 2, in [0, 1], to its class's score. The returned
    scores play the logits' part: their argmax is the prediction (ties: the lowest class index).
    """

    def __init__(self, cfg: KnnConfig, in_dim: int, classes: int | None = None) -> None:
        super().__init__()
        self.k, self.classes = cfg.k, probe_classes(cfg, classes)

    def forward(self, features: Tensor, labelled: Labelled = None) -> Tensor:
        """Pooled features [B, D] of the queries against the labelled set's features [N, D] and labels [N] ->
        scores [B, classes]."""
        keys, labels = labelled
        sim = F.normalize(features.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T  # [B, N]
        k = min(self.k, keys.shape[0])
        nearest = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k]  # [B, k]
        votes = (1.0 + sim.gather(1, nearest)) / 2.0
        scores = torch.zeros(sim.shape[0], self.classes, dtype=votes.dtype, device=votes.device)
        return scores.scatter_add_(1, labels[nearest], votes)

    def loss(self, out: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """None: a kNN probe trains nothing (its stage has no steps)."""
        raise NotImplementedError("a knn probe trains nothing; its stage has no schedule")


def build(cfg: ProbeConfig, in_dim: int, classes: int | None = None) -> AttentiveProbe:
    """Build an attentive probe for tokens of width `in_dim` (classes: cfg.classes, else this argument)."""
    return AttentiveProbe(cfg, in_dim, classes)
