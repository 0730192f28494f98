"""Sweeps at launch: members priced by the plan, `sweep.json`, the table `engine plan` prints, the sbatch array.

The spec language expands a sweep (`schemas.sweep`); this module gives it the plan's costs, so that a FLOPs
budget becomes steps, and describes the members for people (`engine plan`), for tools (`{output}/sweep.json`)
and for SLURM (a job array whose task i runs the i-th member of the list in its script, by name).
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Sequence
from typing import Any

from schemas import Spec
from schemas.spec import ProbeStage, TrainStage
from schemas.sweep import SweepPlan, flow, load_sweep, short

from .plan import make_plan
from .plan.launch import RDZV_PORT, sbatch_script, torchrun_command
from .plan.make import _plan_stage
from .plan.report import fmt_count, fmt_flops


def stage_cost(spec: Spec, name: str) -> tuple[float, float]:
    """FLOPs of one step of a stage and of the whole stage, with attention (what the run logs as `flops`)."""
    return _cost(spec.model_dump_json(), name)


@functools.lru_cache(maxsize=256)
def _cost(spec_json: str, name: str) -> tuple[float, float]:
    """stage_cost of a spec given as JSON (a masked-video stage's plan draws its masks: worth caching)."""
    spec = Spec.model_validate_json(spec_json)
    flops = _plan_stage(name, spec.stages[name], spec).flops
    return flops.per_step, flops.total


def load(path: str, overrides: Sequence[str] = (), only: str | None = None) -> SweepPlan | None:
    """The spec's sweep with every member (or `only` the one named) validated and its budgeted steps derived
    (None: not a sweep)."""
    return load_sweep(path, list(overrides), stage_cost, only=only)


def _trained(spec: Spec) -> list[str]:
    return [n for n, s in spec.stages.items() if isinstance(s, TrainStage | ProbeStage)]


def describe(sweep: SweepPlan) -> dict[str, Any]:
    """What `{output}/sweep.json` holds: the axes, and every member's name, values, overrides and costs."""
    members = []
    for m in sweep.members:
        plan = make_plan(m.spec)
        stages = {n: plan.stages[n] for n in _trained(m.spec)}
        members.append(
            {
                "index": m.index,
                "name": m.name,
                "output": m.spec.run.output,
                "values": m.values,
                "overrides": m.overrides,
                "steps": {n: s.steps for n, s in stages.items()},
                "params": {n: s.params.total for n, s in stages.items()},
                "tokens": {n: (s.tokens.total if s.tokens.total else None) for n, s in stages.items()},
                "flops": sum(s.flops.total for s in plan.stages.values()),
            }
        )
    return {
        "spec": sweep.path,
        "overrides": sweep.overrides,
        "output": sweep.output,
        "axes": sweep.axes_dict(),
        "members": members,
    }


def _cell(value: Any) -> str:
    text = short(value) if isinstance(value, int | float | str | bool) else flow(value)
    return text if len(text) <= 24 else text[:21] + "..."


def render(sweep: SweepPlan, described: dict[str, Any]) -> str:
    """The members as a table: values of each axis, parameters and steps per train stage, FLOPs; the total."""
    axes = list(sweep.axes_dict())
    short_axis = {a: a.rsplit(".", 1)[-1] for a in axes}
    trained = {n for m in sweep.members for n, s in m.spec.stages.items() if isinstance(s, TrainStage)}
    stages = [n for n in dict.fromkeys(n for m in described["members"] for n in m["params"]) if n in trained]
    head = ["#", "name", *(short_axis[a] for a in axes)]
    head += [f"{s} params" for s in stages] + [f"{s} steps" for s in stages] + ["FLOPs"]
    rows = []
    for m in described["members"]:
        row = [str(m["index"]), m["name"], *(_cell(m["values"][a]) for a in axes)]
        row += [fmt_count(m["params"].get(s, 0)) for s in stages]
        row += [str(m["steps"].get(s, "")) for s in stages]
        rows.append([*row, fmt_flops(m["flops"])])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        f"sweep {sweep.path}: {len(sweep.members)} members in {sweep.output}/<name>",
        "axes    " + "; ".join(f"{a} ({len(v)})" for a, v in sweep.axes_dict().items()),
        "",
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    total = sum(m["flops"] for m in described["members"])
    lines += [
        "",
        f"total   {fmt_flops(total)} FLOPs with attention, all members",
        f"run     python -m engine {shlex.quote(sweep.path)} {' '.join(map(shlex.quote, sweep.overrides))}".rstrip()
        + "   (every member in turn; finished ones are skipped)",
        "one     add --member N (or its name); `engine plan SPEC --member N` shows its full plan",
        f"slurm   engine sbatch {shlex.quote(sweep.path)} > sweep.sbatch   (a job array, one task per member)",
    ]
    return "\n".join(lines)


def sbatch_array(sweep: SweepPlan, base: Spec, parallel: int | None = None) -> str:
    """An sbatch script running the sweep as a job array: task i runs member i (at most `parallel` at once).

    Tasks select their member by name, so the script runs the members it lists even if the spec's axes change
    while it waits in the queue. One-node members start torchrun with --standalone (array tasks may share a
    node); multi-node ones rendezvous on a port of their own. Every member must ask for the same resources (a
    job array has one shape); ValueError otherwise.
    """
    differ = [m for m in sweep.members if m.spec.resources != base.resources]
    if differ:
        raise ValueError(
            f"member {differ[0].index} ({differ[0].name}) asks for other resources than the base spec; a job "
            "array runs every task on one shape: sweep resources in separate specs"
        )
    res, n = base.resources, len(sweep.members)
    throttle = f"%{parallel}" if parallel else ""
    lines = sbatch_script(base, sweep.path, sweep.overrides).rstrip("\n").split("\n")
    launch = torchrun_command(res, sweep.path, sweep.overrides, rendezvous=res.nodes > 1)
    launch = launch.replace(f":{RDZV_PORT} ", f":$(({RDZV_PORT} + SLURM_ARRAY_TASK_ID % 1000)) ")
    out = []
    for line in lines:
        if line.startswith("#SBATCH --output="):
            name = line.removeprefix("#SBATCH --output=").removesuffix("-%j.out")
            out += [f"#SBATCH --array=0-{n - 1}{throttle}", f"#SBATCH --output={name}-%A_%a.out"]
        elif line.startswith("set -euo pipefail"):
            out += [
                line,
                f"# {n} members of {sweep.path}, one per array task",
                "MEMBERS=(" + " ".join(m.name for m in sweep.members) + ")",
            ]
        elif line.startswith("srun "):
            out.append(f'srun {launch} --member "${{MEMBERS[$SLURM_ARRAY_TASK_ID]}}"')
        else:
            out.append(line)
    return "\n".join(out) + "\n"
