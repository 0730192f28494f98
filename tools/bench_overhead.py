"""Engine overhead: the engine's training loop against a plain PyTorch loop, side by side, on CPU.

Both loops train the same model (built from the spec) on the same counter-based batches with the same AdamW
and gradient clipping; the engine's time per step comes from its own metrics (windows after the first), the
plain loop's from the same number of steps timed in this script. Rounds alternate so that machine noise hits
both. The same for the SALT student step (specs/salt_tiny.yaml's student: frozen teacher, encoder on two masks'
contexts, predictor, L1; --salt-steps 0 skips it). Then the MoE layer against a dense FFN with the same active
parameters (tools/bench_moe.py).

    python tools/bench_overhead.py [--spec specs/sparse_parity.yaml] [--steps 200] [--rounds 3] [key=value ...]

`--interleave PAIRS` compares the two steps more tightly: in one process, on the same modules and stream, blocks of
`--block` engine steps and plain steps alternate, and the median of the neighbouring blocks' ratios is printed:

    python tools/bench_overhead.py --interleave 40 --block 5 --skip-moe

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


# ----------------------------------------------------------------------------- the SALT student step

SALT = ROOT / "specs" / "salt_tiny.yaml"


def salt_overrides(window: int, steps: int) -> list[str]:
    """salt_tiny's student (ViT 96x4 on 8x32x32 clips, predictor 96x2, batch 32) timed alone: one mask group
    (no padding to trim), no evaluations or checkpoints; its teacher trains for one step to give it weights."""
    o = ["resources.procs_per_node=1", "stages.teacher.schedule={steps: 1, warmup: 1}"]
    for k, v in {"logging.every": window, "logging.console": "false", "logging.tensorboard": "false",
                 "evals": "[]", "checkpoint.every": 1000000, "schedule.warmup": 0, "schedule.steps": steps,
                 "objective.masks.group": 32}.items():  # fmt: skip
        o.append(f"stages.student.{k}={v}")
    return o


def salt_engine_step_times(out: str, overrides: list[str]) -> list[float]:
    """Seconds per step of the engine's loop on the student stage (a fresh student directory each time)."""
    import shutil

    shutil.rmtree(f"{out}/student", ignore_errors=True)
    spec = load_spec(str(SALT), [*overrides, f"run.output={out}"])
    run_spec(spec, Dist(), only="student")
    rows = read_metrics(f"{out}/student")
    return [r["step_time_s"] for r in rows if "step_time_s" in r][1:]


def salt_plain_loss(obj, clips) -> torch.Tensor:
    """The SALT student's loss as a bare loop computes it, from the objective's modules: the clips normalised,
    the frozen teacher under no_grad, layer-normed targets, the encoder on each mask's context, predictor, L1."""
    from engine.objectives.jepa import MEAN, STD, gather

    mean, std = torch.tensor(MEAN).view(1, -1, 1, 1, 1), torch.tensor(STD).view(1, -1, 1, 1, 1)
    video = (torch.from_numpy(clips.video).float().div_(255.0) - mean) / std
    masks = [(torch.from_numpy(clips.meta[f"context_{i}"]), torch.from_numpy(clips.meta[f"target_{i}"]))
             for i in range(len(obj.cfg.masks.masks))]  # fmt: skip
    with torch.no_grad():
        h = obj.teacher(video)
        targets = F.layer_norm(h, (h.shape[-1],))
    zs = obj.encoder(video, keep=[context for context, _ in masks])
    losses = [F.l1_loss(obj.predictor(z, context, target, i), gather(targets, target))
              for i, ((context, target), z) in enumerate(zip(masks, zs, strict=True))]  # fmt: skip
    return torch.stack(losses).mean()


