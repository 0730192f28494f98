"""Benchmark: one SALT student step (frozen-teacher latent prediction) against the machine's matmul rate.

The student stage is built by the engine itself: `specs/salt_tiny.yaml` with the sizes of each row overridden,
a 1-step teacher stage run to give it a final/, then `StageRunner(...).build()` for the student. One run
measures, side by side and interleaved (the machine is shared and noisy: compare columns of one run):

- the large-matmul rate of this machine (an n x n fp32 matmul, or bf16 with --precision bf16, repeated);
- the trainer's own student step (`StageRunner._step`: synthetic clips and masks, collation, teacher forward
  on the full clip under no_grad, student encoder (the clip embedded once, the blocks on each mask's context),
  predictor, L1 loss, backward, clip, AdamW), in tokens per second (clip tokens, as metrics.jsonl counts them);
- the same work in pieces, each timed on its own with synchronisation: data, teacher forward, student encoder
  (forward + backward), predictor (forward + loss + backward), optimizer (clip + AdamW step + zero_grad);
- FLOPs of the step by the paper's accounting (the objective's `count()`: 6ND trained, 2ND frozen, plus
  attention scores), and the achieved FLOP/s of the step and of each piece as a fraction of the matmul rate.

Rows: `S` is a ViT-S student (384 wide, 12 deep, 6 heads, MLP 1536) with a ViT-S teacher and a predictor of
half width and depth; `vjepa` is docs/design.md's reference shape, a 192-wide, 6-deep ViT on 64-token clips at
batch 32 (its predictor, 96 wide and 6 deep, is our choice); `L` (ViT-L, bf16) is meant for a GPU.
No assertions: the ratio to read is `of matmul` (docs/design.md: V-JEPA 2's code reaches about 0.6 on CPU; the
target is above 0.6, ideally 0.7). `--profile` adds torch.profiler's top ops.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core unless --threads says otherwise

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from engine.objectives.jepa import LatentPredictionObjective, gather  # noqa: E402
from engine.runtime.distributed import Dist  # noqa: E402
from engine.runtime.parallel import autocast  # noqa: E402
from engine.runtime.signals import Preemption  # noqa: E402
from engine.runtime.trainer import StageRunner, run_spec  # noqa: E402
from schemas import load_spec  # noqa: E402

SPEC = REPO / "specs" / "salt_tiny.yaml"


@dataclass(frozen=True)
class Shape:
    """One benchmark row: encoder (student = teacher) and predictor sizes, clip geometry and batch."""

    dim: int
    depth: int
    heads: int
    mlp: int
    pred_dim: int
    pred_depth: int
    pred_heads: int
    pred_mlp: int
    frames: int
    resolution: int
    patch: int
    tubelet: int
    batch: int

    @property
    def tokens(self) -> int:
        """Tokens per clip."""
        return (self.frames // self.tubelet) * (self.resolution // self.patch) ** 2

    def describe(self) -> str:
        """A one-line summary for the table."""
        return (
            f"ViT {self.dim}x{self.depth} (h{self.heads}, mlp {self.mlp}), predictor {self.pred_dim}x"
            f"{self.pred_depth} (h{self.pred_heads}), {self.frames}x{self.resolution}px/p{self.patch}"
            f"/t{self.tubelet} = {self.tokens} tokens, batch {self.batch}"
        )


SHAPES = {
    "S": Shape(384, 12, 6, 1536, 192, 6, 6, 768, 16, 64, 16, 2, 8),
    "vjepa": Shape(192, 6, 3, 768, 96, 6, 3, 384, 8, 32, 8, 2, 32),
    "L": Shape(1024, 24, 16, 4096, 384, 12, 16, 1536, 16, 224, 16, 2, 16),  # for a GPU (--device cuda)
}


def overrides(s: Shape, out: str, precision: str, device: str, compile: bool) -> list[str]:
    """salt_tiny overrides that give the teacher and student stages this row's shape."""
    o = [f"run.output={out}", f"resources.device={device}", "resources.procs_per_node=1"]
    for stage in ("teacher", "student"):
        p = f"stages.{stage}"
        o += [
            f"{p}.model.dim={s.dim}",
            f"{p}.model.depth={s.depth}",
            f"{p}.model.heads={s.heads}",
            f"{p}.model.mlp={s.mlp}",
            f"{p}.model.frames={s.frames}",
            f"{p}.model.resolution={s.resolution}",
            f"{p}.model.patch={s.patch}",
            f"{p}.model.tubelet={s.tubelet}",
            f"{p}.predictor.dim={s.pred_dim}",
            f"{p}.predictor.depth={s.pred_depth}",
            f"{p}.predictor.heads={s.pred_heads}",
            f"{p}.predictor.mlp={s.pred_mlp}",
            f"{p}.data.frames={s.frames}",
            f"{p}.data.resolution={s.resolution}",
            f"{p}.batch.global={s.batch}",
            f"{p}.objective.masks.group={s.batch}",  # one process, one mask group: the whole batch per pass
            f"{p}.schedule.steps={1 if stage == 'teacher' else 1000}",
            f"{p}.schedule.warmup=1",
            f"{p}.distributed.precision={precision}",
            f"{p}.distributed.compile={'true' if compile and stage == 'student' else 'false'}",
            f"{p}.checkpoint.every=100000",
            f"{p}.logging.tensorboard=false",
            f"{p}.logging.console=false",
        ]
    return o


