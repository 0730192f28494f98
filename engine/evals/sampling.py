"""Evaluators that sample completions: pass@k, maj@k and best-of-n per temperature (`sampling`), and accuracy
against inference compute as the number of samples grows (`test_time_scaling`)."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engine.data.base import Examples, Generator
from engine.generate import Sampling as Draw
from engine.generate import coupled_ids, generate, max_positions, sample_keys, stop_tokens
from engine.objectives.base import Objective
from engine.runtime.distributed import Dist
from schemas.evals import Sampling as SamplingConfig
from schemas.evals import TestTimeScaling as TestTimeScalingConfig

from .estimators import any_at_k, maj_at_k, pass_at_k
from .exact_match import fixed_sets


@dataclass
class Samples:
    """n completions of one prompt, judged: right or wrong, the answer voted on, the data's checks, lengths."""

    correct: list[bool] = field(default_factory=list)
    answers: list[Any] = field(default_factory=list)
    checks: dict[str, list[bool]] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)  # generated tokens of each completion
    prompt: int = 0  # prompt tokens


def tie_rng(seed: int, stage: str, tag: str, prompt: int) -> np.random.Generator:
    """The generator that breaks maj@k ties of one prompt: fixed by the run, evaluator and prompt index."""
    return np.random.default_rng([seed, zlib.crc32(f"{stage}/{tag}".encode()), prompt])


class Sampler:
    """Draws n completions of each prompt of a rank's share of a fixed set and judges them with the generator.

    The completions of (prompt i, sample j) depend on the run seed, the stage, the evaluator's `tag` and (i, j)
    only: not on the batch, the world size or the rank that draws them (`engine.generate`).
    """

    def __init__(
        self, gen: Generator, data_cfg, seed: int, stage: str, dist: Dist, batch: int, new: int | None
    ):
        self.gen, self.seed, self.stage, self.dist, self.batch = gen, seed, stage, dist, batch
        self.new = new or data_cfg.max_seq_len()
        self.checks = getattr(gen, "check", None)

    def draw(
        self, objective: Objective, examples: Examples, first: int, n: int, draw: Draw, tag: str
    ) -> list[Samples]:
        """n judged completions of each of `examples`, whose global prompt indices start at `first`."""
        model = objective.decoder()
        rows = [(i, j) for i in range(len(examples)) for j in range(n)]  # prompt-major
        out = [Samples() for _ in range(len(examples))]
        table = max_positions(model)
        for lo in range(0, len(rows), self.batch):
            part = rows[lo : lo + self.batch]
            exs = [examples[i] for i, _ in part]
            prompts = [ex.prompt for ex in exs]
            new = draw.max_new_tokens
            if table is not None:  # the longest prompt's continuation stays inside the position table
                new = min(new, table - max(len(p) for p in prompts))
            keys = sample_keys(
                self.seed,
                self.stage,
                tag,
                np.array([first + i for i, _ in part]),
                np.array([j for _, j in part]),
            )
            done = generate(
                model,
                prompts,
                Draw(draw.temperature, draw.top_k, draw.top_p, new),
                stop=stop_tokens(self.gen),
                pad=self.gen.vocab.pad,
                device=self.dist.device,
                keys=keys if draw.temperature > 0 else None,
                any_live=self.dist.any,
                **coupled_ids(model, exs),
            )
            for (i, _), ex, completion in zip(part, exs, done.tokens, strict=True):
                s = out[i]
                s.correct.append(bool(self.gen.verify(ex, completion)))
                s.answers.append(self.gen.answer(ex, completion))
                for key, ok in (self.checks(ex, completion) if self.checks else {}).items():
                    s.checks.setdefault(key, []).append(bool(ok))
                s.lengths.append(len(completion))
                s.prompt = len(ex.prompt)
        return out


def _active_params(objective: Objective) -> int:
    """Parameters a generated token runs through (MoE: the active ones), from the model's config."""
    model = objective.decoder()
    return model.cfg.param_count(model.vocab_size).active


def _reduce(dist: Dist, sums: dict[str, float]) -> dict[str, float]:
    """Sum every value over ranks (one collective), keys in a fixed order."""
    keys = sorted(sums)
    total = dist.all_reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64)).tolist()
    return dict(zip(keys, total, strict=True))


def _temperature(t: float) -> str:
    """A temperature as written in metric names: T0, T0.7, T1."""
    return f"T{t:g}"