def plain_loop(stage, params: list, optim, loss_of, steps: int, window: int) -> list[float]:
    """A bare training loop: schedule, `loss_of(step)`, backward, clip, AdamW; seconds per step per window of
    `window` steps after the first."""
    times, t0 = [], time.perf_counter()
    for step in range(steps):
        for g in optim.param_groups:
            g["lr"] = stage.optim.lr * lr_factor(stage.schedule, step)
        loss_of(step).backward()
        torch.nn.utils.clip_grad_norm_(params, stage.optim.grad_clip or float("inf"), foreach=True)
        optim.step()
        optim.zero_grad(set_to_none=True)
        if (step + 1) % window == 0:
            times.append((time.perf_counter() - t0) / window)
            t0 = time.perf_counter()
    return times[1:]


def salt_plain_step_times(out: str, overrides: list[str], steps: int, window: int) -> list[float]:
    """The student's training as a bare PyTorch loop over the same modules, clips and masks (`salt_plain_loss`).
    Seconds per step per window after the first."""
    from engine.runtime.trainer import StageRunner

    spec = load_spec(str(SALT), [*overrides, f"run.output={out}"])
    stage = spec.stages["student"]
    runner = StageRunner(spec, "student", stage, Dist())
    runner.build()  # the same modules, init and stream (clips and masks) as the engine's run
    obj, stream = runner.objective, runner.stream
    optim = build_optimizer(stage.optim, obj.trainable())
    params = [p for m in obj.trainable().values() for p in m.parameters()]
    for m in obj.trainable().values():
        m.train()
    return plain_loop(
        stage, params, optim, lambda step: salt_plain_loss(obj, stream.batch(step)), steps, window
    )


def next_token_loss(model, examples) -> torch.Tensor:
    """Cross-entropy on the answer tokens, as a bare loop computes it (plus the MoE balance loss, if any)."""
    tokens = torch.from_numpy(examples.tokens).long()
    mask = torch.from_numpy(examples.loss_mask)[:, 1:]
    logits, aux = model(tokens[:, :-1])
    return F.cross_entropy(logits[mask], tokens[:, 1:][mask]) + aux["aux_loss"]


def plain_step_times(spec_path: str, overrides: list[str], steps: int, window: int) -> list[float]:
    """The same training written as a bare PyTorch loop; seconds per step per window after the first."""
    spec = load_spec(spec_path, overrides)
    name, stage = next(iter(spec.stages.items()))
    gen = registry.build_data(stage.data)
    torch.manual_seed(stage_seed(spec.run.seed, name))
    model = registry.build_model(stage.model, stage.vocab_size)
    optim = build_optimizer(stage.optim, {"model": model})
    stream = Stream(gen, spec.run.seed, name, 0, stage.batch.global_)
    params = list(model.parameters())
    return plain_loop(
        stage, params, optim, lambda step: next_token_loss(model, stream.batch(step)), steps, window
    )


# ----------------------------------------------------------------------------- step by step, interleaved


