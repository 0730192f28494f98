"""Mixture-of-experts FFN: float32 softmax router, top-k, dropless sorted dispatch with grouped matmuls.

Dispatch, for T = B*L tokens and k experts per token:
  1. the router gives probabilities [T, E] (float32) and the top-k experts and weights [T, k];
  2. the T*k (token, expert) pairs are sorted by expert id (stable, so token order within an expert),
     per-expert counts come from bincount, and the tokens are gathered in that order: [T*k, dim];
  3. the expert MLPs run as grouped matmuls over contiguous per-expert slices (`torch._grouped_mm`
     when it works for the device and dtype, else a loop over experts on `torch.split` slices);
  4. outputs are scaled by their router weights and scatter-added back to their tokens (index_add_).
With `capacity_factor`, each expert keeps its first ceil(factor * T * k / E) pairs in token order and
drops the rest (they contribute 0). Experts never have biases.

Losses (unweighted; the transformer applies the coefficients):
  lb_loss = E * sum_i f_i * P_i   (Switch Transformer; f_i = fraction of the T*k routed pairs sent to
                                   expert i before any capacity drop, P_i = mean router prob; 1 if uniform)
  z_loss  = mean_t logsumexp(router_logits_t)^2
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from schemas.models import MoEFFN, ffn_hidden

# ----------------------------------------------------------------------------- grouped matmul

_GROUPED_MM_OK: dict[tuple[str, torch.dtype, bool], bool] = {}


@torch.compiler.disable
def _probe_grouped_mm(device: torch.device, dtype: torch.dtype, traced: bool) -> bool:
    """Run a tiny forward+backward `torch._grouped_mm` on device/dtype and check it against a loop.

    With `traced`, also run its meta kernel, which torch.compile uses (in torch 2.13 it only takes bf16).
    """
    if not hasattr(torch, "_grouped_mm"):
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(24, 16, generator=gen).to(device, dtype).requires_grad_()
        w = torch.randn(3, 16, 32, generator=gen).to(device, dtype).requires_grad_()
        offs = torch.tensor([8, 8, 24], device=device, dtype=torch.int32)  # includes an empty group
        y = torch._grouped_mm(x, w, offs=offs)
        # a dense upstream grad: the backward rejects expanded (zero-stride) grads such as y.sum()'s,
        # which never reach it inside MoE.forward (the output is always scaled by the router weights)
        y.square().sum().backward()
        ref = torch.cat([x[:8] @ w[0], x[8:] @ w[2]])
        tol = 1e-4 if dtype == torch.float32 else 5e-2
        ok = torch.allclose(y.float(), ref.float(), atol=tol * 16, rtol=tol)
        if traced:
            torch._grouped_mm(x.to("meta"), w.to("meta"), offs=offs.to("meta"))
        return bool(ok and x.grad is not None and w.grad is not None)
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def grouped_mm_available(device: torch.device, dtype: torch.dtype, traced: bool = False) -> bool:
    """Whether `torch._grouped_mm` works (forward and backward; under torch.compile if traced) here; cached."""
    key = (device.type, dtype, traced)
    if key not in _GROUPED_MM_OK:
        _GROUPED_MM_OK[key] = _probe_grouped_mm(device, dtype, traced)
    return _GROUPED_MM_OK[key]


def _aligned(x: Tensor, *widths: int) -> bool:
    """`_grouped_mm` needs every row stride to be a multiple of 16 bytes."""
    return all(w * x.element_size() % 16 == 0 for w in widths)


# ----------------------------------------------------------------------------- MoE layer


class MoE(nn.Module):
    """Top-k routed experts with dropless (or capacity-limited) sorted dispatch."""

    def __init__(self, dim: int, cfg: MoEFFN, init_std: float = 0.02, out_std: float | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.hidden = ffn_hidden(dim, cfg)
        self.experts = cfg.experts
        self.top_k = cfg.top_k
        self.activation = cfg.activation
        self.capacity_factor = cfg.capacity_factor
        self.renormalize = cfg.renormalize
        self.init_std = init_std
        self.out_std = init_std if out_std is None else out_std
        # None: use torch._grouped_mm when it works here; True/False force a path (tests, benchmarks)
        self.grouped_mm: bool | None = None
        E, h = cfg.experts, self.hidden
        self.router = nn.Linear(dim, E, bias=False)
        self.w1 = nn.Parameter(torch.empty(E, dim, h))
        self.w3 = nn.Parameter(torch.empty(E, dim, h)) if cfg.activation == "swiglu" else None
        self.w2 = nn.Parameter(torch.empty(E, h, dim))
        self.init_weights()

    def init_weights(self) -> None:
        """Normal(0, init_std) router, w1 and w3; normal(0, out_std) w2."""
        nn.init.normal_(self.router.weight, mean=0.0, std=self.init_std)
        nn.init.normal_(self.w1, mean=0.0, std=self.init_std)
        if self.w3 is not None:
            nn.init.normal_(self.w3, mean=0.0, std=self.init_std)
        nn.init.normal_(self.w2, mean=0.0, std=self.out_std)

    def _use_grouped_mm(self, x: Tensor) -> bool:
        """The dispatch path for x: grouped matmul if forced or available and aligned, else the loop."""
        if self.grouped_mm is not None:
            return self.grouped_mm
        traced = torch.compiler.is_compiling()
        return _aligned(x, self.dim, self.hidden) and grouped_mm_available(x.device, x.dtype, traced)

    def _experts_grouped(self, xs: Tensor, counts: Tensor) -> Tensor:
        """Expert MLPs on expert-sorted rows xs [N, dim] via torch._grouped_mm -> [N, dim]."""
        offs = counts.cumsum(0).to(torch.int32)  # [E] end offset of each expert's slice
        h = torch._grouped_mm(xs, self.w1.to(xs.dtype), offs=offs)  # [N, h]
        if self.w3 is not None:
            h = F.silu(h) * torch._grouped_mm(xs, self.w3.to(xs.dtype), offs=offs)
        else:
            h = F.gelu(h)
        return torch._grouped_mm(h, self.w2.to(xs.dtype), offs=offs)  # [N, dim]

    def _experts_loop(self, xs: Tensor, counts: Tensor) -> Tensor:
        """Expert MLPs on expert-sorted rows xs [N, dim], one matmul chain per expert slice -> [N, dim]."""
        outs = []
        for e, xe in enumerate(torch.split(xs, counts.tolist())):  # xe [n_e, dim]
            h = xe @ self.w1[e]
            h = F.silu(h) * (xe @ self.w3[e]) if self.w3 is not None else F.gelu(h)
            outs.append(h @ self.w2[e])
        return torch.cat(outs)

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """x [B, L, dim] -> (y [B, L, dim], {lb_loss, z_loss: scalars, load: [E]})."""
        B, L, D = x.shape
        E, k = self.experts, self.top_k
        x = x.reshape(-1, D)  # [T, D]
        T = x.shape[0]

        # router, in float32
        logits = self.router(x).float()  # [T, E]
        probs = logits.softmax(dim=-1)  # [T, E]
        weights, experts = probs.topk(k, dim=-1)  # [T, k], [T, k]
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)

        # sort the T*k (token, expert) pairs by expert; stable keeps token order within an expert
        flat_experts = experts.reshape(-1)  # [T*k], pair p = t*k + j
        order = torch.argsort(flat_experts, stable=True)  # [T*k] pair ids, expert-major
        counts = torch.bincount(flat_experts, minlength=E)  # [E]
        load = counts.float() / (T * k)  # [E], before any capacity drop

        if self.capacity_factor is not None:
            capacity = math.ceil(self.capacity_factor * T * k / E)
            starts = counts.cumsum(0) - counts  # [E] first sorted slot of each expert
            rank = torch.arange(T * k, device=x.device) - starts[flat_experts[order]]  # rank within expert
            order = order[rank < capacity]  # [N] kept pairs, still expert-major
            counts = counts.clamp(max=capacity)

        token = order // k  # [N] token of each sorted pair
        xs = x.index_select(0, token)  # [N, D] tokens in expert order (backward: a fast index_add_)
        if self._use_grouped_mm(xs):
            ys = self._experts_grouped(xs, counts)
        else:
            ys = self._experts_loop(xs, counts)
        ys = ys * weights.reshape(-1)[order, None].to(ys.dtype)  # [N, D] scaled by router weights
        y = torch.zeros_like(x).index_add_(0, token, ys)  # [T, D] summed over each token's experts

        lb_loss = E * (load * probs.mean(dim=0)).sum()
        z_loss = torch.logsumexp(logits, dim=-1).square().mean()
        return y.view(B, L, D), {"lb_loss": lb_loss, "z_loss": z_loss, "load": load}
