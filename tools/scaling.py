"""Scaling-law and loss-to-loss fits over a sweep's run directories (arXiv 2411.12925), as JSON, Markdown and a PNG.

Per training dataset it fits L(N, D) = [(A/N)^(α/β) + B/D]^β + E (N parameters, D training tokens) by L-BFGS on
the Huber loss (δ = 1e-3) of log L̂ − log L from a 4 × 4 grid of starts; then the loss-to-loss law
L_y = K·(L_x − E_x)^κ + E_y for every ordered pair of datasets (train-to-train), every (dataset, test set)
pair (train-to-test) and every test set across pairs of datasets (test-to-test). Each dataset's members at its
largest budget (within 10% of its largest planned FLOPs) are held out of the fits and predicted:

    python tools/scaling.py runs/lm_sweep                   # writes runs/lm_sweep/scaling/scaling.{json,md,png}
    python tools/scaling.py runs/lm_sweep --dataset data --holdout none -o out/
    python tools/scaling.py runs/lm_sweep --holdout MEMBER,MEMBER     # hold out these members instead

Members without a done.json for the stage (still running, failed) or without metrics are listed and skipped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from engine.runtime.checkpoint import exists, read_json, write_bytes  # noqa: E402
from engine.runtime.evaluate import png  # noqa: E402
from engine.runtime.metrics import read_metrics  # noqa: E402

HUBER_DELTA = 1e-3
LBFGS_ITERS = 200
START_LOG_AB = (5.0, 10.0, 15.0, 20.0)
START_LOG_E = 0.5
START_EXPONENT = 0.4
E_GRID = 100
MIN_LOSS_TO_LOSS_POINTS = 3
SCALING_PARAMS = 5


# ----------------------------------------------------------------------------- L(N, D)


@dataclass
class ScalingFit:
    """A fitted L(N, D) = [(A/N)^(α/β) + B/D]^β + E, parametrised by log A, log B, log E, α, β."""

    log_a: float
    log_b: float
    log_e: float
    alpha: float
    beta: float
    objective: float  # summed Huber loss at the optimum
    rmse_log: float  # root mean square of log L̂ − log L over the fitted points
    n: int

    @property
    def A(self) -> float:
        """A = exp(log A)."""
        return math.exp(self.log_a)

    @property
    def B(self) -> float:
        """B = exp(log B)."""
        return math.exp(self.log_b)

    @property
    def E(self) -> float:
        """The irreducible loss E = exp(log E)."""
        return math.exp(self.log_e)

    def predict(self, N: Any, D: Any) -> np.ndarray:
        """Predicted loss at parameters N and tokens D (arrays broadcast)."""
        p = torch.tensor([self.log_a, self.log_b, self.log_e, self.alpha, self.beta], dtype=torch.float64)
        n = torch.as_tensor(np.asarray(N, dtype=np.float64))
        d = torch.as_tensor(np.asarray(D, dtype=np.float64))
        return torch.exp(_log_law(p, torch.log(n), torch.log(d))).numpy()

    def as_dict(self) -> dict[str, float]:
        """Parameters for JSON, with A, B, E spelled out."""
        return {**asdict(self), "A": self.A, "B": self.B, "E": self.E}


def _log_law(p: torch.Tensor, log_n: torch.Tensor, log_d: torch.Tensor) -> torch.Tensor:
    """log L̂ computed stably: logaddexp(β·logaddexp((α/β)(log A − log N), log B − log D), log E)."""
    log_a, log_b, log_e, alpha, beta = p
    inner = torch.logaddexp(alpha / beta * (log_a - log_n), log_b - log_d)
    return torch.logaddexp(beta * inner, log_e.expand_as(inner))


def lbfgs(
    f: Any, x0: torch.Tensor, iters: int, history: int = 10, tol: float = 1e-12
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise f from every row of x0 at once: an independent L-BFGS (two-loop recursion, Armijo backtracking)
    per row, vectorised over rows; f maps (rows, dim) to (rows,). Rows whose values turn non-finite keep their
    last finite point. Returns the final points and values."""

    def value_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        v = f(x)
        g = torch.autograd.grad(torch.where(torch.isfinite(v), v, 0.0).sum(), x)[0]
        return v.detach(), g

    x = x0.clone()
    v, g = value_grad(x)
    rows = x.shape[0]
    s_hist: list[torch.Tensor] = []
    y_hist: list[torch.Tensor] = []
    rho_hist: list[torch.Tensor] = []
    gamma = torch.ones(rows, dtype=x.dtype)
    active = torch.isfinite(v) & torch.isfinite(g).all(-1)
    first = True
    for _ in range(iters):
        if not bool(active.any()):
            break
        q = g.clone()
        alphas = []
        for s, y, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist), strict=True):
            a = rho * (s * q).sum(-1)
            q = q - a[:, None] * y
            alphas.append(a)
        r = gamma[:, None] * q
        for s, y, rho, a in zip(s_hist, y_hist, rho_hist, reversed(alphas), strict=True):
            b = rho * (y * r).sum(-1)
            r = r + s * (a - b)[:, None]
        d = -r
        slope = (g * d).sum(-1)
        steep = -g / g.abs().sum(-1, keepdim=True).clamp_min(1.0)  # first step: at most unit L1 length
        bad = ~(slope < 0) | first
        d = torch.where(bad[:, None], steep, d)
        slope = (g * d).sum(-1)
        first = False
        t = torch.ones(rows, dtype=x.dtype)
        accepted = torch.zeros(rows, dtype=torch.bool)
        v_new, g_new = v.clone(), g.clone()
        for _ in range(40):  # backtracking: halve each row's step until its Armijo condition holds
            trial = torch.where((active & ~accepted)[:, None], x + t[:, None] * d, x)
            vt, gt = value_grad(trial)
            ok = (
                active
                & ~accepted
                & torch.isfinite(vt)
                & torch.isfinite(gt).all(-1)
                & (vt <= v + 1e-4 * t * slope)
            )
            v_new = torch.where(ok, vt, v_new)
            g_new = torch.where(ok[:, None], gt, g_new)
            accepted |= ok
            t = torch.where(accepted, t, t / 2)
            if bool((accepted | ~active).all()):
                break
        step = torch.where(accepted[:, None], t[:, None] * d, torch.zeros_like(d))
        y = g_new - g
        sy = (step * y).sum(-1)
        curv = accepted & (sy > 1e-300)
        rho = torch.where(curv, 1.0 / torch.where(curv, sy, 1.0), 0.0)
        gamma = torch.where(curv, sy / (y * y).sum(-1).clamp_min(1e-300), gamma)
        s_hist.append(step)
        y_hist.append(torch.where(curv[:, None], y, 0.0))
        rho_hist.append(rho)
        if len(s_hist) > history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        progress = (v - v_new).abs() > tol * v.abs().clamp_min(1e-300)
        x = x + step
        v, g = v_new, g_new
        active = active & accepted & progress & (g.abs().amax(-1) > tol)
    return x, v


