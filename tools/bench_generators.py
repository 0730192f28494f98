"""Data generators against the training steps that consume them, side by side, on CPU.

For each token spec in specs/ (or the ones given), the first stage's generator and training step:
  generated  examples/s of `sample(rng, global batch)` on ONE core (fresh counter keys, as the stream draws);
  consumed   examples/s of the engine's own training step (forward, backward, clip, AdamW) on that stage's
             global batch in one process with the machine's threads, fed a batch drawn beforehand;
  ratio      generated / consumed: how many times over one core feeds the whole training step.
The two alternate over `--rounds` rounds so that machine noise hits both; the table shows medians. Target
(issue 4): ratio >= 10 for every generator. Rows whose generator has a reference rate in docs/design.md
("Performance bar") also print generated / reference (aim: 20x).

    python tools/bench_generators.py [SPEC ...] [--rounds 3] [--seconds 1.0] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from engine import registry  # noqa: E402
from engine.data.stream import counter_rng  # noqa: E402
from engine.runtime.distributed import Dist  # noqa: E402
from engine.runtime.signals import Preemption  # noqa: E402
from engine.runtime.trainer import StageRunner  # noqa: E402
from schemas import load_spec  # noqa: E402

# examples/s of the papers' own generators on one core (docs/design.md, Performance bar), by data kind.
REFERENCE = {"connectivity": 2.6e3, "countdown": 210.0, "sudoku": 92.0, "solution_tree": 5.4e3}


def token_specs() -> list[Path]:
    """specs/*.yaml whose first stage trains on token data (video specs have their own bench_video.py)."""
    out = []
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        stage = next(iter(load_spec(str(path)).stages.values()))
        if getattr(stage, "model", None) is not None and not hasattr(stage.data, "clip_shape"):
            out.append(path)
    return out


def generated_rate(gen, batch: int, seconds: float, key: int) -> float:
    """Examples/s of gen.sample on one core: as many global batches as fit in `seconds` (at least two)."""
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        n, i, t0 = 0, 0, time.perf_counter()
        while i < 2 or time.perf_counter() - t0 < seconds:
            n += len(gen.sample(counter_rng(key, i), batch, "train"))
            i += 1
        return n / (time.perf_counter() - t0)
    finally:
        os.sched_setaffinity(0, cpus)


def consumed_rate(runner: StageRunner, steps: int) -> float:
    """Examples/s of the engine's training step on a batch drawn beforehand (generation not timed)."""
    batch = runner.stream.batch(0)
    runner.stream.batch = lambda step: batch
    flag = Preemption()
    runner._step(0, flag)  # warm-up: allocator, first AdamW state
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        runner._step(step, flag)
    return steps * len(batch) / (time.perf_counter() - t0)


def main() -> None:
    """Print one row per spec: generated and consumed examples/s, their ratio, and the reference ratio."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="*", help="spec files (default: every token spec in specs/)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0, help="generation time per round")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per round")
    a = p.parse_args()
    paths = [Path(s) for s in a.specs] or token_specs()
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores; generation pinned to one core")
    head = f"{'spec':26s} {'kind':18s} {'batch':>6s} {'generated/s':>12s} {'consumed/s':>11s} {'ratio':>7s}"
    print(head + f" {'vs paper':>9s}")
    for path in paths:
        spec = load_spec(str(path), ["run.output=memory://bench_generators"])
        name, stage = next(iter(spec.stages.items()))
        gen = registry.build_data(stage.data)
        runner = StageRunner(spec, name, stage, Dist())
        runner.build()
        gens, cons = [], []
        for r in range(a.rounds):
            gens.append(generated_rate(gen, stage.batch.global_, a.seconds, key=r))
            cons.append(consumed_rate(runner, a.steps))
        g, c = statistics.median(gens), statistics.median(cons)
        ref = REFERENCE.get(stage.data.kind)
        vs = f"{g / ref:8.1f}x" if ref else f"{'-':>9s}"
        print(
            f"{path.name:26s} {stage.data.kind:18s} {stage.batch.global_:6d} {g:12.0f} {c:11.0f}"
            f" {g / c:6.1f}x {vs}",
            flush=True,
        )


if __name__ == "__main__":
    main()