class Clock:
    """Wall-clock seconds with device synchronisation (CUDA runs asynchronously)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def matmul_rate(n: int, reps: int, device: torch.device, dtype: torch.dtype, clock: Clock) -> float:
    """FLOP/s of an n x n @ n x n matmul repeated `reps` times (after one warm-up)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = a @ b
    t0 = clock()
    for _ in range(reps):
        c = a @ b
    dt = clock() - t0
    del c
    return 2.0 * n**3 * reps / dt


def piece_flops(obj: LatentPredictionObjective, examples) -> dict[str, float]:
    """FLOPs of teacher, encoder and predictor as `count()` accounts them (6ND / 2ND plus attention)."""
    n, vit, pc, t = len(examples), obj.vit, obj.stage.predictor, obj.teacher_cfg
    n_enc, n_pred = vit.params(), pc.params(vit.dim, obj.cfg.out_dim(vit, t))
    enc = pred = 0.0
    for i in range(len(obj.cfg.masks.masks)):
        kc, kt = examples.meta[f"context_{i}"].shape[1], examples.meta[f"target_{i}"].shape[1]
        enc += 6 * n_enc * n * kc + 3 * vit.attention_flops(kc) * n
        pred += 6 * n_pred * n * (kc + kt) + 3 * pc.attention_flops(kc + kt) * n
    teacher = (2 * t.params() * vit.tokens + t.attention_flops(vit.tokens)) * n
    return {"teacher": teacher, "encoder": enc, "predictor": pred}


def time_pieces(runner: StageRunner, step: int, clock: Clock) -> dict[str, float]:
    """Seconds of one step's work in pieces: data, teacher, encoder fwd+bwd, predictor fwd+bwd, optimizer."""
    obj, st, dist = runner.objective, runner.stage, runner.dist
    t: dict[str, float] = dict.fromkeys(("data", "teacher", "encoder", "predictor", "optimizer"), 0.0)
    t0 = clock()
    batch = obj.collate(runner.stream.batch(step), dist.device)
    t["data"] = clock() - t0
    masks = batch["masks"]
    with autocast(st.distributed, dist, runner.sharded):
        t0 = clock()
        targets = obj.targets(batch)  # no_grad, full clip
        t["teacher"] = clock() - t0
        t0 = clock()
        zs = obj.encoder(batch["video"], keep=[context for context, _ in masks])  # one call, as the objective
        t["encoder"] += clock() - t0
        detached = [z.detach().requires_grad_() for z in zs]
        for i, ((context, target), zd) in enumerate(zip(masks, detached, strict=True)):
            t0 = clock()
            pred = obj.predictor(zd, context, target, i)
            loss = obj.regress(pred.float(), gather(targets, target)) / len(masks)
            loss.backward()
            t["predictor"] += clock() - t0
        t0 = clock()
        torch.autograd.backward(zs, [zd.grad for zd in detached])
        t["encoder"] += clock() - t0
    t0 = clock()
    clip = st.optim.grad_clip if st.optim.grad_clip is not None else float("inf")
    torch.nn.utils.clip_grad_norm_(runner.params, clip, foreach=True)
    runner.optim.step()
    runner.optim.zero_grad(set_to_none=True)
    t["optimizer"] = clock() - t0
    return t


