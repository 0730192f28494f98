"""Tests of the mixture-of-experts FFN: dispatch against a per-token loop, both matmul paths, losses, capacity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.models.moe import MoE, grouped_mm_available
from schemas.models import MoEFFN

CPU_FP32 = (torch.device("cpu"), torch.float32)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_moe(dim: int = 16, seed: int = 0, **cfg) -> MoE:
    """A small MoE with seeded weights."""
    torch.manual_seed(seed)
    cfg = {"experts": 4, "top_k": 2, "hidden": 32, **cfg}
    return MoE(dim, MoEFFN(**cfg), init_std=0.5, out_std=0.5)


def reference(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Per-token loop: sum over the token's top-k experts of router weight * expert_mlp(token)."""
    B, L, D = x.shape
    out = []
    for xt in x.reshape(-1, D):
        probs = F.softmax(moe.router(xt).float(), dim=-1)
        w, idx = probs.topk(moe.top_k)
        if moe.renormalize:
            w = w / w.sum()
        yt = torch.zeros(D)
        for weight, e in zip(w, idx.tolist(), strict=True):
            h = xt @ moe.w1[e]
            h = F.silu(h) * (xt @ moe.w3[e]) if moe.w3 is not None else F.gelu(h)
            yt = yt + weight * (h @ moe.w2[e])
        out.append(yt)
    return torch.stack(out).view(B, L, D)


def grads(moe: MoE) -> dict[str, torch.Tensor]:
    """Copies of the gradients of every parameter, by name."""
    return {n: p.grad.clone() for n, p in moe.named_parameters()}


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
@pytest.mark.parametrize("grouped", [None, False], ids=["auto", "loop"])
def test_dropless_dispatch_matches_per_token_loop(activation: str, grouped: bool | None) -> None:
    """Output and all gradients of the sorted dispatch equal a per-token reference, for both paths."""
    moe = make_moe(activation=activation)
    moe.grouped_mm = grouped
    x = torch.randn(3, 8, 16)
    g = torch.randn(3, 8, 16)
    y, _ = moe(x)
    (y * g).sum().backward()
    got = grads(moe)
    moe.zero_grad()
    y_ref = reference(moe, x)
    (y_ref * g).sum().backward()
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    for name, grad in grads(moe).items():
        torch.testing.assert_close(got[name], grad, atol=1e-5, rtol=1e-5, msg=name)


def test_unaligned_width_uses_loop_and_is_correct() -> None:
    """dim=10 rows are not 16-byte aligned in fp32, so the auto path takes the loop and stays exact."""
    moe = make_moe(dim=10, hidden=6, experts=3)
    x = torch.randn(2, 5, 10)
    assert not moe._use_grouped_mm(x.reshape(-1, 10))
    torch.testing.assert_close(moe(x)[0], reference(moe, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_grouped_mm_path_matches_loop_path(activation: str) -> None:
    """torch._grouped_mm works on CPU fp32 in torch 2.13: both paths agree (and auto picks it).

    On a torch whose _grouped_mm does not work on CPU, auto must pick the loop; the test checks that instead.
    """
    x = torch.randn(4, 16, 16)
    g = torch.randn(4, 16, 16)
    results = []
    for grouped in (True, False):
        moe = make_moe(activation=activation)
        if grouped_mm_available(*CPU_FP32):
            moe.grouped_mm = grouped
        else:
            assert not moe._use_grouped_mm(x.reshape(-1, 16))
        y, _ = moe(x)
        (y * g).sum().backward()
        results.append((y, grads(moe)))
    (y1, g1), (y2, g2) = results
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=1e-5, rtol=1e-5, msg=name)
    if grouped_mm_available(*CPU_FP32):
        assert make_moe()._use_grouped_mm(x.reshape(-1, 16))


def test_balance_loss_is_one_for_uniform_router_and_larger_when_skewed() -> None:
    """Switch loss E * sum f_i P_i: exactly 1 for a uniform router, much larger when one expert dominates."""
    moe = make_moe(experts=8, top_k=2)
    x = torch.randn(2, 32, 16)
    with torch.no_grad():
        moe.router.weight.zero_()
    _, aux = moe(x)
    assert aux["lb_loss"].item() == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        moe.router.weight[0, 0] = 20.0  # expert 0 wins every token with x[..., 0] > 0
    x = x.clone()
    x[..., 0] = x[..., 0].abs() + 1.0
    _, aux = moe(x)
    # f_0 = 1/2 (one of the two slots), P_0 ~ 1: loss ~ 8 * 1/2 = 4
    assert aux["lb_loss"].item() > 3.5


def test_z_loss_on_known_logits() -> None:
    """z-loss = mean over tokens of logsumexp(logits)^2, checked on hand-set logits."""
    moe = make_moe(experts=4, top_k=1)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[:, 0] = torch.tensor([1.0, 2.0, 0.0, 0.0])
    x = torch.zeros(1, 2, 16)
    x[0, 0, 0] = 1.0  # logits [1, 2, 0, 0]
    # token 1 is all zeros: logits [0, 0, 0, 0]
    _, aux = moe(x)
    expected = (math.log(math.e + math.e**2 + 2) ** 2 + math.log(4) ** 2) / 2
    assert aux["z_loss"].item() == pytest.approx(expected, rel=1e-6)


def test_load_sums_to_one_and_counts_routed_pairs() -> None:
    """`load` is the fraction of the T*k routed pairs per expert."""
    moe = make_moe(experts=4, top_k=2)
    x = torch.randn(2, 10, 16)
    _, aux = moe(x)
    assert aux["load"].shape == (4,)
    assert aux["load"].sum().item() == pytest.approx(1.0, abs=1e-6)
    top = moe.router(x.reshape(-1, 16)).topk(2, dim=-1).indices.reshape(-1)
    torch.testing.assert_close(aux["load"], torch.bincount(top, minlength=4).float() / 40)


@pytest.mark.parametrize("grouped", [None, False], ids=["auto", "loop"])
def test_capacity_factor_drops_overflow_in_token_order(grouped: bool | None) -> None:
    """E=2, k=1, T=4, factor 1 -> capacity 2: tokens 0, 1, 2 want expert 0, so token 2 is dropped."""
    moe = make_moe(experts=2, top_k=1, capacity_factor=1.0)
    moe.grouped_mm = grouped
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0, 0] = 5.0
        moe.router.weight[1, 0] = -5.0
    x = torch.randn(1, 4, 16)
    x[0, :, 0] = torch.tensor([1.0, 1.0, 1.0, -1.0])
    y, aux = moe(x)
    full = reference(moe, x)  # dropless: weights are 1 (k=1, renormalised)
    torch.testing.assert_close(y[0, [0, 1, 3]], full[0, [0, 1, 3]], atol=1e-5, rtol=1e-5)
    assert torch.all(y[0, 2] == 0)
    assert full[0, 2].abs().sum() > 0
    torch.testing.assert_close(aux["load"], torch.tensor([0.75, 0.25]))  # counted before the drop


def test_gradients_reach_router_and_experts() -> None:
    """The task loss and the aux losses give non-zero gradients to the router and every expert matrix."""
    moe = make_moe(activation="swiglu")
    y, aux = moe(torch.randn(2, 8, 16))
    (y.sum() + aux["lb_loss"] + aux["z_loss"]).backward()
    for name, p in moe.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(n in dict(moe.named_parameters()) for n in ("router.weight", "w1", "w2", "w3"))