def fit_scaling_law(N: Any, D: Any, L: Any, iters: int = LBFGS_ITERS) -> ScalingFit:
    """Fit L(N, D) by L-BFGS on the summed Huber loss (δ = 1e-3) of log residuals from every start of the grid
    log A, log B ∈ {5, 10, 15, 20}, log E = 0.5, α = β = 0.4; the best finite final objective wins."""
    n, d, loss = (np.asarray(x, dtype=np.float64).ravel() for x in (N, D, L))
    if not (len(n) == len(d) == len(loss)):
        raise ValueError(f"N, D and L differ in length ({len(n)}, {len(d)}, {len(loss)})")
    if len(n) < SCALING_PARAMS + 1:
        raise ValueError(f"{len(n)} point(s): an L(N, D) fit needs at least {SCALING_PARAMS + 1}")
    if not (np.all(n > 0) and np.all(d > 0) and np.all(loss > 0) and np.all(np.isfinite(loss))):
        raise ValueError("N, D and L must be positive and finite")
    log_n, log_d, log_l = (torch.as_tensor(np.log(x)) for x in (n, d, loss))

    def objective(p: torch.Tensor) -> torch.Tensor:
        """Summed Huber loss of the log residuals, per start: p is (starts, 5), the result (starts,)."""
        r = _log_law(p.T[..., None], log_n, log_d) - log_l
        return torch.nn.functional.huber_loss(
            r, torch.zeros_like(r), reduction="none", delta=HUBER_DELTA
        ).sum(-1)

    starts = torch.tensor(
        [
            [a, b, START_LOG_E, START_EXPONENT, START_EXPONENT]
            for a, b in itertools.product(START_LOG_AB, START_LOG_AB)
        ],
        dtype=torch.float64,
    )
    p, value = lbfgs(objective, starts, iters)
    ok = torch.isfinite(value) & torch.isfinite(p).all(-1)
    if not bool(ok.any()):
        raise ValueError("no start of the L(N, D) fit reached a finite objective")
    i = int(torch.argmin(torch.where(ok, value, torch.inf)))
    value, p = float(value[i]), p[i]
    with torch.no_grad():
        rmse = float(torch.sqrt(torch.mean((_log_law(p, log_n, log_d) - log_l) ** 2)))
    log_a, log_b, log_e, alpha, beta = (float(v) for v in p)
    return ScalingFit(log_a, log_b, log_e, alpha, beta, value, rmse, len(n))


