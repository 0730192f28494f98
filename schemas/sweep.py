"""Sweeps: one spec with a `sweep:` block becomes a family of member runs, each validated as a spec of its own.

The members are every combination of the `grid` axes, crossed with the rows of `zip`, crossed with the FLOPs
budgets of `budget` (in that order, the last axis varying fastest). A member is the base spec with its values
set at their dotted keys (as command-line overrides are), `run.output` = `{output}/{member name}`, and the
steps of the budgeted stage derived from its FLOPs per step. Costs come from the caller (`engine plan`), so
this module stays free of torch and of the engine.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from .loader import Issue, SpecError, Tree, Where, load_tree, set_value, validate_tree
from .spec import Spec, Sweep, TrainStage

# FLOPs of one stage of a member: (per step, whole stage), as `engine plan` counts them.
StageCost = Callable[[Spec, str], tuple[float, float]]

BUDGET = "budget"  # the axis of `budget.flops`
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")  # a directory name: not '.', '..' or hidden
_FIELD = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")
_FIXED = ("run.output", "run.name")  # set per member from its name


@dataclass(frozen=True)
class Axis:
    """One swept key: its values, and the label of each (the mapping's keys, or None for a list)."""

    key: str
    values: list[Any]
    labels: list[str | None]
    where: Where

    def shown(self, i: int) -> Any:
        """What a member records for value `i`: its label, else the value itself."""
        label = self.labels[i]
        return self.values[i] if label is None else label


@dataclass
class Member:
    """One run of a sweep: its number, name, the value (or label) of every axis, and its validated spec."""

    index: int
    name: str
    values: dict[str, Any]
    overrides: list[str]
    spec: Spec


@dataclass
class SweepPlan:
    """A sweep, expanded: its axes and its members in order."""

    path: str
    overrides: list[str]
    output: str
    axes: list[Axis]
    members: list[Member] = field(default_factory=list)  # all of them, or the one `only` asked for
    total: int = 0  # members in the whole sweep

    def member(self, which: str) -> Member:
        """A member by number (all digits: always a number) or by name; ValueError saying what exists otherwise."""
        for m in self.members:
            if (str(m.index) if which.isdigit() else m.name) == which:
                return m
        names = ", ".join(m.name for m in self.members[:5]) + (", ..." if len(self.members) > 5 else "")
        raise ValueError(f"no member {which!r}: give a number 0..{len(self.members) - 1} or a name ({names})")

    def axes_dict(self) -> dict[str, list[Any]]:
        """Every axis with the values (or labels) it walks, as `sweep.json` records them."""
        return {a.key: [a.shown(i) for i in range(len(a.values))] for a in self.axes}


def flow(value: Any) -> str:
    """A value as one line of YAML (what an override of it would say)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**30, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def short(value: Any) -> str:
    """A value as it reads in a member's name: 64, 0.5, 1e12, copy."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        text = f"{value:.3g}"
        return text.replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    return str(value)


def _suffixes(keys: Sequence[str]) -> dict[str, str]:
    """Every unique trailing part of the keys' dotted paths -> its key (`dim`, `model.dim` -> the full key)."""
    seen: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            seen.setdefault(".".join(parts[i:]), []).append(key)
    return {s: ks[0] for s, ks in seen.items() if len(ks) == 1}


def _where(tree: Tree, *path: str | int) -> Where:
    return tree.key_at.get(tuple(path)) or tree.value_at.get(tuple(path)) or tree.value_at.get((), Where("?"))


def _axes(sweep: Sweep, tree: Tree, base_data: dict, issues: list[Issue]) -> tuple[list[Axis], list[Axis]]:
    """The grid axes and the zip axes, with every problem of their keys and values added to `issues`."""
    grid: list[Axis] = []
    rows: list[Axis] = []
    for section, out in (("grid", grid), ("zip", rows)):
        for key, raw in getattr(sweep, section).items():
            where = _where(tree, "sweep", section, key)
            at = f"sweep.{section}.{key}"
            labels: list[str | None]
            if isinstance(raw, dict):
                labels, values = [str(k) for k in raw], list(raw.values())
            else:
                labels, values = [None] * len(raw), list(raw)
            if key in _FIXED or key.startswith(("sweep", "extends")) or key in ("run", "stages"):
                issues.append(
                    Issue(
                        where,
                        at,
                        f"{key} cannot be swept: each member's run.output and run.name come from "
                        "its name, and a sweep cannot sweep itself",
                    )
                )
                continue
            if any(a.key == key for a in grid + rows):
                issues.append(Issue(where, at, "swept twice (in grid and zip); keep one"))
                continue
            nested = [
                a.key for a in grid + rows if key.startswith(a.key + ".") or a.key.startswith(key + ".")
            ]
            if nested:
                issues.append(
                    Issue(
                        where,
                        at,
                        f"overlaps the swept key {nested[0]} (one holds the other): the later would "
                        "overwrite the earlier's value; sweep one of them",
                    )
                )
                continue
            if not values:
                issues.append(
                    Issue(where, at, "no values: give at least one (an empty axis makes no members)")
                )
                continue
            probe = Tree(copy.deepcopy(base_data), {}, {})
            found = set_value(probe, key, copy.deepcopy(values[0]), where)
            if found:  # the key does not exist: say so at the sweep's key, with the did-you-mean
                issues.extend(Issue(where, at, i.message) for i in found)
                continue
            out.append(Axis(key, values, labels, where))
    lengths = {a.key: len(a.values) for a in rows}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        issues.append(
            Issue(
                _where(tree, "sweep", "zip"),
                "sweep.zip",
                f"lists of unequal length ({shown}); "
                "zip walks its lists together, so give each the same number of values (or use grid)",
            )
        )
    return grid, rows


def _budget_rules(sweep: Sweep, base: Spec, tree: Tree, issues: list[Issue]) -> None:
    b = sweep.budget
    if b is None:
        return
    where = _where(tree, "sweep", "budget", "stage")
    stage = base.stages.get(b.stage)
    if not isinstance(stage, TrainStage):
        kinds = [n for n, s in base.stages.items() if isinstance(s, TrainStage)]
        what = (
            "no stage" if stage is None else f"a {stage.kind} stage; a budget derives a train stage's steps"
        )
        issues.append(
            Issue(
                where, "sweep.budget.stage", f"{b.stage!r} is {what}; name a train stage: {', '.join(kinds)}"
            )
        )
    derived = [f"stages.{b.stage}.schedule.steps"]
    if b.warmup is not None:
        derived.append(f"stages.{b.stage}.schedule.warmup")
    for section in ("grid", "zip"):
        for key in getattr(sweep, section):
            hit = next((d for d in derived if d == key or d.startswith(key + ".")), None)
            if hit:
                issues.append(
                    Issue(
                        _where(tree, "sweep", section, key),
                        f"sweep.{section}.{key}",
                        f"sets {hit}, which the budget derives for every member; sweep budget.flops instead",
                    )
                )
    if b.match is not None and len(set(b.match)) < len(b.match):
        issues.append(
            Issue(
                _where(tree, "sweep", "budget", "match"),
                "sweep.budget.match",
                "names a stage twice: its FLOPs would count twice; list each stage once",
            )
        )
    for name in dict.fromkeys(b.match or []):
        if name not in base.stages or name == b.stage:
            issues.append(
                Issue(
                    _where(tree, "sweep", "budget", "match"),
                    "sweep.budget.match",
                    f"{name!r} is not another stage of this spec; stages: {', '.join(base.stages)}",
                )
            )


def _namer(sweep: Sweep, axes: list[Axis], tree: Tree, issues: list[Issue]) -> Callable[[int, dict], str]:
    """name(index, {axis key: value index}) -> the member's name, from the template or the default."""
    keys = [a.key for a in axes]
    by_suffix = _suffixes(keys)
    template = sweep.name

    def name_issue(message: str) -> None:
        issues.append(Issue(tree.value_at.get(("sweep", "name"), Where("?")), "sweep.name", message))

    if template is not None:
        unknown = [f for f, _ in _FIELD.findall(template) if f != "index" and f not in by_suffix]
        if unknown:
            names = ", ".join(["index", *sorted(by_suffix, key=len)[: 2 * len(keys)]])
            name_issue(f"{{{unknown[0]}}} names no axis; use one of {names}")
            template = None
    for f, spec in _FIELD.findall(template or ""):
        shown = (
            [0]
            if f == "index"
            else [a.shown(i) for a in axes if a.key == by_suffix[f] for i in range(len(a.values))]
        )
        for v in shown if spec else ():
            try:
                format(v, spec)
            except (ValueError, TypeError) as e:
                name_issue(f"{{{f}:{spec}}} cannot format {v!r}: {e}; drop the format or change it")
                template = None
                break

    def name(index: int, at: dict[str, int]) -> str:
        def value(key: str) -> Any:
            axis = next(a for a in axes if a.key == key)
            return axis.shown(at[key])

        if template is not None:

            def fill(m: re.Match) -> str:
                f, spec = m.group(1), m.group(2)
                v = index if f == "index" else value(by_suffix[f])
                return format(v, spec) if spec else short(v)

            text = _FIELD.sub(fill, template)
        else:
            parts = []
            for a in axes:
                i = at[a.key]
                last = min((s for s, k in by_suffix.items() if k == a.key), key=len)
                if a.labels[i] is not None:
                    parts.append(a.labels[i])
                elif isinstance(a.values[i], dict | list):
                    parts.append(f"{last}{i}")
                else:
                    parts.append(f"{last}{short(a.values[i])}")
            text = "-".join(parts) or f"member{index}"
        return re.sub(r"[^A-Za-z0-9_.\-]", "_", text)

    return name


def load_sweep(
    path: str,
    overrides: Sequence[str] = (),
    cost: StageCost | None = None,
    tree: Tree | None = None,
    only: str | None = None,
) -> SweepPlan | None:
    """The members of the spec's sweep, every one validated (None when the spec has no sweep).

    Raises SpecError listing every problem: of the sweep block (a key that does not exist, unequal zip
    lists, an empty axis, names that collide) and of each member (prefixed with the member's number, name and
    values). `cost` prices a stage of a member; it is needed only for `budget`. `only` (a member's number or
    name) validates and prices that member alone (ValueError when there is no such member).
    """
    tree = tree or load_tree(path, list(overrides))
    base = validate_tree(tree)
    sweep = base.sweep
    if sweep is None:
        return None
    data = {k: v for k, v in tree.data.items() if k != "sweep"}
    issues: list[Issue] = []
    grid, rows = _axes(sweep, tree, data, issues)
    _budget_rules(sweep, base, tree, issues)
    budgets = sweep.budget.flops if sweep.budget and sweep.budget.flops else None
    budget_axis = (
        [Axis(BUDGET, list(budgets), [None] * len(budgets), _where(tree, "sweep", "budget", "flops"))]
        if budgets
        else []
    )
    axes = grid + rows + budget_axis
    if not axes and not issues and not (sweep.budget and sweep.budget.match):
        issues.append(Issue(_where(tree, "sweep"), "sweep", "no axes: add grid or zip keys, or budget.flops"))
    swept = [a.key for a in grid + rows]
    if sweep.budget is not None:
        swept.append(f"stages.{sweep.budget.stage}.schedule.steps")
    for text in overrides:
        key = text.partition("=")[0].strip()
        hit = next((k for k in swept if key == k or key.startswith(k + ".") or k.startswith(key + ".")), None)
        if hit:
            issues.append(
                Issue(
                    Where(f"override {text!r}"),
                    key,
                    f"sets {hit}, which the sweep sets for every member; change "
                    "the sweep instead (e.g. sweep.grid={...} replaces the whole grid)",
                )
            )
    namer = _namer(sweep, axes, tree, issues)
    if issues:
        raise SpecError(issues)

    combos: list[dict[str, int]] = []
    n_rows = len(rows[0].values) if rows else 1
    for g in itertools.product(*(range(len(a.values)) for a in grid)):
        for r in range(n_rows):
            for b in range(len(budgets) if budgets else 1):
                at = {a.key: i for a, i in zip(grid, g, strict=True)}
                at |= {a.key: r for a in rows}
                if budgets:
                    at[BUDGET] = b
                combos.append(at)
    names = [namer(i, at) for i, at in enumerate(combos)]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            fix = "add the differing axes to sweep.name" if sweep.name else "give sweep.name a template"
            issues.append(
                Issue(
                    tree.value_at.get(("sweep", "name"), Where("?")) if sweep.name else _where(tree, "sweep"),
                    "sweep.name",
                    f"members {seen[n]} and {i} are both named {n!r}; {fix} (e.g. {{index}})",
                )
            )
            break
        if not _NAME.match(n) or n.isdigit():
            issues.append(
                Issue(
                    tree.value_at.get(("sweep", "name"), Where("?")) if sweep.name else _where(tree, "sweep"),
                    "sweep.name",
                    f"member {i}'s name {n!r} cannot be a directory name: it must start with a letter, digit or "
                    "'_', hold at most 200 of letters, digits, '_', '.', '-', and not be all digits (--member would read it as "
                    "a number); change sweep.name or the labels",
                )
            )
            break
        seen[n] = i
    if issues:
        raise SpecError(issues)

    output = base.run.output.rstrip("/")
    plan = SweepPlan(path, list(overrides), output, axes, total=len(combos))
    chosen = range(len(combos))
    if only is not None:
        chosen = [i for i, n in enumerate(names) if (str(i) if only.isdigit() else n) == only]
        if not chosen:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise ValueError(f"no member {only!r}: give a number 0..{len(names) - 1} or a name ({shown})")
    problems: dict[tuple[str, str, str], tuple[Where, list[str]]] = {}  # one line per problem, all members
    for index in chosen:
        at, name = combos[index], names[index]
        sets = [(a.key, a.values[at[a.key]], a.where) for a in grid + rows]
        sets += [("run.output", f"{output}/{name}", None), ("run.name", f"{base.run.name}-{name}", None)]
        values = {a.key: a.shown(at[a.key]) for a in axes}
        shown = ", ".join(
            f"{k}={short(v) if isinstance(v, int | float) else flow(v)}" for k, v in values.items()
        )
        who = f"member {index} {name!r} ({shown})"
        try:
            spec, sets = _member(tree, data, sets, sweep, budgets[at[BUDGET]] if budgets else None, cost)
        except SpecError as e:
            for i in e.issues:
                where = i.where
                if not where.line:  # a swept value: point at its key in the sweep block
                    swept = (w for k, _, w in sets if w and (i.path == k or i.path.startswith(k + ".")))
                    where = next(swept, where)
                problems.setdefault((str(where), i.path, i.message), (where, []))[1].append(who)
            continue
        overrides_ = [f"{k}={flow(v)}" for k, v, _ in sets]
        plan.members.append(Member(index, name, values, overrides_, spec))
    for (_, path, message), (where, whos) in problems.items():
        more = f" (and {len(whos) - 1} more member{'s' * (len(whos) > 2)})" if len(whos) > 1 else ""
        issues.append(Issue(where, path, f"in {whos[0]}{more}: {message}"))
    if issues:
        raise SpecError(issues)
    return plan


def _member(
    tree: Tree,
    data: dict,
    sets: list[tuple[str, Any, Where | None]],
    sweep: Sweep,
    budget: float | None,
    cost: StageCost | None,
) -> tuple[Spec, list[tuple[str, Any, Where | None]]]:
    """A member's validated spec and every value set on the base (the derived steps last)."""

    def build(sets: list[tuple[str, Any, Where | None]]) -> Spec:
        member = Tree(copy.deepcopy(data), dict(tree.value_at), dict(tree.key_at))
        found: list[Issue] = []
        for key, value, where in sets:
            found += set_value(member, key, copy.deepcopy(value), where or Where("sweep"))
        if found:
            raise SpecError(found)
        return validate_tree(member)

    b = sweep.budget
    if b is None:
        return build(sets), sets
    # Priced before its steps are derived: at steps no swept warmup exceeds (the base's may be fewer).
    warmups = [v for k, v, _ in sets if k == f"stages.{b.stage}.schedule.warmup" and isinstance(v, int)]
    base_steps = data.get("stages", {}).get(b.stage, {}).get("schedule", {}).get("steps")
    probe = max([base_steps if isinstance(base_steps, int) else 1, *warmups])
    spec = build([*sets, (f"stages.{b.stage}.schedule.steps", probe, None)])
    if cost is None:
        raise ValueError(
            "a sweep with a budget needs `cost` to derive steps (engine.sweep passes the plan's)"
        )
    per_step, _ = cost(spec, b.stage)
    target = budget if budget is not None else sum(cost(spec, s)[1] for s in b.match or [])
    steps = round(target / per_step)
    where = tree.value_at.get(("sweep", "budget", "flops" if budget is not None else "match"), Where("sweep"))
    if steps < 1:
        what = f"the budget {short(target)}" if budget is not None else f"{short(target)} FLOPs of {b.match}"
        raise SpecError(
            [
                Issue(
                    where,
                    "sweep.budget",
                    f"{what} is less than half a step of stage {b.stage!r} "
                    f"(one step costs {short(per_step)} FLOPs); raise the budget or shrink the step",
                )
            ]
        )

    def derived(steps: int) -> list[tuple[str, Any, Where | None]]:
        out = [(f"stages.{b.stage}.schedule.steps", steps, where)]
        if b.warmup is not None:
            out.append((f"stages.{b.stage}.schedule.warmup", round(b.warmup * steps), where))
        return sets + out

    # A masked-video step's mean cost depends on the steps (the plan averages the masks they draw, over a
    # spread of steps past 16384 clips, so its total is only within ~0.5% of the run's): keep the closest.
    tried: dict[int, tuple[float, Spec]] = {}
    while steps not in tried and len(tried) < 4:
        spec = build(derived(steps))
        per_step, spent = cost(spec, b.stage)
        tried[steps] = (abs(spent - target), spec)
        if abs(spent - target) <= per_step / 2:
            break
        steps = max(1, round(target / per_step))
    steps = min(tried, key=lambda n: tried[n][0])
    return tried[steps][1], derived(steps)
