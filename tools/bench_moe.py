"""Benchmark: forward+backward time of the MoE FFN vs a dense FFN with the same active parameters."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from engine.models.layers import MLP  # noqa: E402
from engine.models.moe import MoE, grouped_mm_available  # noqa: E402
from schemas.models import MoEFFN  # noqa: E402


def _step_time(module: nn.Module, x: torch.Tensor) -> float:
    """Seconds for one forward+backward of module on x (grads zeroed outside the timed region)."""
    module.zero_grad(set_to_none=True)
    x.grad = None
    t0 = time.perf_counter()
    out = module(x)
    y = out[0] if isinstance(out, tuple) else out
    y.square().mean().backward()
    return time.perf_counter() - t0


def moe_vs_dense(
    dim: int = 256,
    tokens: int = 4096,
    experts: int = 8,
    top_k: int = 2,
    hidden: int = 512,
    repeats: int = 20,
    activation: str = "gelu",
    grouped_mm: bool | None = None,
    warmup: int = 3,
) -> dict:
    """Median fwd+bwd seconds of MoE(experts, top_k, hidden) vs a dense MLP(top_k * hidden), interleaved.

    The dense MLP has the MoE's activation, so both have the same active parameters (router aside).
    """
    torch.manual_seed(0)
    cfg = MoEFFN(experts=experts, top_k=top_k, hidden=hidden, activation=activation)
    moe = MoE(dim, cfg)
    moe.grouped_mm = grouped_mm
    dense = MLP(dim, top_k * hidden, activation)
    x = torch.randn(1, tokens, dim, requires_grad=True)
    for _ in range(warmup):
        _step_time(moe, x)
        _step_time(dense, x)
    moe_times, dense_times = [], []
    for _ in range(repeats):
        moe_times.append(_step_time(moe, x))
        dense_times.append(_step_time(dense, x))
    moe_s, dense_s = statistics.median(moe_times), statistics.median(dense_times)
    uses_grouped = moe._use_grouped_mm(x.detach().reshape(-1, dim))
    mats = 3 if activation == "swiglu" else 2
    return {
        "dim": dim,
        "tokens": tokens,
        "experts": experts,
        "top_k": top_k,
        "hidden": hidden,
        "activation": activation,
        "grouped_mm": uses_grouped,
        "moe_active_params": top_k * (mats * dim * hidden) + dim * experts,
        "dense_params": mats * dim * top_k * hidden,
        "moe_s": moe_s,
        "dense_s": dense_s,
        "ratio": moe_s / dense_s,
    }


def main() -> None:
    """Parse sizes, run the comparison and print a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument(
        "--hidden", type=int, default=512, help="hidden width of each expert (dense: top_k * hidden)"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--both-paths", action="store_true", help="also time the per-expert loop fallback")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokens = args.batch * args.seq
    print(
        f"dim={args.dim} tokens={tokens} experts={args.experts} top_k={args.top_k} hidden={args.hidden} "
        f"threads={torch.get_num_threads()} "
        f"grouped_mm(cpu, fp32)={grouped_mm_available(torch.device('cpu'), torch.float32)}"
    )
    rows = []
    paths = [None, False] if args.both_paths else [None]
    for activation in ("gelu", "swiglu"):
        for path in paths:
            r = moe_vs_dense(
                args.dim, tokens, args.experts, args.top_k, args.hidden, args.repeats, activation, path
            )
            rows.append(r)
    print(f"{'act':<8} {'dispatch':<10} {'moe ms':>8} {'dense ms':>9} {'moe/dense':>10}")
    for r in rows:
        path = "grouped" if r["grouped_mm"] else "loop"
        print(
            f"{r['activation']:<8} {path:<10} {r['moe_s'] * 1e3:8.2f} {r['dense_s'] * 1e3:9.2f} {r['ratio']:10.2f}x"
        )


if __name__ == "__main__":
    main()