# ----------------------------------------------------------------------------- loss to loss


@dataclass
class LossToLossFit:
    """A fitted L_y = K·(L_x − E_x)^κ + E_y."""

    kappa: float
    log_k: float
    e_x: float
    e_y: float
    r2: float  # of the prediction of L_y, in linear space
    rmse: float  # of the prediction of L_y, in linear space
    n: int
    e_x_source: str = "given"  # "given", "grid", or (in the tool) the fit it comes from
    e_y_source: str = "given"

    @property
    def K(self) -> float:
        """K = exp(log K)."""
        return math.exp(self.log_k)

    def predict(self, Lx: Any) -> np.ndarray:
        """Predicted L_y for losses L_x (NaN where L_x ≤ E_x)."""
        x = np.asarray(Lx, dtype=np.float64) - self.e_x
        with np.errstate(invalid="ignore"):
            return self.K * np.where(x > 0, x, np.nan) ** self.kappa + self.e_y

    def as_dict(self) -> dict[str, Any]:
        """Parameters for JSON, with K spelled out."""
        return {**asdict(self), "K": self.K}


def _e_grid(losses: np.ndarray, given: float | None, grid: int) -> np.ndarray:
    """The candidate irreducible losses: the given one, else linspace(0, min L, grid) without its endpoint."""
    if given is not None:
        return np.array([float(given)])
    return np.linspace(0.0, float(losses.min()), grid)[:-1]