def interleaved(
    spec_path: str, overrides: list[str], stage_name: str, blocks: int, block: int
) -> list[float]:
    """engine / plain time ratios of neighbouring blocks of `block` steps, alternating in one process.

    The engine's step is `StageRunner._step` (micro-batches, weighting, counting, the step's collective, checks,
    clip, AdamW) plus what its loop does around a step (schedule, counters, log window); the plain step is the
    bare loop's body over the same modules, stream and AdamW settings (a second optimizer of its own). Blocks
    alternate (which goes first flips each pair), so both see the same machine."""
    from engine.runtime.signals import Preemption
    from engine.runtime.trainer import Counters, StageRunner, Window, weight_decay_at

    spec = load_spec(spec_path, overrides)
    stage = spec.stages[stage_name]
    runner = StageRunner(spec, stage_name, stage, Dist())
    runner.build()
    obj, stream, flag = runner.objective, runner.stream, Preemption()
    params = [p for m in obj.trainable().values() for p in m.parameters() if p.requires_grad]
    optim = build_optimizer(stage.optim, obj.trainable())
    for m in obj.trainable().values():
        m.train()
    counters, window = Counters(), Window()
    video_model = hasattr(obj, "masks")
    if video_model and not hasattr(obj, "teacher"):
        raise SystemExit(
            f"--interleave times next-token and latent-prediction stages; {stage_name} is neither"
        )

    def engine_step(step: int) -> None:
        for g in runner.optim.param_groups:
            g["lr"] = stage.optim.lr * lr_factor(stage.schedule, step)
            if g["decay"]:
                g["weight_decay"] = weight_decay_at(stage.optim, stage.schedule, step)
        stats, mets, _ = runner._step(step, flag)
        obj.after_step(step + 1)
        counters.tokens += stats.tokens
        counters.flops += stats.flops
        window.add(stats, mets)

    def plain_step(step: int) -> None:
        for g in optim.param_groups:
            g["lr"] = stage.optim.lr * lr_factor(stage.schedule, step)
        batch = stream.batch(step)
        loss = salt_plain_loss(obj, batch) if video_model else next_token_loss(obj.model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, stage.optim.grad_clip or float("inf"), foreach=True)
        optim.step()
        optim.zero_grad(set_to_none=True)

    def timed(fn, first: int) -> float:
        t0 = time.perf_counter()
        for step in range(first, first + block):
            fn(step)
        return time.perf_counter() - t0

    timed(engine_step, 0), timed(plain_step, 0)  # warm-up: allocator, AdamW state
    ratios = []
    for b in range(blocks):
        first = (b + 1) * block
        if b % 2:
            p, e = timed(plain_step, first), timed(engine_step, first)
        else:
            e, p = timed(engine_step, first), timed(plain_step, first)
        ratios.append(e / p)
    return ratios


def _shape_step(model: torch.nn.Module, optim: torch.optim.Optimizer, tokens: torch.Tensor) -> None:
    """One step of next-token training on a fixed [batch, length] tensor: forward, backward, AdamW (in bf16
    autocast on CUDA)."""
    with torch.autocast("cuda", torch.bfloat16, enabled=tokens.is_cuda):
        logits, aux = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten()) + aux["aux_loss"]
    loss.backward()
    optim.step()
    optim.zero_grad(set_to_none=True)


def _sync(device: torch.device) -> float:
    """perf_counter after the device's queued work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def step_flops(model_cfg, vocab: int, batch: int, length: int) -> float:
    """Training FLOPs of one step by the usual MFU accounting for a dense model: 6 per parameter (the embedding
    table excluded, the output layer included) per token, plus 12 * depth * dim * length per token for
    attention's two matmuls (forward and backward). A mixture of experts is counted with all its experts."""
    model = registry.build_model(model_cfg, vocab)
    n = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name)
    return batch * length * (6 * n + 12 * model_cfg.depth * model_cfg.dim * length)