class SamplingEval:
    """Per split and temperature T, over n samples of each prompt (one greedy completion at T = 0):

    - `pass@<k>/<split>/T<T>`: the unbiased estimator 1 - C(n-c, k)/C(n, k) averaged over prompts;
    - `maj@<k>/...`: the most common extracted answer (`gen.answer`) of a block of k samples is right, averaged
      over the n // k disjoint blocks and the prompts; ties broken at random by a generator seeded per prompt;
    - `best_of_n/...`: some sample is right (best-of-n by a 0/1 verifier; equals pass@n);
    - `<check>/...`: the mean of the data's own checks over samples (connectivity: decision, evidence), and
      `any@<k>/...` where the data has a certificate (Let Me Think's any@N);
    - `length/...`: mean generated tokens; `inference_flops/...`: 2·N_active per prefilled or generated token.
    """

    def __init__(self, cfg: SamplingConfig, gen: Generator, data_cfg, seed: int, stage: str, dist: Dist):
        self.cfg, self.gen, self.dist, self.seed, self.stage = cfg, gen, dist, seed, stage
        self.sets = fixed_sets(cfg.splits, cfg.examples, gen, data_cfg, seed, stage, dist)
        self.first = dist.rank * math.ceil(cfg.examples / dist.world)  # this rank's first prompt index
        self.sampler = Sampler(gen, data_cfg, seed, stage, dist, cfg.batch, cfg.max_new_tokens)
        self.certificate = getattr(gen, "certificate", None)  # (check key, score of a guess) or None

    @torch.no_grad()
    def __call__(self, objective: Objective, step: int) -> dict[str, float]:
        """Sample every split at every temperature; sums are reduced over ranks."""
        sums: dict[str, float] = {}
        n_params = _active_params(objective)
        for split, (ex, real) in self.sets.items():
            sums[f"prompts/{split}"] = float(real)
            for t in self.cfg.temperatures:
                n = 1 if t == 0 else self.cfg.n
                ks = [1] if t == 0 else self.cfg.k
                draw = Draw(t, self.cfg.top_k, self.cfg.top_p, self.sampler.new)
                tag = f"sampling/{split}/{_temperature(t)}"
                judged = self.sampler.draw(objective, ex, self.first, n, draw, tag)[:real]
                name = f"{split}/{_temperature(t)}"
                for i, s in enumerate(judged):
                    c = sum(s.correct)
                    for k in ks:
                        sums[f"pass@{k}/{name}"] = sums.get(f"pass@{k}/{name}", 0.0) + pass_at_k(n, c, k)
                        rng = tie_rng(self.seed, self.stage, tag, self.first + i)
                        sums[f"maj@{k}/{name}"] = sums.get(f"maj@{k}/{name}", 0.0) + maj_at_k(
                            s.answers, s.correct, k, rng
                        )
                        if self.certificate is not None:
                            key, guess = self.certificate
                            sums[f"any@{k}/{name}"] = sums.get(f"any@{k}/{name}", 0.0) + any_at_k(
                                n, sum(s.checks[key]), k, guess
                            )
                    sums[f"best_of_n/{name}"] = sums.get(f"best_of_n/{name}", 0.0) + float(c > 0)
                    for key, oks in s.checks.items():
                        sums[f"{key}/{name}"] = sums.get(f"{key}/{name}", 0.0) + sum(oks) / n
                    sums[f"length/{name}"] = sums.get(f"length/{name}", 0.0) + sum(s.lengths) / n
                    tokens = n * s.prompt + sum(s.lengths)
                    sums[f"inference_flops/{name}"] = (
                        sums.get(f"inference_flops/{name}", 0.0) + 2.0 * n_params * tokens
                    )
        total = _reduce(self.dist, sums)
        out = {}
        for key, value in total.items():
            if key.startswith("prompts/"):
                continue
            split = key.split("/")[-2]
            out[key] = (
                value if key.startswith("inference_flops/") else value / max(total[f"prompts/{split}"], 1.0)
            )
        return out


