"""Engine overhead: the engine's training loop against a plain PyTorch loop, side by side, on CPU.

Both loops train the same model (built from the spec) on the same counter-based batches with the same AdamW
and gradient clipping; the engine's time per step comes from its own metrics (windows after the first), the
plain loop's from the same number of steps timed in this script. Rounds alternate so that machine noise hits
both. Then the MoE layer against a dense FFN with the same active parameters (tools/bench_moe.py).

    python tools/bench_overhead.py [--spec specs/sparse_parity.yaml] [--steps 200] [--rounds 3] [key=value ...]

`--lengths` measures instead how a training step of the spec's model grows with sequence length and batch,
plain and with activation checkpointing or torch.compile per block (the spec's `distributed` switches), each
shape's variants interleaved over rounds:

    python tools/bench_overhead.py --lengths 256,512,1024,2048 --batches 4,16 [--variants plain,checkpoint,compile]
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


def _shape_step(model: torch.nn.Module, optim: torch.optim.Optimizer, tokens: torch.Tensor) -> None:
    """One step of next-token training on a fixed [batch, length] tensor: forward, backward, AdamW."""
    logits, aux = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()) + aux["aux_loss"]
    loss.backward()
    optim.step()
    optim.zero_grad(set_to_none=True)


def length_table(
    spec_path: str,
    overrides: list[str],
    lengths: list[int],
    batches: list[int],
    variants: list[str],
    steps: int,
    rounds: int,
) -> list[dict[str, float | int | str]]:
    """ms per step of the spec's model per (length, batch, variant): medians over `rounds` of `steps` steps,
    the variants of one shape interleaved round by round (compiled ones warmed up before timing)."""
    from engine.runtime.parallel import parallelize
    from schemas.training import Distributed

    spec = load_spec(spec_path, overrides)
    name, stage = next(iter(spec.stages.items()))
    switches = {"plain": {}, "checkpoint": {"activation_checkpointing": True}, "compile": {"compile": True}}
    rows = []
    for length in lengths:
        for batch in batches:
            built = {}
            for v in variants:
                torch.manual_seed(stage_seed(spec.run.seed, name))
                model = registry.build_model(stage.model, stage.vocab_size)
                model = parallelize(model, Distributed(**switches[v]), Dist())
                optim = build_optimizer(stage.optim, {"model": model})
                tokens = torch.randint(0, stage.vocab_size, (batch, length + 1))
                for _ in range(2):  # warm-up (and compilation)
                    _shape_step(model, optim, tokens)
                built[v] = (model, optim, tokens)
            times: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(rounds):
                for v in variants:
                    model, optim, tokens = built[v]
                    t0 = time.perf_counter()
                    for _ in range(steps):
                        _shape_step(model, optim, tokens)
                    times[v].append((time.perf_counter() - t0) / steps)
            for v in variants:
                ms = statistics.median(times[v]) * 1e3
                rows.append({"length": length, "batch": batch, "variant": v, "ms": ms,
                             "spread": (max(times[v]) - min(times[v])) * 1e3,
                             "tokens_per_s": batch * length / ms * 1e3})  # fmt: skip
            print("  ".join(f"{r['variant']} {r['ms']:.1f} ms" for r in rows[-len(variants):]),
                  f"(length {length}, batch {batch})", flush=True)  # fmt: skip
    return rows


def print_length_table(rows: list[dict], variants: list[str]) -> None:
    """Markdown: per shape, ms/step and tokens/s of the plain step, its growth from the first shape, and each
    other variant's time as a ratio to plain."""
    base = rows[0]["ms"]
    others = [v for v in variants if v != "plain"]
    head = [
        "length",
        "batch",
        "plain ms/step",
        "tokens/s",
        "x first shape",
        *(f"{v} / plain" for v in others),
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    shapes = sorted({(r["length"], r["batch"]) for r in rows}, key=lambda x: (x[1], x[0]))
    for length, batch in shapes:
        here = {r["variant"]: r for r in rows if (r["length"], r["batch"]) == (length, batch)}
        plain = here.get("plain") or next(iter(here.values()))
        cells = [length, batch, f"{plain['ms']:.1f} ± {plain['spread'] / 2:.1f}", f"{plain['tokens_per_s']:.0f}",
                 f"{plain['ms'] / base:.2f}", *(f"{here[v]['ms'] / plain['ms']:.2f}" for v in others)]  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |")


def main() -> None:
    """Alternate engine and plain runs, print per-step medians and the ratio; then MoE vs dense."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=str(ROOT / "specs" / "sparse_parity.yaml"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--window", type=int, default=25)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--skip-moe", action="store_true")
    p.add_argument("--lengths", help="comma-separated sequence lengths: the step-time table instead")
    p.add_argument("--batches", default="4,16", help="with --lengths: comma-separated batch sizes")
    p.add_argument(
        "--variants", default="plain,checkpoint,compile", help="with --lengths: plain, checkpoint, compile"
    )
    p.add_argument("overrides", nargs="*", help="spec overrides, e.g. stages.train.model.dim=256")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING)
    if a.lengths:
        lengths = [int(x) for x in a.lengths.split(",")]
        variants = a.variants.split(",")
        steps = min(a.steps, 5)
        rows = length_table(a.spec, a.overrides, lengths, [int(x) for x in a.batches.split(",")], variants,
                            steps, a.rounds)  # fmt: skip
        print(f"\n{a.threads} threads, median of {a.rounds} rounds of {steps} steps; ± is half the spread\n")
        print_length_table(rows, variants)
        return
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