def length_table(
    spec_path: str,
    overrides: list[str],
    lengths: list[int],
    batches: list[int],
    variants: list[str],
    steps: int,
    rounds: int,
    device: torch.device | None = None,
) -> list[dict[str, float | int | str]]:
    """ms per step of the spec's model per (length, batch, variant): medians over `rounds` of `steps` steps,
    the variants of one shape interleaved round by round (compiled ones warmed up before timing)."""
    from engine.runtime.parallel import parallelize
    from schemas.training import Distributed

    device = device or torch.device("cpu")
    spec = load_spec(spec_path, overrides)
    name, stage = next(iter(spec.stages.items()))
    switches = {"plain": {}, "checkpoint": {"activation_checkpointing": True}, "compile": {"compile": True}}
    rows = []
    for length in lengths:
        for batch in batches:
            built = {}
            for v in variants:
                torch.manual_seed(stage_seed(spec.run.seed, name))
                model = registry.build_model(stage.model, stage.vocab_size).to(device)
                model = parallelize(model, Distributed(**switches[v]), Dist(device=device))
                optim = build_optimizer(stage.optim, {"model": model})
                tokens = torch.randint(0, stage.vocab_size, (batch, length + 1), device=device)
                for _ in range(2):  # warm-up (and compilation)
                    _shape_step(model, optim, tokens)
                built[v] = (model, optim, tokens)
            times: dict[str, list[float]] = {v: [] for v in variants}
            peak: dict[str, float] = {}
            for _ in range(rounds):
                for v in variants:
                    model, optim, tokens = built[v]
                    if device.type == "cuda":  # the peak above what is held already (every variant's state)
                        torch.cuda.reset_peak_memory_stats(device)
                        held = torch.cuda.memory_allocated(device)
                    t0 = _sync(device)
                    for _ in range(steps):
                        _shape_step(model, optim, tokens)
                    times[v].append((_sync(device) - t0) / steps)
                    if device.type == "cuda":
                        peak[v] = (torch.cuda.max_memory_allocated(device) - held) / 2**30
            flops = step_flops(stage.model, stage.vocab_size, batch, length)
            for v in variants:
                ms = statistics.median(times[v]) * 1e3
                rows.append({"length": length, "batch": batch, "variant": v, "ms": ms,
                             "spread": (max(times[v]) - min(times[v])) * 1e3,
                             "tokens_per_s": batch * length / ms * 1e3, "flops_per_s": flops / ms * 1e3,
                             "peak_gib": peak.get(v, float("nan"))})  # fmt: skip
            print("  ".join(f"{r['variant']} {r['ms']:.1f} ms" for r in rows[-len(variants):]),
                  f"(length {length}, batch {batch})", flush=True)  # fmt: skip
    return rows


