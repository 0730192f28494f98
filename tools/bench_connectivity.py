"""Bridge(d) connectivity generation against Let Me Think's own code, side by side, in one process on one core.

The paper's generation (its `Mission` graph pair plus the search trace, no tokenisation) is imported unchanged
from a checkout of the authors' repository given with --paper (it needs networkx and transformers); nothing of
it is copied here. Ours is timed at the call patterns a run uses:
  stream        `Stream.batch` of a global batch of --batch (chunks of 16 keyed draws: `sample_chunks`);
  stream64      the same with chunks of 64 (fewer counter keys per batch);
  sample(B)     one `sample(rng, B)` call of the whole batch;
  sample(16)    chunk-sized `sample` calls, one after another (the stream's pattern without `sample_chunks`);
  sample(1)     one example per call.
Cases alternate over --rounds rounds (machine noise hits all of them); the table shows the median examples/s,
the range over rounds and the median over the paper's median. The previous batch stays alive while the next
is drawn, as in a training loop (numpy's temporaries then reuse memory instead of faulting in fresh pages).
`--order stream-first` times the stream right after the paper's code instead.

    python tools/bench_connectivity.py --paper PATH [--strategy dfs] [--depth 5] [--rounds 7] [--core 0]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from engine.data.connectivity import Connectivity  # noqa: E402
from engine.data.stream import Stream, counter_rng  # noqa: E402
from schemas.data import Connectivity as ConnectivityConfig  # noqa: E402

# Our strategy -> the paper's search type (its `dfs` records backtracking; `dfs-pruned` the visit order).
PAPER_SEARCH = {
    "dfs": "dfs-pruned",
    "dfs_backtrack": "dfs",
    "path": "path",
    "shortest_path": "optimal",
    "walk": "walk-{L}",
}


def paper_generator(path: Path, depth: int, strategy: str, walk_length: int) -> Callable[[int], None]:
    """n examples of the paper's own generation (graph pair and trace) per call, from its `mission` module."""
    sys.path.insert(0, str(path))
    try:
        from mission import Mission  # type: ignore[import-not-found]
    except ImportError as err:
        raise SystemExit(f"cannot import the paper's mission.py from {path}: {err}") from err
    args = SimpleNamespace(
        graph_type="flower",
        task_type="decision",
        num_nodes=None,
        max_num_nodes=None,
        depth=depth,
        short=3,
        long=5,
        dead=3,
        st_pair="far",
        width=None,
        num_matchings=None,
    )
    search = PAPER_SEARCH[strategy].format(L=walk_length)
    random.seed(0)
    np.random.seed(0)

    def run(n: int) -> None:
        for _ in range(n):
            Mission(args).search(search)

    return run


def our_cases(cfg: ConnectivityConfig, batch: int) -> dict[str, tuple[Callable[[int], None], int]]:
    """Our call patterns: name -> (function of n examples, n per round)."""
    gen = Connectivity(cfg)
    gen64 = Connectivity(cfg)
    gen64.chunk = 64  # type: ignore[attr-defined]
    streams = {16: Stream(gen, 0, "train", 0, batch), 64: Stream(gen64, 0, "train", 0, batch)}
    keep: list[Any] = [None]  # the last batch, alive while the next is drawn
    step = [0]

    def stream(chunk: int) -> Callable[[int], None]:
        def run(n: int) -> None:
            step[0] += 1
            keep[0] = streams[chunk].batch(step[0])

        return run

    def sample(size: int) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n // size):
                step[0] += 1
                keep[0] = gen.sample(counter_rng(1, step[0]), size)

        return run

    return {
        f"ours sample({batch})": (sample(batch), batch),
        f"ours stream {batch} (chunks of 16)": (stream(16), batch),
        f"ours stream {batch} (chunks of 64)": (stream(64), batch),
        "ours sample(16), repeated": (sample(16), 16 * max(1, batch // 16)),
        "ours sample(1), repeated": (sample(1), 300),
    }


def main() -> None:
    """Parse the arguments, pin one core, alternate the cases and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paper", type=Path, required=True, help="checkout of the authors' repository")
    ap.add_argument("--strategy", default="dfs", choices=sorted(PAPER_SEARCH))
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--walk-length", type=int, default=25)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--core", type=int, default=0, help="the one CPU core to run on")
    ap.add_argument("--order", choices=("default", "stream-first"), default="default")
    a = ap.parse_args()
    os.sched_setaffinity(0, {a.core})
    cfg = ConnectivityConfig(depth=a.depth, strategy=a.strategy, walk_length=a.walk_length)
    cases = {"paper (per example)": (paper_generator(a.paper, a.depth, a.strategy, a.walk_length), 300)}
    ours = our_cases(cfg, a.batch)
    names = list(ours)
    if a.order == "stream-first":
        names.insert(0, names.pop(1))
    cases |= {k: ours[k] for k in names}
    for f, n in cases.values():
        f(n)  # warm up
    rates: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(a.rounds):
        for k, (f, n) in cases.items():
            t = time.perf_counter()
            f(n)
            rates[k].append(n / (time.perf_counter() - t))
    base = statistics.median(rates["paper (per example)"])
    print(f"Bridge({a.depth}) {a.strategy}, {a.rounds} alternating rounds on core {a.core}, order {a.order}")
    print(f"{'case':36s} {'examples/s':>11s} {'range over rounds':>22s} {'x paper':>8s}")
    for k, v in rates.items():
        med = statistics.median(v)
        print(f"{k:36s} {med:11.0f} [{min(v):9.0f}, {max(v):9.0f}] {med / base:8.1f}")


if __name__ == "__main__":
    main()