class TestTimeScalingEval:
    """Accuracy against inference compute as the number of samples N grows (Let Me Think §3, To Backtrack or
    Not §6): the largest N is drawn per prompt at one temperature, and every N of `samples` is scored on it:

    - `maj@<N>`: majority over the extracted answers of N samples (disjoint blocks of N, ties at random);
    - `best@<N>`: best-of-N by the verifier, the unbiased pass@N;
    - `any@<N>` where the data has a certificate: P(some sample has one) + guess score x (1 - that);
    - `tokens@<N>`: prefilled + generated tokens per prompt for N samples; `flops@<N>`: 2·N_active per token.

    `write` turns the metrics of one or more models (an evaluate stage's) into a table (JSON, Markdown) and a
    PNG of accuracy against inference FLOPs, one curve per model, with the data's analytic curves if it has any.
    """

    def __init__(
        self, cfg: TestTimeScalingConfig, gen: Generator, data_cfg, seed: int, stage: str, dist: Dist
    ):
        self.cfg, self.gen, self.dist, self.seed, self.stage = cfg, gen, dist, seed, stage
        self.data_cfg = data_cfg
        ((self.examples, self.real),) = fixed_sets(
            [cfg.split], cfg.examples, gen, data_cfg, seed, stage, dist
        ).values()
        self.first = dist.rank * math.ceil(cfg.examples / dist.world)
        self.sampler = Sampler(gen, data_cfg, seed, stage, dist, cfg.batch, cfg.max_new_tokens)
        self.certificate = getattr(gen, "certificate", None)

    @torch.no_grad()
    def __call__(self, objective: Objective, step: int) -> dict[str, float]:
        """Draw max(samples) completions per prompt and score every N; sums are reduced over ranks."""
        n = max(self.cfg.samples)
        draw = Draw(self.cfg.temperature, self.cfg.top_k, self.cfg.top_p, self.sampler.new)
        tag = f"test_time_scaling/{self.cfg.split}/{_temperature(self.cfg.temperature)}"
        judged = self.sampler.draw(objective, self.examples, self.first, n, draw, tag)[: self.real]
        n_params = _active_params(objective)
        sums: dict[str, float] = {"prompts": float(len(judged))}
        for i, s in enumerate(judged):
            c, mean_len = sum(s.correct), sum(s.lengths) / n
            for N in self.cfg.samples:
                rng = tie_rng(self.seed, self.stage, tag, self.first + i)
                values = {
                    f"maj@{N}": maj_at_k(s.answers, s.correct, N, rng),
                    f"best@{N}": pass_at_k(n, c, N),
                    f"tokens@{N}": N * (s.prompt + mean_len),
                }
                if self.certificate is not None:
                    key, guess = self.certificate
                    values[f"any@{N}"] = any_at_k(n, sum(s.checks[key]), N, guess)
                for key, value in values.items():
                    sums[key] = sums.get(key, 0.0) + value
        total = _reduce(self.dist, sums)
        prompts = max(total.pop("prompts"), 1.0)
        out = {key: value / prompts for key, value in total.items()}
        for N in self.cfg.samples:
            out[f"flops@{N}"] = 2.0 * n_params * out[f"tokens@{N}"]
        return out

    def rows(self, results: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
        """One row per model and N: inference tokens and FLOPs per prompt, and each accuracy."""
        rows = []
        for label, metrics in results.items():
            for N in self.cfg.samples:
                row: dict[str, Any] = {"model": label, "N": N}
                for key in ("tokens", "flops", "maj", "best", "any"):
                    if f"{key}@{N}" in metrics:
                        row[key] = metrics[f"{key}@{N}"]
                rows.append(row)
        return rows

    def write(self, results: dict[str, dict[str, float]], url: str) -> list[str]:
        """Write `{url}.md` (table) and `{url}.png` (plot) for the metrics of each model; returns the URLs."""
        from engine.runtime.checkpoint import write_bytes

        rows = self.rows(results)
        reference = getattr(self.data_cfg, "best_of_n_reference", None)
        curves = reference(self.cfg.samples) if reference is not None else {}
        write_bytes(f"{url}.md", markdown(rows, curves, self.cfg).encode())
        write_bytes(f"{url}.png", plot(rows, curves, self.cfg))
        return [f"{url}.md", f"{url}.png"]


def markdown(rows: list[dict[str, Any]], curves: dict[str, list[float]], cfg: TestTimeScalingConfig) -> str:
    """The table of `TestTimeScalingEval.rows`, with the analytic curves as extra columns."""
    accs = [k for k in ("maj", "best", "any") if any(k in r for r in rows)]
    head = ["model", "N", "tokens / prompt", "inference FLOPs / prompt", *(f"{a}@N" for a in accs)]
    head += list(curves)
    lines = [
        f"Accuracy against inference compute, T = {cfg.temperature:g}, split {cfg.split}, {cfg.examples} prompts.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        i = cfg.samples.index(r["N"])
        cells = [r["model"], str(r["N"]), f"{r['tokens']:.0f}", f"{r['flops']:.3g}"]
        cells += [f"{r[a]:.3f}" if a in r else "" for a in accs]
        cells += [f"{c[i]:.3f}" for c in curves.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], curves: dict[str, list[float]], cfg: TestTimeScalingConfig) -> bytes:
    """PNG: accuracy vs inference FLOPs per prompt (one curve per model and accuracy), and vs N with the
    data's analytic best-of-N curves."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_flops, by_n) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"maj": "-", "best": "--", "any": ":"}
    for i, label in enumerate(dict.fromkeys(r["model"] for r in rows)):
        mine = [r for r in rows if r["model"] == label]
        color = f"C{i}"
        for acc, style in styles.items():
            if acc not in mine[0]:
                continue
            name = {"maj": "maj@N", "best": "best-of-N", "any": "any@N"}[acc]
            for ax, x in ((by_flops, "flops"), (by_n, "N")):
                ys = [r[acc] for r in mine]
                ax.plot(
                    [r[x] for r in mine], ys, style, marker="o", ms=3, color=color, label=f"{label} {name}"
                )
    for j, (name, values) in enumerate(curves.items()):
        by_n.plot(cfg.samples, values, color="gray", ls=["-.", (0, (1, 3))][j % 2], label=f"analytic: {name}")
    by_flops.set(xscale="log", xlabel="inference FLOPs per prompt (2·N_active per token)", ylabel="accuracy")
    by_n.set(xscale="log", xlabel="samples N", ylabel="accuracy")
    by_n.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    for ax in (by_flops, by_n):
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    by_flops.legend(fontsize=7)
    by_n.legend(fontsize=7)
    fig.suptitle(
        f"Accuracy vs inference compute (T = {cfg.temperature:g}, {cfg.examples} prompts of {cfg.split})"
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