def print_length_table(rows: list[dict], variants: list[str], peak_flops: float | None = None) -> None:
    """Markdown: per shape, ms/step and tokens/s of the plain step, its growth from the first shape, and each
    other variant's time as a ratio to plain; with `peak_flops` (CUDA) also the plain step's model FLOPs
    utilisation and every variant's peak memory."""
    base = rows[0]["ms"]
    others = [v for v in variants if v != "plain"]
    head = [
        "length",
        "batch",
        "plain ms/step",
        "tokens/s",
        "x first shape",
        *(f"{v} / plain" for v in others),
        *(["MFU", *(f"{v} step GiB" for v in variants)] if peak_flops else []),
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    shapes = sorted({(r["length"], r["batch"]) for r in rows}, key=lambda x: (x[1], x[0]))
    for length, batch in shapes:
        here = {r["variant"]: r for r in rows if (r["length"], r["batch"]) == (length, batch)}
        plain = here.get("plain") or next(iter(here.values()))
        cells = [length, batch, f"{plain['ms']:.1f} ± {plain['spread'] / 2:.1f}", f"{plain['tokens_per_s']:.0f}",
                 f"{plain['ms'] / base:.2f}", *(f"{here[v]['ms'] / plain['ms']:.2f}" for v in others)]  # fmt: skip
        if peak_flops:
            cells += [
                f"{plain['flops_per_s'] / peak_flops:.2f}",
                *(f"{here[v]['peak_gib']:.1f}" for v in variants),
            ]
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
    p.add_argument("--salt-steps", type=int, default=60, help="SALT student steps per round (0: skip)")
    p.add_argument("--salt-window", type=int, default=10, help="SALT student steps per timing window")
    p.add_argument("--interleave", type=int, default=0, metavar="PAIRS",
                   help="instead: engine and plain steps in alternating blocks in one process, PAIRS pairs")  # fmt: skip
    p.add_argument("--block", type=int, default=5, help="with --interleave: steps per block")
    p.add_argument("--lengths", help="comma-separated sequence lengths: the step-time table instead")
    p.add_argument("--batches", default="4,16", help="with --lengths: comma-separated batch sizes")
    p.add_argument(
        "--variants", default="plain,checkpoint,compile", help="with --lengths: plain, checkpoint, compile"
    )
    p.add_argument("--device", default="cpu", help="with --lengths: cpu, or cuda (bf16 autocast)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="with --lengths on CUDA: the MFU's peak")
    p.add_argument("overrides", nargs="*", help="spec overrides, e.g. stages.train.model.dim=256")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING)
    if a.lengths:
        lengths = [int(x) for x in a.lengths.split(",")]
        variants = a.variants.split(",")
        steps = min(a.steps, 5)
        device = torch.device(a.device)
        rows = length_table(a.spec, a.overrides, lengths, [int(x) for x in a.batches.split(",")], variants,
                            steps, a.rounds, device)  # fmt: skip
        where = (
            f"{torch.cuda.get_device_name(device)}, bf16" if device.type == "cuda" else f"{a.threads} threads"
        )
        print(f"\n{where}, median of {a.rounds} rounds of {steps} steps; ± is half the spread")
        if device.type == "cuda":
            print(f"MFU: the plain step's model FLOPs against {a.peak_tflops:g} TFLOP/s dense bf16")
        print()
        print_length_table(rows, variants, a.peak_tflops * 1e12 if device.type == "cuda" else None)
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
    if a.interleave:
        runs = [("quickstart", a.spec, overrides, "train")]
        if a.salt_steps:
            salt_dir = tempfile.mkdtemp(prefix="bench_salt_")
            so = [*salt_overrides(a.salt_window, a.salt_steps), f"run.output={salt_dir}"]
            run_spec(load_spec(str(SALT), so), Dist(), only="teacher")
            runs.append(("salt student", str(SALT), so, "student"))
        for name, path, o, stage_name in runs:
            ratios = sorted(interleaved(path, o, stage_name, max(2, a.interleave), a.block))
            q = statistics.quantiles(ratios, n=4)
            print(f"{name:<14} engine / plain = {statistics.median(ratios):.3f} (quartiles {q[0]:.3f}-{q[2]:.3f}, "
                  f"{len(ratios)} pairs of {a.block}-step blocks, interleaved; target <= 1.02)", flush=True)  # fmt: skip
        return
    loops = {"quickstart": (
        lambda: engine_step_times(a.spec, overrides, a.steps, a.window),
        lambda: plain_step_times(a.spec, overrides, a.steps, a.window),
    )}  # fmt: skip
    if a.salt_steps:
        salt_dir = tempfile.mkdtemp(prefix="bench_salt_")
        so = salt_overrides(a.salt_window, a.salt_steps)
        run_spec(load_spec(str(SALT), [*so, f"run.output={salt_dir}"]), Dist(), only="teacher")
        loops["salt student"] = (
            lambda: salt_engine_step_times(salt_dir, so),
            lambda: salt_plain_step_times(salt_dir, so, a.salt_steps, a.salt_window),
        )
    for name, (engine_loop, plain_loop) in loops.items():
        engine, plain, ratios = [], [], []
        for r in range(a.rounds):  # the two loops alternate; a round's ratio compares neighbours in time
            e_r, p_r = engine_loop(), plain_loop()
            engine += e_r
            plain += p_r
            ratios.append(statistics.median(e_r) / statistics.median(p_r))
            print(
                f"{name} round {r + 1}/{a.rounds}: engine {statistics.median(e_r) * 1e3:.2f} ms/step, "
                f"plain {statistics.median(p_r) * 1e3:.2f} ms/step",
                flush=True,
            )
        e, b = statistics.median(engine), statistics.median(plain)
        print()
        print(f"{name:<14}{'ms/step (median)':>18}")
        print(f"{'  plain':<14}{b * 1e3:>18.2f}")
        print(f"{'  engine':<14}{e * 1e3:>18.2f}")
        print(
            f"  engine / plain = {e / b:.3f}, rounds {min(ratios):.3f}-{max(ratios):.3f} (target <= 1.02; "
            f"{a.threads} threads, {a.rounds} rounds)\n"
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
