"""Data generators against the training steps that consume them, side by side, on CPU.

For each token spec in specs/ (or the ones given), the first stage's generator and training step:
  generated  examples/s of `sample(rng, global batch)` on ONE core (fresh counter keys, as the stream draws);
  consumed   examples/s of the engine's own training step (forward, backward, clip, AdamW) on that stage's
             global batch in one process with the machine's threads, fed batches drawn beforehand;
  ratio      generated / consumed: how many times over one core feeds the whole training step.
Then the training loop as it runs, the stream drawing each step's batch (`data.workers`, engine/runtime/loader.py):
  fed w=0    examples/s of step + batch, the batch drawn in the training process;
  fed w=1    the same with one worker process drawing the batches ahead;
  fed w=N-1  with as many workers as the machine has cores less one (omitted when that is 1);
  keeps up   the fewest workers whose fed rate is within 5% of `consumed` (the step never waits), else "no".
The measurements alternate over `--rounds` rounds so that machine noise hits all; the table shows medians.
Target (issue 4): ratio >= 10 for every generator. Rows whose generator has a reference rate in docs/design.md
("Performance bar") also print generated / reference (aim: 20x).

    python tools/bench_generators.py [SPEC ...] [--rounds 3] [--seconds 1.0] [--steps 5] [--no-workers] [--device cuda]
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
from engine.runtime.loader import Prefetched  # noqa: E402
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


class _Drawn:
    """A stream that hands out batches drawn beforehand (steps first..first+len-1)."""

    def __init__(self, batches: list, first: int):
        self.batches, self.first = batches, first

    def batch(self, step: int):
        return self.batches[step - self.first]


def consumed_rate(runner: StageRunner, steps: int, first: int = 0) -> float:
    """Examples/s of the engine's training step on the batches of steps first.. drawn beforehand (generation
    not timed; real batches, whose widths vary as the stream's do)."""
    stream = runner.stream
    runner.stream = _Drawn([stream.batch(s) for s in range(first, first + steps + 1)], first)
    try:
        return fed_rate(runner, steps, first=first)
    finally:
        runner.stream = stream


def fed_rate(runner: StageRunner, steps: int, workers: int | None = None, first: int = 0) -> float:
    """Examples/s of the training loop's steps first+1..first+steps (after one untimed step), each drawing its
    batch from the runner's stream: inline (workers 0), through `workers` prefetching processes, or as the
    stream is (None)."""
    stream = runner.stream
    if workers is not None:
        runner.stream = Prefetched(
            stream, first, first + steps + 1, workers, pin=runner.dist.device.type == "cuda"
        )
    flag, n = Preemption(), 0
    try:
        runner._step(first, flag)  # warm-up: allocator, first AdamW state, the workers' start
        t0 = time.perf_counter()
        for step in range(first + 1, first + steps + 1):
            runner._step(step, flag)
            n += runner.per_rank
        return n / (time.perf_counter() - t0)
    finally:
        if workers is not None:
            runner.stream.close()
            runner.stream = stream


def main() -> None:
    """Print one row per spec: generated and consumed examples/s, their ratio, and the reference ratio."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="*", help="spec files (default: every token spec in specs/)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0, help="generation time per round")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per round")
    p.add_argument("--no-workers", action="store_true", help="skip the fed columns (the loop with workers)")
    p.add_argument("--device", default="cpu", help="where the training step runs: cpu or cuda")
    a = p.parse_args()
    paths = [Path(s) for s in a.specs] or token_specs()
    cores = len(os.sched_getaffinity(0))
    counts = [] if a.no_workers else sorted({0, 1, max(1, cores - 1)})
    print(f"torch threads {torch.get_num_threads()}, {cores} cores; generation pinned to one core")
    head = f"{'spec':26s} {'kind':18s} {'batch':>6s} {'generated/s':>12s} {'consumed/s':>11s} {'ratio':>7s}"
    head += f" {'vs paper':>9s}" + "".join(f" {f'fed w={w}':>9s}" for w in counts)
    print(head + (f" {'keeps up':>9s}" if counts else ""))
    for path in paths:
        spec = load_spec(str(path), ["run.output=memory://bench_generators"])
        name, stage = next(iter(spec.stages.items()))
        gen = registry.build_data(stage.data)
        runner = StageRunner(spec, name, stage, Dist(device=torch.device(a.device)))
        runner.build()
        gens, cons, fed = [], [], {w: [] for w in counts}
        for r in range(a.rounds):
            gens.append(generated_rate(gen, stage.batch.global_, a.seconds, key=r))
            cons.append(consumed_rate(runner, a.steps, first=10_000 * (r + 1)))
            for w in counts:  # steps of their own, mostly (a batch is a pure function of its step, so overlaps change nothing)
                steps = max(
                    a.steps, 8 * w
                )  # the batches the workers draw ahead at the start are a small part
                fed[w].append(fed_rate(runner, steps, w, first=(r * len(counts) + counts.index(w)) * 100))
        g, c = statistics.median(gens), statistics.median(cons)
        ref = REFERENCE.get(stage.data.kind)
        vs = f"{g / ref:8.1f}x" if ref else f"{'-':>9s}"
        rates = {w: statistics.median(v) for w, v in fed.items()}
        row = f"{path.name:26s} {stage.data.kind:18s} {stage.batch.global_:6d} {g:12.0f} {c:11.0f} {g / c:6.1f}x {vs}"
        if counts:
            keeps = next((f"w={w}" for w in counts if rates[w] >= 0.95 * c), "no")
            row += "".join(f" {rates[w]:9.0f}" for w in counts) + f" {keeps:>9s}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
