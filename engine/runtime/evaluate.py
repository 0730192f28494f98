"""Evaluation without training: the `evaluate` stage's runner, and the evaluators' results files that every stage
writes (`{output}/{stage}/evals/{name}.json`, a Markdown table, a plot)."""

from __future__ import annotations

import io
import logging
from collections import Counter
from typing import Any

import torch

from engine import registry
from engine.objectives.base import Objective
from schemas.models import Transformer
from schemas.objectives import NextToken
from schemas.spec import EvaluateStage, Spec
from schemas.training import StageRef

from .checkpoint import final_intact, save_final, write_bytes, write_json
from .context import BuildContext
from .distributed import Dist, LaunchError
from .metrics import Metrics
from .parallel import autocast

log = logging.getLogger("engine")


# ----------------------------------------------------------------------------- results files


def eval_names(cfgs: list[Any]) -> list[str]:
    """Each evaluator's file name: its kind, with `-<index>` when the stage has several of that kind."""
    repeated = Counter(c.kind for c in cfgs)
    return [c.kind if repeated[c.kind] == 1 else f"{c.kind}-{i}" for i, c in enumerate(cfgs)]


def table(results: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per model, one column per metric."""
    keys = list(dict.fromkeys(k for metrics in results.values() for k in metrics))
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for label, metrics in results.items():
        cells = [f"{metrics[k]:.4g}" if k in metrics else "" for k in keys]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bars(results: dict[str, dict[str, float]], title: str) -> bytes:
    """PNG: the models' metrics side by side, one group of bars per metric (accuracies, at most 12)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in dict.fromkeys(k for m in results.values() for k in m) if "flops" not in k][:12]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(keys) * max(1, len(results)) / 2), 3.8))
    width = 0.8 / max(1, len(results))
    for i, (label, metrics) in enumerate(results.items()):
        xs = [j + i * width for j in range(len(keys))]
        ax.bar(xs, [metrics.get(k, 0.0) for k in keys], width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], keys, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return png(fig)


def png(fig: Any) -> bytes:
    """A matplotlib figure laid out tightly, as PNG bytes at 110 dpi; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_results(
    stage_url: str,
    stage: str,
    cfgs: list[Any],
    evaluators: list[Any],
    results: list[dict[str, dict[str, float]]],
) -> None:
    """Write each evaluator's results (per model label) to `{stage_url}/evals/{name}.json` and a Markdown table
    beside it; an evaluator with its own `write` (a plot, a table) writes those too, else several models get a
    bar chart. Rank 0 only."""
    for name, cfg, ev, by_model in zip(eval_names(cfgs), cfgs, evaluators, results, strict=True):
        url = f"{stage_url}/evals/{name}"
        write_json(
            f"{url}.json",
            {"stage": stage, "evaluator": cfg.model_dump(mode="json", by_alias=True), "models": by_model},
        )
        if hasattr(ev, "write"):
            ev.write(by_model, url)
            continue
        write_bytes(f"{url}.md", table(by_model).encode())
        if len(by_model) > 1:
            write_bytes(f"{url}.png", bars(by_model, f"{stage}: {name}"))


# ----------------------------------------------------------------------------- the evaluate stage


class EvaluateRunner:
    """Runs an `evaluate` stage: every evaluator once on every model, results files, final/done.json."""

    def __init__(self, spec: Spec, name: str, stage: EvaluateStage, dist: Dist):
        self.spec, self.name, self.stage, self.dist = spec, name, stage, dist
        self.url = f"{spec.run.output.rstrip('/')}/{name}"

    def done(self) -> bool:
        """Whether the evaluation already ran (final/done.json exists and is intact)."""
        return final_intact(f"{self.url}/final", self.dist, self.name)

    def _objective(self, ctx: BuildContext, label: str) -> Objective:
        """The model a label names, with its weights, sharded, inside its stage's objective (next_token for a
        checkpoint), which is what evaluators call."""
        ref = self.stage.models[label]
        cfg = ctx.model_config(ref, Transformer)
        source = self.spec.stages[ref.stage] if isinstance(ref, StageRef) else None
        vocab = source.vocab_size if source is not None else cfg.vocab_size or self.stage.data.vocab_size
        model = registry.build_model(cfg, vocab)
        weights = ctx.weights(ref)
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:  # a checkpoint's vocabulary is not the data's
            raise LaunchError(
                f"stage {self.name}: the weights of model {label} do not fit its config with a vocabulary of "
                f"{vocab} ({e}); give the evaluate stage the data the model was trained on"
            ) from None
        model = ctx.shard(model)
        model.eval()
        objective_cfg = getattr(source, "objective", None) or NextToken()
        return registry.build_objective(objective_cfg, {"model": model}, ctx)

    def evaluate(self) -> dict[str, float]:
        """Run the evaluation again (`engine evaluate`), whether or not it ran before."""
        return self.run()

    @torch.no_grad()
    def run(self, preemption: Any = None) -> dict[str, float]:
        """Evaluate every model; log `<label>/<metric>` (plain `<metric>` for one model) and write results."""
        st, dist = self.stage, self.dist
        ctx = BuildContext(self.spec, self.name, st, dist)
        metrics = Metrics(self.url, dist.main, st.logging.tensorboard, st.logging.console, self.name, 1)
        evaluators: dict[str, list[Any]] = {}  # one set per distinct data, shared by the models that use it
        results: list[dict[str, dict[str, float]]] = [{} for _ in st.evals]
        logged: dict[str, float] = {}
        for label in st.models:
            data = st.data_of(label, self.spec.stages)
            key = data.model_dump_json()
            if key not in evaluators:
                gen = registry.build_data(data)
                evaluators[key] = [
                    registry.build_eval(
                        e, gen=gen, data_cfg=data, seed=self.spec.run.seed, stage=self.name, dist=dist
                    )
                    for e in st.evals
                ]
            objective = self._objective(ctx, label)
            for i, ev in enumerate(evaluators[key]):
                with autocast(st.distributed, dist, dist.distributed and st.distributed.fsdp):
                    out = ev(objective, 0)
                results[i][label] = out
                prefix = f"{label}/" if len(st.models) > 1 else ""
                logged.update({f"{prefix}{k}": v for k, v in out.items()})
                if dist.main:
                    shown = "  ".join(f"{k} {v:.3f}" for k, v in out.items() if "flops" not in k)
                    log.info("%s  %s  %s", self.name, label, shown)
            del objective
        metrics.write(0, logged)
        if dist.main:
            some = next(iter(evaluators.values()))
            write_results(self.url, self.name, st.evals, some, results)
        done = {
            "stage": self.name,
            "models": {label: ref.model_dump(mode="json") for label, ref in st.models.items()},
            "metrics": logged,
        }
        save_final(f"{self.url}/final", {}, done, dist)
        metrics.close()
        return logged
