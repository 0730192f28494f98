"""Mean and standard deviation of the probe table over several runs of one spec (seeds), as Markdown and a PNG.

Every run directory holds the `results.json` that a run with probe stages writes at its end
(`engine/runtime/summary.py`: top-1 per encoder and (task, probe kind), with the majority-class rate and chance).
This prints, per cell, mean ± sample standard deviation over the runs, then for each encoder the per-seed gap to
a reference encoder (`--against`, default `random`) and how many seeds it is positive in, and writes a bar chart
with error bars:

    python tools/probe_table.py runs/salt_small runs/salt_small_1 runs/salt_small_2 --png docs/images/salt_small_probes.png

Runs missing a results.json (a run still going, or one without probes) are listed and skipped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from engine.runtime.checkpoint import exists, read_json  # noqa: E402
from engine.runtime.summary import bar_chart, markdown  # noqa: E402


def load(runs: list[str]) -> tuple[list[str], list[dict]]:
    """The runs with a probe table, and their tables; the others are reported on stderr."""
    kept, tables = [], []
    for run in runs:
        url = f"{run.rstrip('/')}/results.json"
        if not exists(url):
            print(f"skipped {run}: no results.json (not finished, or no probe stages)", file=sys.stderr)
            continue
        kept.append(run)
        tables.append(read_json(url))
    return kept, tables


def combine(tables: list[dict]) -> tuple[dict, dict, dict]:
    """Mean table, standard deviations, and every run's values: per encoder and column."""
    cols = list(dict.fromkeys(c for t in tables for c in t["columns"]))
    encs = list(dict.fromkeys(e for t in tables for e in t["top1"]))
    values = {
        e: {c: [t["top1"][e][c] for t in tables if c in t["top1"].get(e, {})] for c in cols} for e in encs
    }
    mean = {e: {c: statistics.fmean(v) for c, v in row.items() if v} for e, row in values.items()}
    sd = {
        e: {c: statistics.stdev(v) if len(v) > 1 else 0.0 for c, v in row.items() if v}
        for e, row in values.items()
    }

    def avg(name: str) -> dict[str, float]:
        return {
            c: statistics.fmean(t[name][c] for t in tables if c in t[name])
            for c in cols
            if any(c in t[name] for t in tables)
        }

    table = {"columns": cols, "top1": mean, "majority": avg("majority"), "chance": avg("chance")}
    return table, sd, values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories (run.output of each seed)")
    ap.add_argument("--against", default="random", help="encoder the gaps are measured against")
    ap.add_argument("--png", help="write the bar chart here")
    ap.add_argument("--title", default=None)
    a = ap.parse_args()
    runs, tables = load(a.runs)
    if not tables:
        sys.exit("no run holds a results.json; run the spec first")
    table, sd, values = combine(tables)
    n = len(tables)
    print(f"held-out top-1, mean ± sd over {n} run(s): {', '.join(runs)}\n")
    print(markdown(table, spread=sd), end="")
    if a.against in values:
        print(f"\ngap to {a.against}, per run (points), and runs where it is positive:\n")
        cols = table["columns"]
        lines = ["| encoder | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for enc in values:
            if enc == a.against:
                continue
            cells = []
            for c in cols:
                gaps = [  # runs that probed both encoders on this column, in run order
                    100 * (t["top1"][enc][c] - t["top1"][a.against][c])
                    for t in tables
                    if c in t["top1"].get(enc, {}) and c in t["top1"].get(a.against, {})
                ]
                cells.append(
                    " ".join(f"{g:+.1f}" for g in gaps) + f" ({sum(g > 0 for g in gaps)}/{len(gaps)})"
                )
            lines.append(f"| {enc} | " + " | ".join(cells) + " |")
        print("\n".join(lines))
    if a.png:
        title = a.title or f"frozen probes, mean ± sd over {n} seed(s)"
        Path(a.png).write_bytes(bar_chart(table, title, spread=sd))
        print(f"\nwrote {a.png}")


if __name__ == "__main__":
    main()
