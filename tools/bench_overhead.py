"""Engine overhead: the engine's training loop against a plain PyTorch loop, side by side, on CPU.

Both loops train the same model (built from the spec) on the same counter-based batches with the same AdamW
and gradient clipping; the engine's time per step comes from its own metrics (windows after the first), the
plain loop's from the same number of steps timed in this script. Rounds alternate so that machine noise hits
both. Then the MoE layer against a dense FFN with the same active parameters (tools/bench_moe.py).

    python tools/bench_overhead.py [--spec specs/sparse_parity.yaml] [--steps 200] [--rounds 3] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from engine import registry  # noqa: E402
from engine.data.stream import Stream  # noqa: E402
from engine.runtime.distributed import Dist  # noqa: E402
from engine.runtime.metrics import read_metrics  # noqa: E402
from engine.runtime.trainer import build_optimizer, lr_factor, run_spec, stage_seed  # noqa: E402
from schemas import load_spec  # noqa: E402


def engine_step_times(spec_path: str, overrides: list[str], steps: int, window: int) -> list[float]:
    """Seconds per step of the engine's own loop, one figure per logging window after the first."""
    with tempfile.TemporaryDirectory() as out:
        spec = load_spec(spec_path, [*overrides, f"run.output={out}", f"stages.train.schedule.steps={steps}"])
        run_spec(spec, Dist())
        rows = read_metrics(f"{out}/train")
    return [r["step_time_s"] for r in rows if "step_time_s" in r][1:]


def plain_step_times(spec_path: str, overrides: list[str], steps: int, window: int) -> list[float]:
    """The same training written as a bare PyTorch loop; seconds per step per window after the first."""
    spec = load_spec(spec_path, overrides)
    name, stage = next(iter(spec.stages.items()))
    gen = registry.build_data(stage.data)
    torch.manual_seed(stage_seed(spec.run.seed, name))
    model = registry.build_model(stage.model, stage.vocab_size)
    optim = build_optimizer(stage.optim, {"model": model})
    stream = Stream(gen, spec.run.seed, name, 0, stage.batch.global_)
    params = [p for p in model.parameters()]
    times, t0 = [], time.perf_counter()
    for step in range(steps):
        for g in optim.param_groups:
            g["lr"] = stage.optim.lr * lr_factor(stage.schedule, step)
        ex = stream.batch(step)
        tokens = torch.from_numpy(ex.tokens).long()
        mask = torch.from_numpy(ex.loss_mask)[:, 1:]
        logits, aux = model(tokens[:, :-1])
        loss = F.cross_entropy(logits[mask], tokens[:, 1:][mask]) + aux["aux_loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, stage.optim.grad_clip or float("inf"), foreach=True)
        optim.step()
        optim.zero_grad(set_to_none=True)
        if (step + 1) % window == 0:
            times.append((time.perf_counter() - t0) / window)
            t0 = time.perf_counter()
    return times[1:]


def main() -> None:
    """Alternate engine and plain runs, print per-step medians and the ratio; then MoE vs dense."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=str(ROOT / "specs" / "sparse_parity.yaml"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--window", type=int, default=25)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--skip-moe", action="store_true")
    p.add_argument("overrides", nargs="*", help="spec overrides, e.g. stages.train.model.dim=256")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING)
    overrides = [
        *a.overrides,
        f"stages.train.logging.every={a.window}",
        "stages.train.logging.console=false",
        "stages.train.logging.tensorboard=false",
        "stages.train.evals=[]",
        "stages.train.checkpoint.every=1000000",
        "stages.train.schedule.warmup=0",
    ]
    engine, plain = [], []
    for r in range(a.rounds):
        engine += engine_step_times(a.spec, overrides, a.steps, a.window)
        plain += plain_step_times(a.spec, overrides, a.steps, a.window)
        print(
            f"round {r + 1}/{a.rounds}: engine {statistics.median(engine) * 1e3:.2f} ms/step, "
            f"plain {statistics.median(plain) * 1e3:.2f} ms/step",
            flush=True,
        )
    e, b = statistics.median(engine), statistics.median(plain)
    print()
    print(f"{'loop':<10}{'ms/step (median)':>18}")
    print(f"{'plain':<10}{b * 1e3:>18.2f}")
    print(f"{'engine':<10}{e * 1e3:>18.2f}")
    print(
        f"engine / plain = {e / b:.3f}  (target <= 1.05; {a.threads} threads, {a.steps} steps x {a.rounds} rounds)"
    )

    if not a.skip_moe:
        from bench_moe import moe_vs_dense

        r = moe_vs_dense(dim=256, tokens=4096, experts=8, top_k=2, hidden=512, repeats=20)
        print()
        print(
            "MoE layer (8 experts, top-2, expert hidden 512) vs dense FFN (hidden 1024: same active params),"
        )
        print(
            f"forward+backward on 4096 tokens of width 256: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})}"
        )


if __name__ == "__main__":
    main()