def fit_loss_to_loss(
    Lx: Any,
    Ly: Any,
    Ex: float | None = None,
    Ey: float | None = None,
    grid: int = E_GRID,
) -> LossToLossFit:
    """Fit κ and log K by least squares of log(L_y − E_y) on log(L_x − E_x); an E that is not given is searched
    on linspace(0, min observed L, grid) (endpoint excluded), keeping the best linear-space MSE of L_y."""
    x, y = np.asarray(Lx, dtype=np.float64).ravel(), np.asarray(Ly, dtype=np.float64).ravel()
    if len(x) != len(y):
        raise ValueError(f"L_x and L_y differ in length ({len(x)}, {len(y)})")
    if len(x) < MIN_LOSS_TO_LOSS_POINTS:
        raise ValueError(f"{len(x)} point(s): a loss-to-loss fit needs at least {MIN_LOSS_TO_LOSS_POINTS}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("L_x and L_y must be finite")
    ex, ey = _e_grid(x, Ex, grid), _e_grid(y, Ey, grid)
    with np.errstate(invalid="ignore", divide="ignore"):
        lx = np.log(x[None, :] - ex[:, None])[:, None, :]  # (ex, 1, n)
        ly = np.log(y[None, :] - ey[:, None])[None, :, :]  # (1, ey, n)
    mx, my = lx.mean(-1, keepdims=True), ly.mean(-1, keepdims=True)
    var = ((lx - mx) ** 2).sum(-1)
    cov = ((lx - mx) * (ly - my)).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = cov / var  # (ex, ey)
        log_k = my[..., 0] - kappa * mx[..., 0]
        pred = np.exp(log_k[..., None] + kappa[..., None] * lx) + ey[None, :, None]
        mse = ((pred - y) ** 2).mean(-1)
    mse = np.where(np.isfinite(mse) & (var > 1e-300), mse, np.inf)
    if not np.isfinite(mse).any():
        raise ValueError("no finite loss-to-loss fit: L_x must vary and exceed E_x, L_y must exceed E_y")
    i, j = np.unravel_index(int(np.argmin(mse)), mse.shape)
    residual = float(((pred[i, j] - y) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    return LossToLossFit(
        kappa=float(kappa[i, j]),
        log_k=float(log_k[i, j]),
        e_x=float(ex[i]),
        e_y=float(ey[j]),
        r2=1.0 - residual / total if total > 0 else float("nan"),
        rmse=float(math.sqrt(mse[i, j])),
        n=len(x),
        e_x_source="given" if Ex is not None else "grid",
        e_y_source="given" if Ey is not None else "grid",
    )


# ----------------------------------------------------------------------------- reading a sweep


@dataclass
class Member:
    """One finished sweep member: its dataset, the other axes' values, N, D, planned FLOPs and losses."""

    name: str
    dataset: str
    key: str  # the values of every axis but the dataset axis, as canonical JSON (pairs members across datasets)
    N: float
    D: float
    flops: float | None
    train_loss: float
    test_losses: dict[str, float] = field(default_factory=dict)
    holdout: bool = False

    @property
    def compute(self) -> float:
        """C = 6·N·D."""
        return 6.0 * self.N * self.D


class InputError(Exception):
    """The run directories or options cannot be used; the message says what is wrong and how to fix it."""


def _read_json(url: str) -> Any:
    """A JSON file, or None where it does not exist."""
    return read_json(url) if exists(url) else None


def resolve_axis(axes: dict[str, Any], name: str | None) -> str:
    """The axis named by its full key or a unique dotted suffix; default: the axis whose key ends in `.data`."""
    keys = list(axes)
    listing = ", ".join(keys) or "(none)"
    if name is None:
        found = [k for k in keys if k == "data" or k.endswith(".data")]
        if len(found) != 1:
            raise InputError(
                f"no single axis ends in .data; name the dataset axis with --dataset (axes: {listing})"
            )
        return found[0]
    found = [k for k in keys if k == name or k.endswith("." + name)]
    if len(found) != 1:
        why = "matches several axes" if found else "is not an axis of the sweep"
        raise InputError(f"--dataset {name} {why}; axes: {listing}")
    return found[0]


def _train_stage(plan: dict[str, Any], stage: str | None) -> str:
    """The named stage, else the sole or last stage of kind train in the plan."""
    stages = plan.get("stages", {})
    if stage is not None:
        if stage not in stages:
            raise KeyError(f"plan.json has no stage {stage} (stages: {', '.join(stages)})")
        return stage
    trained = [s for s, p in stages.items() if p.get("kind") == "train"]
    if not trained:
        raise KeyError("plan.json has no train stage; name one with --stage")
    return trained[-1]


def read_member(
    run_dir: str, entry: dict[str, Any], axis: str, stage: str | None, params: str, last_k: int
) -> Member:
    """Read one member's run directory; raises KeyError / ValueError with the reason it cannot be used."""
    base = run_dir.rstrip("/")
    out = f"{base}/{entry['name']}"
    if not exists(out) and entry.get("output"):
        out = str(entry["output"]).rstrip("/")
    plan = _read_json(f"{out}/plan.json")
    if plan is None:
        raise KeyError(f"no plan.json in {out}")
    name = _train_stage(plan, stage)
    counts = plan["stages"][name].get("params") or {}
    n = float(counts.get("total") or 0)
    if params == "non-embedding":
        n -= float(counts.get("embedding") or 0)
    if n <= 0:
        raise ValueError(f"stage {name} has no parameter count in plan.json")
    done = _read_json(f"{out}/{name}/final/done.json")
    if done is None:
        raise KeyError(f"no {name}/final/done.json (not finished: still running or failed)")
    lines = read_metrics(f"{out}/{name}")  # either layout; a line cut short by a crash is left out
    if not lines:
        raise KeyError(f"no {name}/metrics.jsonl")
    train = [r for r in lines if isinstance(r.get("loss"), int | float)]
    if not train:
        raise ValueError(f"{name}/metrics.jsonl has no training loss")
    loss = float(np.mean([r["loss"] for r in train[-last_k:]]))
    if not math.isfinite(loss):
        raise ValueError(f"{name}: the training loss is not finite (diverged)")
    tokens = done.get("tokens") or next((r["tokens"] for r in reversed(lines) if r.get("tokens")), None)
    if not tokens:
        raise ValueError(f"no token count in {name}/final/done.json or metrics.jsonl")
    tests: dict[str, float] = {}
    for r in lines:
        for k, v in r.items():
            if k.startswith("test_loss/") and isinstance(v, int | float):
                tests[k.removeprefix("test_loss/")] = float(v)
    values = entry.get("values", {})
    if axis not in values:
        raise KeyError(f"sweep.json gives no value on the dataset axis {axis}")
    others = {k: v for k, v in values.items() if k != axis}
    flops = entry.get("flops")
    return Member(
        name=entry["name"],
        dataset=str(values[axis]),
        key=json.dumps(others, sort_keys=True),
        N=n,
        D=float(tokens),
        flops=float(flops) if flops else None,
        train_loss=loss,
        test_losses=tests,
    )


def read_sweeps(
    run_dirs: list[str], dataset: str | None, stage: str | None, params: str, last_k: int
) -> tuple[str, list[str], list[Member], list[dict[str, str]]]:
    """The dataset axis, its labels, the usable members and the skipped ones (name and why) of the sweeps."""
    axis, labels, members, skipped = None, [], [], []
    for run_dir in run_dirs:
        try:
            sweep = _read_json(f"{run_dir.rstrip('/')}/sweep.json")
        except ValueError as e:
            raise InputError(
                f"{run_dir}/sweep.json is not valid JSON ({e}); rerun the sweep's launcher"
            ) from None
        if sweep is None:
            raise InputError(
                f"{run_dir}: no sweep.json there; give the output directory of a sweep "
                "(`python -m engine SPEC` writes sweep.json there for a spec with a sweep: block)"
            )
        axes = sweep.get("axes", {})
        found = resolve_axis(axes, dataset)
        if axis is not None and found != axis:
            raise InputError(f"{run_dir}: its dataset axis {found} differs from {axis} of the first sweep")
        axis = found
        labels += [str(v) for v in axes[axis] if str(v) not in labels]
        for entry in sweep.get("members", []):
            try:
                members.append(read_member(run_dir, entry, axis, stage, params, last_k))
            except (KeyError, ValueError, TypeError, OSError) as e:
                why = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
                skipped.append({"name": str(entry.get("name")), "why": str(why)})
    if axis is None:
        raise InputError("no run directory given")
    return axis, labels, members, skipped


# ----------------------------------------------------------------------------- fitting a sweep


def mark_holdout(members: list[Member], holdout: list[str]) -> None:
    """Mark the held-out members: `largest` (each dataset's members within 10% of its largest planned FLOPs:
    its largest budget), `none`, or names."""
    if holdout == ["none"]:
        return
    if holdout == ["largest"]:
        for d in {m.dataset for m in members}:
            mine = [m for m in members if m.dataset == d]
            top = max(m.flops or m.compute for m in mine)
            # members of one budget differ by the rounding of their steps: within 10% is the same budget
            held = [(m.flops or m.compute) >= top * 0.9 for m in mine]
            if all(held):  # one budget only: holding it out would leave nothing to fit
                continue
            for m, h in zip(mine, held, strict=True):
                m.holdout = h
        return
    names = {m.name for m in members}
    unknown = [h for h in holdout if h not in names]
    if unknown:
        raise InputError(
            f"--holdout names no finished member: {', '.join(unknown)} "
            "(give member names from sweep.json, `largest` or `none`)"
        )
    for m in members:
        m.holdout = m.name in holdout


def _error(predicted: float, actual: float) -> dict[str, float]:
    return {"predicted": predicted, "actual": actual, "rel_error": (predicted - actual) / actual}


def fit_sweep(members: list[Member], labels: list[str]) -> dict[str, Any]:
    """Every fit of the sweep: L(N, D) per dataset, then train-to-train, train-to-test and test-to-test laws."""
    result: dict[str, Any] = {"scaling": {}, "loss_to_loss": [], "skipped_fits": []}
    datasets = [d for d in labels if any(m.dataset == d for m in members)]
    e_train: dict[str, tuple[float, str]] = {}
    for d in datasets:
        mine = [m for m in members if m.dataset == d]
        fit_on = [m for m in mine if not m.holdout]
        try:
            fit = fit_scaling_law(
                [m.N for m in fit_on], [m.D for m in fit_on], [m.train_loss for m in fit_on]
            )
        except ValueError as e:
            result["skipped_fits"].append({"fit": f"L(N, D) of {d}", "why": str(e)})
            continue
        e_train[d] = (fit.E, f"L(N, D) fit of {d}")
        held = [
            {"name": m.name, "N": m.N, "D": m.D, **_error(float(fit.predict(m.N, m.D)), m.train_loss)}
            for m in mine
            if m.holdout
        ]
        result["scaling"][d] = {**fit.as_dict(), "holdout": held}

    def loss_to_loss(
        pairing: str, x: str, y: str, points: list[tuple[Member, float, float, bool]], ex: Any, ey: Any
    ) -> LossToLossFit | None:
        """Fit one law on the points not held out; ex and ey are (E, where it comes from) or None (grid)."""
        fit_on = [(lx, ly) for _, lx, ly, h in points if not h]
        try:
            fit = fit_loss_to_loss([p[0] for p in fit_on], [p[1] for p in fit_on], ex and ex[0], ey and ey[0])
        except ValueError as e:
            result["skipped_fits"].append({"fit": f"{pairing} {x} → {y}", "why": str(e)})
            return None
        fit.e_x_source, fit.e_y_source = (e[1] if e else "grid" for e in (ex, ey))
        held = [
            {"name": m.name, "x": lx, **_error(float(fit.predict(lx)), ly)} for m, lx, ly, h in points if h
        ]
        result["loss_to_loss"].append(
            {
                "pairing": pairing,
                "x": x,
                "y": y,
                **fit.as_dict(),
                "points": [[lx, ly, h] for _, lx, ly, h in points],
                "holdout": held,
            }
        )
        return fit

    def matched(dx: str, dy: str) -> list[tuple[Member, Member]]:
        ys = {m.key: m for m in members if m.dataset == dy}
        return [(m, ys[m.key]) for m in members if m.dataset == dx and m.key in ys]

    for dx, dy in itertools.permutations(datasets, 2):
        pts = [(my, mx.train_loss, my.train_loss, mx.holdout or my.holdout) for mx, my in matched(dx, dy)]
        loss_to_loss(
            "train-to-train", f"train:{dx}", f"train:{dy}", pts, ex=e_train.get(dx), ey=e_train.get(dy)
        )
    tests = sorted({t for m in members for t in m.test_losses})
    e_test: dict[tuple[str, str], tuple[float, str]] = {}
    for d in datasets:
        for t in tests:
            pts = [
                (m, m.train_loss, m.test_losses[t], m.holdout)
                for m in members
                if m.dataset == d and t in m.test_losses
            ]
            if not pts:
                continue
            fit = loss_to_loss("train-to-test", f"train:{d}", f"{t}|{d}", pts, ex=e_train.get(d), ey=None)
            if fit is not None:
                e_test[(t, d)] = (
                    fit.e_y,
                    f"train-to-test fit of {t}|{d}",
                )  # E_{t|d}: the test set's offset for models trained on d
    for t in tests:
        for dx, dy in itertools.permutations(datasets, 2):
            pts = [
                (my, mx.test_losses[t], my.test_losses[t], mx.holdout or my.holdout)
                for mx, my in matched(dx, dy)
                if t in mx.test_losses and t in my.test_losses
            ]
            if pts:
                loss_to_loss(
                    "test-to-test",
                    f"{t}|{dx}",
                    f"{t}|{dy}",
                    pts,
                    ex=e_test.get((t, dx)),
                    ey=e_test.get((t, dy)),
                )
    return result


# ----------------------------------------------------------------------------- reporting


def _g(x: float) -> str:
    return f"{x:.4g}"


def _cell(text: str) -> str:
    """Text for a Markdown table cell (a `|` in a loss's name, as in `probe|data`, escaped)."""
    return text.replace("|", "\\|")


def markdown(axis: str, members: list[Member], skipped: list[dict[str, str]], result: dict[str, Any]) -> str:
    """The fits as Markdown tables: L(N, D) per dataset, loss-to-loss laws, held-out predictions, skips."""
    out = [f"# Scaling fits over the {axis} axis ({len(members)} members)", ""]
    out += ["## L(N, D) = [(A/N)^(α/β) + B/D]^β + E", ""]
    out += ["| dataset | points | A | B | E | α | β | RMSE (log) |", "|---|---|---|---|---|---|---|---|"]
    for d, f in result["scaling"].items():
        cells = [f["n"], _g(f["A"]), _g(f["B"]), f"{f['E']:.3f}", f"{f['alpha']:.3f}", f"{f['beta']:.3f}"]
        out.append(f"| {d} | " + " | ".join(map(str, cells)) + f" | {f['rmse_log']:.2e} |")
    rows = [(d, h) for d, f in result["scaling"].items() for h in f["holdout"]]
    if rows:
        out += ["", "Held out of the L(N, D) fits:", ""]
        out += [
            "| dataset | member | N | D | predicted | actual | rel. error |",
            "|---|---|---|---|---|---|---|",
        ]
        for d, h in rows:
            out.append(
                f"| {d} | {h['name']} | {_g(h['N'])} | {_g(h['D'])} | {h['predicted']:.4f} | {h['actual']:.4f} "
                f"| {100 * h['rel_error']:+.2f}% |"
            )
    out += ["", "## Loss to loss: L_y = K·(L_x − E_x)^κ + E_y", ""]
    out += [
        "| pairing | x | y | points | κ | K | E_x | E_y | R² | RMSE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in result["loss_to_loss"]:
        ex = f"{f['e_x']:.3f}" + (" (grid)" if f["e_x_source"] == "grid" else "")
        ey = f"{f['e_y']:.3f}" + (" (grid)" if f["e_y_source"] == "grid" else "")
        out.append(
            f"| {f['pairing']} | {_cell(f['x'])} | {_cell(f['y'])} | {f['n']} | {f['kappa']:.3f} | {f['K']:.3f} | {ex} | {ey} "
            f"| {f['r2']:.4f} | {f['rmse']:.2e} |"
        )
    rows = [(f, h) for f in result["loss_to_loss"] for h in f["holdout"]]
    if rows:
        out += ["", "Held out of the loss-to-loss fits (L_y predicted from the actual L_x):", ""]
        out += [
            "| pairing | x → y | member | L_x | predicted | actual | rel. error |",
            "|---|---|---|---|---|---|---|",
        ]
        for f, h in rows:
            if math.isfinite(h["predicted"]):
                guess, error = f"{h['predicted']:.4f}", f"{100 * h['rel_error']:+.2f}%"
            else:  # the law has no value below its E_x
                guess, error = f"none: L_x ≤ E_x = {f['e_x']:.3f}", "-"
            out.append(
                f"| {f['pairing']} | {_cell(f['x'])} → {_cell(f['y'])} | {h['name']} | {h['x']:.4f} | {guess} "
                f"| {h['actual']:.4f} | {error} |"
            )
    if skipped or result["skipped_fits"]:
        out += ["", "## Skipped", ""]
        out += [f"- member {s['name']}: {s['why']}" for s in skipped]
        out += [f"- fit {s['fit']}: {s['why']}" for s in result["skipped_fits"]]
    return "\n".join(out) + "\n"


CMAPS = ("Blues", "Oranges", "Greens", "Reds", "Purples", "Greys", "YlOrBr", "BuGn")


def plot(members: list[Member], labels: list[str], result: dict[str, Any]) -> bytes:
    """PNG: loss against compute per dataset with the fitted L(N, D) per model size; and a loss-to-loss panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from matplotlib.lines import Line2D

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.2))
    handles = []
    datasets = [d for d in labels if any(m.dataset == d for m in members)]
    for i, d in enumerate(datasets):
        cmap = matplotlib.colormaps[CMAPS[i % len(CMAPS)]]
        mine = [m for m in members if m.dataset == d]
        sizes = sorted({m.N for m in mine})
        fit = result["scaling"].get(d)
        model = ScalingFit(**{k: fit[k] for k in ScalingFit.__dataclass_fields__}) if fit else None
        for j, n in enumerate(sizes):
            color = cmap(0.4 + 0.55 * j / max(1, len(sizes) - 1))
            pts = [m for m in mine if m.N == n]
            for held in (False, True):
                sel = [m for m in pts if m.holdout == held]
                if sel:
                    ax.scatter(
                        [m.compute for m in sel],
                        [m.train_loss for m in sel],
                        color=color,
                        marker="*" if held else "o",
                        s=120 if held else 30,
                        edgecolors="black" if held else "none",
                        zorder=3,
                    )
            if model is not None:
                ds = np.geomspace(min(m.D for m in pts) / 1.5, max(m.D for m in pts) * 1.5, 50)
                ax.plot(6 * n * ds, model.predict(n, ds), color=color, linewidth=1)
        label = f"{d} (E = {fit['E']:.2f})" if fit else f"{d} (no fit)"
        handles.append(Line2D([], [], color=cmap(0.8), marker="o", label=label))
    handles.append(
        Line2D(
            [],
            [],
            color="grey",
            marker="*",
            markersize=11,
            markeredgecolor="black",
            linestyle="",
            label="held out",
        )
    )
    sizes = sorted({m.N for m in members})
    if len(sizes) <= 8:  # what the shades mean, in grey
        for j, n in enumerate(sizes):
            shade = matplotlib.colormaps["Greys"](0.4 + 0.55 * j / max(1, len(sizes) - 1))
            handles.append(Line2D([], [], color=shade, marker="o", linestyle="", label=f"N = {n:.3g}"))
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded minor labels
    ax.set_xlabel("compute C = 6·N·D (FLOPs)")
    ax.set_ylabel("train loss (mean of the last logged steps)")
    ax.set_title("L(N, D) per dataset; lines: fit per model size (darker = larger N)", fontsize=10)
    ax.legend(handles=handles, fontsize=8)
    ax.grid(alpha=0.3, which="both")

    fits = result["loss_to_loss"]
    ref = datasets[0] if datasets else None
    shown = [f for f in fits if f["pairing"] == "train-to-train" and f["x"] == f"train:{ref}"]
    if not shown:
        shown = [f for f in fits if f["pairing"] == "train-to-test" and f["x"] == f"train:{ref}"]
    for i, f in enumerate(shown):
        color = matplotlib.colormaps["tab10"](i % 10)
        pts = np.array([[p[0], p[1]] for p in f["points"]])
        held = np.array([bool(p[2]) for p in f["points"]])
        bx.scatter(pts[~held, 0], pts[~held, 1], color=color, s=25, zorder=3)
        if held.any():
            bx.scatter(
                pts[held, 0], pts[held, 1], color=color, marker="*", s=120, edgecolors="black", zorder=3
            )
        model = LossToLossFit(**{k: f[k] for k in LossToLossFit.__dataclass_fields__})
        xs = np.linspace(pts[:, 0].min(), pts[:, 0].max(), 100)
        bx.plot(
            xs,
            model.predict(xs),
            color=color,
            linewidth=1,
            label=f"{f['y']}: κ = {f['kappa']:.2f}, K = {f['K']:.2f}",
        )
    if shown:
        bx.scatter([], [], color="grey", marker="*", s=120, edgecolors="black", label="held out")
        bx.legend(fontsize=8)
        bx.set_title(f"loss to loss from {shown[0]['x']}: L_y = K·(L_x − E_x)^κ + E_y", fontsize=10)
    else:
        bx.text(0.5, 0.5, "no loss-to-loss fit", ha="center", va="center", transform=bx.transAxes)
        bx.set_title("loss to loss", fontsize=10)
    bx.set_xlabel(f"L_x: train loss on {ref}" if ref else "L_x")
    bx.set_ylabel("L_y: loss of the paired model / test set")
    bx.grid(alpha=0.3)
    return png(fig)


def main(argv: list[str] | None = None) -> int:
    """Command line: read the sweeps, fit, print the tables and write scaling.{json,md,png}."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="a sweep's output directory (with sweep.json); any fsspec URL",
    )
    ap.add_argument(
        "--dataset", help="the dataset axis: full key or unique suffix (default: the axis ending in .data)"
    )
    ap.add_argument(
        "--holdout",
        default="largest",
        help="members held out of the fits and predicted: `largest` (default: each dataset's members within 10%% "
        "of its largest planned FLOPs), `none`, or member names separated by commas",
    )
    ap.add_argument("--stage", help="the trained stage (default: the sole or last stage of kind train)")
    ap.add_argument(
        "--params",
        choices=("total", "non-embedding"),
        default="total",
        help="N: params.total, or without params.embedding",
    )
    ap.add_argument(
        "--last",
        type=int,
        default=3,
        metavar="K",
        help="train loss = mean loss of the last K logged steps (default 3; 1: the final)",
    )
    ap.add_argument("-o", "--output", help="output directory (default: {first RUN_DIR}/scaling)")
    a = ap.parse_args(argv)
    if a.last < 1:
        raise SystemExit("error: --last must be at least 1")
    try:
        axis, labels, members, skipped = read_sweeps(a.runs, a.dataset, a.stage, a.params, a.last)
        for s in skipped:
            print(f"skipped {s['name']}: {s['why']}", file=sys.stderr)
        if not members:
            raise InputError(f"no finished member to fit in {', '.join(a.runs)} ({len(skipped)} skipped)")
        mark_holdout(members, [h for h in a.holdout.split(",") if h])
    except InputError as e:  # a user error: the message, exit status 2 (as the engine's CLI)
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = fit_sweep(members, labels)
    for s in result["skipped_fits"]:
        print(f"skipped fit {s['fit']}: {s['why']}", file=sys.stderr)
    md = markdown(axis, members, skipped, result)
    print(md, end="")
    out = (a.output or f"{a.runs[0].rstrip('/')}/scaling").rstrip("/")
    report = {
        "runs": a.runs,
        "dataset_axis": axis,
        "params": a.params,
        "last_k": a.last,
        "holdout": a.holdout,
        "members": [{**asdict(m), "compute": m.compute} for m in members],
        "skipped": skipped,
        **result,
    }
    write_bytes(f"{out}/scaling.json", (json.dumps(report, indent=2) + "\n").encode())
    write_bytes(f"{out}/scaling.md", md.encode())
    write_bytes(f"{out}/scaling.png", plot(members, labels, result))
    print(f"\nwrote {out}/scaling.json, scaling.md, scaling.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
