"""The run's probe table: every probe stage's `results.json` gathered into one table at the end of a run.

A run that probes several frozen encoders on several label tasks (salt_small.yaml: student, teacher, V-JEPA and
random encoders, on a motion and an appearance label) answers one question, what each representation is worth;
this module puts the answer in one place. Rows are the encoders (in stage order), columns the (task, probe kind)
pairs, cells the held-out top-1; two more rows give, per column, the top-1 of always answering the evaluated
set's most frequent class and chance (1 / classes). Written by rank 0 as `{output}/results.json`, a Markdown
table `{output}/results.md` (also printed) and a bar chart `{output}/results.png`. `tools/probe_table.py`
reads the `results.json` of several runs (seeds) and reports mean and standard deviation.

A stage's results count when they hold `encoder`, `task`, `kind` and a `top1` (what a probe stage writes); two
stages with the same encoder, task and kind are a spec's mistake and keep the later one, with a warning.
"""

from __future__ import annotations

import logging
from typing import Any

from .checkpoint import exists, read_json, write_bytes, write_json
from .evaluate import png

log = logging.getLogger("engine")

KEYS = ("encoder", "task", "kind", "top1")


def column(result: dict[str, Any]) -> str:
    """A table column: the label task and the probe kind (`direction linear_probe`)."""
    return f"{result['task']} {result['kind']}"


def gather(output: str, stages: list[str]) -> dict[str, Any] | None:
    """The probe table of the stages' results files under `output`; None when no stage wrote probe results."""
    top1: dict[str, dict[str, float]] = {}
    majority: dict[str, float] = {}
    chance: dict[str, float] = {}
    where: dict[tuple[str, str], str] = {}
    for stage in stages:
        url = f"{output}/{stage}/results.json"
        if not exists(url):
            continue
        r = read_json(url)
        if not all(r.get(k) is not None for k in KEYS):
            continue
        col, enc = column(r), str(r["encoder"])
        if (enc, col) in where:
            log.warning(
                "stages %s and %s both probe encoder %s on %s; the table keeps %s",
                where[enc, col],
                stage,
                enc,
                col,
                stage,
            )
        where[enc, col] = stage
        top1.setdefault(enc, {})[col] = float(r["top1"])
        if r.get("majority") is not None:
            majority[col] = float(r["majority"])
        if r.get("chance") is not None:
            chance[col] = float(r["chance"])
    if not top1:
        return None
    columns = list(dict.fromkeys(c for row in top1.values() for c in row))
    return {"columns": columns, "top1": top1, "majority": majority, "chance": chance}


def markdown(table: dict[str, Any], spread: dict[str, dict[str, float]] | None = None) -> str:
    """The table in Markdown: one row per encoder (`mean ± sd` cells when `spread` gives the standard
    deviations), then the majority-class and chance rows."""
    cols = table["columns"]

    def cell(enc: str, col: str) -> str:
        row = table["top1"][enc]
        if col not in row:
            return ""
        return f"{row[col]:.3f}" + (f" ± {spread[enc][col]:.3f}" if spread is not None else "")

    lines = ["| encoder | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {enc} | " + " | ".join(cell(enc, c) for c in cols) + " |" for enc in table["top1"]]
    for name, label in (("majority", "majority class"), ("chance", "chance")):
        values = table[name]
        lines.append(
            f"| *{label}* | " + " | ".join(f"{values[c]:.3f}" if c in values else "" for c in cols) + " |"
        )
    return "\n".join(lines) + "\n"


def bar_chart(table: dict[str, Any], title: str, spread: dict[str, dict[str, float]] | None = None) -> bytes:
    """PNG: per column a group of bars (one per encoder, error bars from `spread`), the majority-class rate as
    a dashed line and chance as a dotted one across the group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols, encs = table["columns"], list(table["top1"])
    width = 0.8 / len(encs)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(cols) + 1.5), 3.8))
    for i, enc in enumerate(encs):
        xs = [j - 0.4 + (i + 0.5) * width for j in range(len(cols))]
        ys = [table["top1"][enc].get(c, 0.0) for c in cols]
        err = [spread[enc].get(c, 0.0) for c in cols] if spread and enc in spread else None
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=enc)
    for j, c in enumerate(cols):
        for name, style in (("majority", "--"), ("chance", ":")):
            if c in table[name]:
                ax.hlines(table[name][c], j - 0.45, j + 0.45, colors="black", linestyles=style, linewidth=1)
    ax.plot([], [], "k--", linewidth=1, label="majority class")
    ax.plot([], [], "k:", linewidth=1, label="chance")
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_ylabel("held-out top-1")
    ax.set_ylim(0, 1.0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return png(fig)


def write_summary(output: str, stages: list[str], title: str) -> dict[str, Any] | None:
    """Gather the probe table and write it as results.json, results.md and results.png under `output`; log it."""
    table = gather(output, stages)
    if table is None:
        return None
    md = markdown(table)
    write_json(f"{output}/results.json", table)
    write_bytes(f"{output}/results.md", md.encode())
    write_bytes(f"{output}/results.png", bar_chart(table, title))
    log.info("probe top-1 on held-out clips (%s/results.md, results.png):\n%s", output, md)
    return table
