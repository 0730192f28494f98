"""Curves of an RL stage from its metrics.jsonl: reward and pass rate, and the data's own shares among the policy's
samples (e.g. the format shares of math_formats: check/format_code, check/format_nl, check/format_mixed).

    python tools/plot_rl.py runs/echo_chamber/rl                 # writes runs/echo_chamber/rl/rl_curves.png
    python tools/plot_rl.py runs/echo_chamber/rl -o formats.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import fsspec
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_rows(stage_url: str) -> list[dict]:
    """The stage's logged training rows (those with a reward), in step order."""
    with fsspec.open(f"{stage_url.rstrip('/')}/metrics.jsonl", "r") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return sorted((r for r in rows if "reward" in r), key=lambda r: r["step"])


def plot(rows: list[dict], title: str) -> plt.Figure:
    """Two panels: reward and pass rate; every `check/*` share."""
    steps = [r["step"] for r in rows]
    checks = sorted({k for r in rows for k in r if k.startswith("check/")})
    fig, axes = plt.subplots(1, 2 if checks else 1, figsize=(10 if checks else 5, 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.plot(steps, [r["reward"] for r in rows], label="mean reward")
    ax.plot(steps, [r["pass_rate"] for r in rows], label="pass rate", linestyle="--")
    ax.set_xlabel("RL step")
    ax.set_title("reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if checks:
        ax = axes[0, 1]
        for key in checks:
            ax.plot(steps, [r.get(key, float("nan")) for r in rows], label=key.removeprefix("check/"))
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("RL step")
        ax.set_title("share of the policy's samples")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def main() -> None:
    """Read a stage directory (any fsspec URL), write the PNG."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", help="an RL stage's directory: {output}/{stage}")
    ap.add_argument("-o", "--out", help="PNG path (default: {stage}/rl_curves.png)")
    ap.add_argument("--title", help="figure title (default: run directory / stage)")
    a = ap.parse_args()
    rows = read_rows(a.stage)
    if not rows:
        raise SystemExit(f"{a.stage}/metrics.jsonl holds no RL steps (no `reward` rows)")
    out = a.out or f"{a.stage.rstrip('/')}/rl_curves.png"
    path = Path(a.stage.rstrip("/"))
    fig = plot(rows, a.title or f"{path.parent.name}/{path.name}")
    with fsspec.open(out, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    print(out)


if __name__ == "__main__":
    main()