def profile_step(runner: StageRunner, step: int, rows: int) -> str:
    """torch.profiler's table of the top ops (self CPU time) over one trainer step."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runner.dist.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        runner._step(step, Preemption())
    key = "self_cuda_time_total" if runner.dist.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def fmt_rate(x: float) -> str:
    """FLOP/s in GFLOP/s or TFLOP/s."""
    return f"{x / 1e12:.1f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:.1f} GFLOP/s"


def bench(name: str, s: Shape, args: argparse.Namespace) -> None:
    """Build the row's student stage through the engine, time it and print its table."""
    device = torch.device(args.device)
    dist = Dist(device=device)
    clock = Clock(device)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(str(SPEC), overrides(s, tmp, args.precision, args.device, args.compile))
        run_spec(spec, dist, only="teacher")  # one step: the student needs the teacher's final/
        runner = StageRunner(spec, "student", spec.stages["student"], dist)
        runner.build()
    obj = runner.objective
    for m in obj.trainable().values():
        m.train()
    # Per timed step: seconds and FLOPs of the step and of each piece (mask sizes, hence FLOPs, vary by step).
    secs: dict[str, list[float]] = {}
    flops: dict[str, list[float]] = {}
    matmul: list[float] = []
    masks: list[str] = []
    for r in range(args.warmup + args.repeats):
        rate = matmul_rate(args.matmul, args.matmul_reps, device, dtype, clock)
        t0 = clock()
        runner._step(r, Preemption())
        dt = clock() - t0
        p = time_pieces(runner, r, clock)
        if r < args.warmup:
            continue
        examples = runner.stream.batch(r)  # the step's batch again: counter-based, the same clips and masks
        count = obj.count(examples)
        split = piece_flops(obj, examples)
        matmul.append(rate)
        p["step"], p["paper"], p["no_data"] = dt, dt, dt - p["data"]
        p["sum"] = sum(p[k] for k in ("data", "teacher", "encoder", "predictor", "optimizer"))
        f = {**split, "step": count.flops, "paper": count.flops - count.attention_flops}
        f["no_data"] = f["sum"] = count.flops
        f["attention"] = count.attention_flops
        for k, v in p.items():
            secs.setdefault(k, []).append(v)
        for k, v in f.items():
            flops.setdefault(k, []).append(v)
        masks.append(
            " ".join(
                f"{examples.meta[f'context_{i}'].shape[1]}/{examples.meta[f'target_{i}'].shape[1]}"
                for i in range(len(obj.cfg.masks.masks))
            )
        )
    mm = statistics.median(matmul)
    tokens = len(examples) * obj.vit.tokens
    med = statistics.median

    print(f"\n== {name}: {s.describe()}")
    print(
        f"   {args.device}, {args.precision}{', compiled' if args.compile else ''}, "
        f"{torch.get_num_threads()} thread(s), {len(matmul)} timed steps "
        f"(medians); matmul {args.matmul}^2: {fmt_rate(mm)} ({', '.join(fmt_rate(x) for x in matmul)})"
    )
    print(
        f"   FLOPs/step {med(flops['step']):.3e} = 6ND+2ND {med(flops['paper']):.3e} + attention "
        f"{med(flops['attention']):.3e}; context/target tokens per clip and mask by step: "
        f"{', '.join(masks)} of {s.tokens}"
    )
    header = (
        f"   {'what':<28}{'ms':>10}{'share':>8}{'tokens/s':>12}{'GFLOP':>10}{'FLOP/s':>16}{'of matmul':>11}"
    )
    print(header)
    print("   " + "-" * (len(header) - 3))
    total = med(secs["sum"])
    rows = [
        ("step (trainer, all FLOPs)", "step"),
        ("step (paper 6ND+2ND only)", "paper"),
        ("step without data", "no_data"),
        ("  data", "data"),
        ("  teacher forward", "teacher"),
        ("  encoder fwd+bwd", "encoder"),
        ("  predictor fwd+bwd", "predictor"),
        ("  optimizer", "optimizer"),
        ("  sum of pieces", "sum"),
    ]
    for what, key in rows:
        t = med(secs[key])
        cols = f"   {what:<28}{t * 1e3:>10.1f}"
        cols += f"{t / total:>8.0%}" if what.startswith("  ") else " " * 8
        cols += f"{tokens / t:>12,.0f}" if what.startswith("step") else " " * 12
        if key in flops:
            rate = med([f / x for f, x in zip(flops[key], secs[key], strict=True)])
            cols += f"{med(flops[key]) / 1e9:>10.2f}{fmt_rate(rate):>16}{rate / mm:>11.2f}"
        print(cols)
    if args.profile:
        print(profile_step(runner, args.warmup + args.repeats, args.profile))


def main() -> None:
    """Parse arguments and run the requested rows."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", nargs="+", default=["S", "vjepa"], choices=sorted(SHAPES), help="rows to run")
    p.add_argument("--batch", type=int, help="override every row's batch")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the student's blocks (spec option)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=3, help="timed steps (medians are reported)")
    p.add_argument("--matmul", type=int, default=2048, help="side of the reference matmul")
    p.add_argument("--matmul-reps", type=int, default=3, help="matmuls per rate measurement")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS", help="print torch.profiler's top ops")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    for name in args.shape:
        s = SHAPES[name]
        if args.batch:
            s = Shape(**{**s.__dict__, "batch": args.batch})
        bench(name, s, args)


if __name__ == "__main__":
    main()
