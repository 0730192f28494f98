"""A metric against cumulative training FLOPs over a family of runs, with its Pareto frontier (PNG, Markdown, JSON).

    python tools/frontier.py runs/lm_sweep --metric loss --series data
    python tools/frontier.py runs/salt_sweep --metric top1 --task direction --probe linear_probe
    python tools/frontier.py runs/rf --metric acc/eval --smallest width --reach 0.99 --by n,k,p,mode

Each RUN is a sweep output directory (its `sweep.json` lists the members and their value on each axis), a run
directory (it holds `spec.yaml`), or a directory of run or sweep directories; any fsspec URL. A point is
either a training stage's final value of a logged key (`--metric loss`, `acc/eval`, ...: the last
`metrics.jsonl` line holding it) or, with `--metric top1`, one probe result (`{stage}/results.json` of a
probe stage: one point per encoder, task and probe kind). Its x is the training FLOPs of the stage (the
probed encoder) plus those of every stage it loads weights from, transitively (`{stage: NAME}` anywhere in
a stage's config: teacher, init, encoder), read from `{stage}/final/done.json`. A random encoder costs no
training: its point has x = 0 and is drawn as a horizontal dashed line.

A point is on the frontier when no other point has at most its FLOPs and a better or equal metric, strictly
better in one of the two. Members still running (no `done.json`, a line being written) are skipped, one line
each, unless `--partial` plots them at their last logged FLOPs, marked partial.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from engine.runtime.checkpoint import exists, read_json, write_bytes  # noqa: E402
from engine.runtime.evaluate import png  # noqa: E402
from engine.runtime.metrics import read_metrics  # noqa: E402

TRAIN_KINDS_EXCLUDED = {"probe", "evaluate"}  # stage kinds that do not train the weights later stages load
PROBE_METRICS = {"top1"}


class FrontierError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""


# ----------------------------------------------------------------------------- files


def _join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def _read_text(url: str) -> str | None:
    """The file's text, or None when it is missing or unreadable."""
    try:
        fs, path = fsspec.core.url_to_fs(url)
        return fs.cat_file(path).decode("utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError, OSError):
        return None


def _read_json(url: str) -> Any | None:
    """A JSON file's content, or None when it is missing or not (yet) valid JSON (a run is writing it)."""
    try:
        return read_json(url)
    except (OSError, json.JSONDecodeError):
        return None


# ----------------------------------------------------------------------------- members


@dataclass
class Member:
    """One run directory of the family, with its value on each sweep axis (empty outside a sweep)."""

    name: str
    url: str
    values: dict[str, Any] = field(default_factory=dict)


def _children(url: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(url)
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    dirs = sorted(e["name"] for e in entries if e.get("type") == "directory")
    if "file" in fs.protocol:
        return dirs
    return [fs.unstrip_protocol(d) for d in dirs]


def _sweep_members(url: str, sweep: dict[str, Any]) -> list[Member]:
    out = []
    for m in sweep.get("members", []):
        name = str(m.get("name", m.get("index", "?")))
        here = _join(url, name)  # the member's directory beside sweep.json (output = base output/name)
        given = m.get("output")
        member_url = given if (given and not exists(here) and exists(given)) else here
        out.append(Member(name, member_url, dict(m.get("values") or {})))
    return out


def resolve_members(runs: list[str]) -> tuple[list[Member], dict[str, list[Any]]]:
    """The members of every RUN (sweep, run, or directory of them) and the sweeps' axes with their values."""
    members: list[Member] = []
    axes: dict[str, list[Any]] = {}

    def add(url: str, depth: int) -> None:
        sweep = _read_json(_join(url, "sweep.json"))
        if isinstance(sweep, dict):
            for key, vals in (sweep.get("axes") or {}).items():
                axes.setdefault(key, [])
                axes[key] += [v for v in vals if v not in axes[key]]
            members.extend(_sweep_members(url, sweep))
        elif exists(_join(url, "spec.yaml")):
            members.append(Member(url.rstrip("/").rsplit("/", 1)[-1], url))
        elif depth == 0:
            for child in _children(url):
                add(child, 1)

    for run in runs:
        before = len(members)
        add(run, 0)
        if len(members) == before:
            raise FrontierError(
                f"no members in {run}: it holds no sweep.json, no spec.yaml, and no run directory "
                "(a directory with spec.yaml) one level down; give a sweep output or run directory"
            )
    seen: dict[str, int] = {}
    for m in members:  # two RUNs may hold members of the same name
        seen[m.name] = seen.get(m.name, 0) + 1
    for m in members:
        if seen[m.name] > 1:
            m.name = f"{m.url.rstrip('/').rsplit('/', 2)[-2]}/{m.name}"
    return members, axes


def resolve_axis(name: str, axes: dict[str, list[Any]]) -> str:
    """The full key of an axis named by its full key or a unique dotted suffix."""
    if name in axes:
        return name
    matches = [k for k in axes if k.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(axes) or "none (no sweep.json among the runs)"
    if matches:
        raise FrontierError(f"axis '{name}' is ambiguous: it ends {', '.join(matches)}; give the full key")
    raise FrontierError(f"unknown axis '{name}'; the axes are: {listed}")


# ----------------------------------------------------------------------------- stages and FLOPs


def stage_refs(config: Any) -> set[str]:
    """The stages a stage config loads weights from: every mapping {stage: NAME} inside it."""
    out: set[str] = set()
    if isinstance(config, dict):
        if isinstance(config.get("stage"), str):
            out.add(config["stage"])
        for v in config.values():
            out |= stage_refs(v)
    elif isinstance(config, list):
        for v in config:
            out |= stage_refs(v)
    return out


def dependencies(stages: dict[str, Any], name: str) -> list[str]:
    """The stage and every stage it loads weights from, transitively, in spec order."""
    found: set[str] = set()
    todo = [name]
    while todo:
        s = todo.pop()
        if s in found or s not in stages:
            continue
        found.add(s)
        todo.extend(stage_refs(stages[s]) - found)
    return [s for s in stages if s in found]


def is_training(config: Any) -> bool:
    """Whether a stage trains weights (not a probe or an evaluation)."""
    return not (isinstance(config, dict) and config.get("kind") in TRAIN_KINDS_EXCLUDED)


@dataclass
class Flops:
    """Training FLOPs of a stage and its dependencies; `unfinished` names stages without a done.json."""

    total: float = 0.0
    unfinished: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def stage_flops(member: Member, stages: dict[str, Any], name: str) -> Flops:
    """FLOPs of `name` plus its dependencies: done.json's, else (unfinished) the last logged `flops`."""
    out = Flops()
    for s in dependencies(stages, name):
        done = _read_json(_join(member.url, s, "final", "done.json"))
        if isinstance(done, dict) and isinstance(done.get("flops"), (int, float)):
            out.total += float(done["flops"])
            continue
        logged = [r["flops"] for r in read_metrics(_join(member.url, s)) if "flops" in r]
        if not isinstance(done, dict):
            out.unfinished.append(s)
        if logged:
            out.total += float(logged[-1])
        elif isinstance(done, dict):
            out.missing.append(s)
    return out


# ----------------------------------------------------------------------------- points


@dataclass
class Point:
    """One point of the plot: a member's metric at the training FLOPs it cost."""

    member: str
    series: str
    panel: str
    stage: str
    flops: float
    value: float
    partial: bool = False
    reference: bool = False  # a random encoder: no training FLOPs
    encoder: str = ""  # probes: the encoder probed (the series before --series adds an axis value)
    values: dict[str, Any] = field(default_factory=dict)
    frontier: bool = False
    frontier_all: bool = False


def _spec_stages(member: Member) -> dict[str, Any] | None:
    text = _read_text(_join(member.url, "spec.yaml"))
    if text is None:
        return None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    stages = spec.get("stages") if isinstance(spec, dict) else None
    return stages if isinstance(stages, dict) else None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _flops_problem(f: Flops, partial: bool) -> tuple[str | None, bool]:
    """Why a point cannot be drawn (or None), and whether it is partial."""
    if f.missing:
        return f"no FLOPs recorded for stage(s) {', '.join(f.missing)}", False
    if f.unfinished:
        if partial and not f.missing:
            return None, True
        return f"stage(s) {', '.join(f.unfinished)} not finished (no final/done.json; still running?)", False
    return None, False


def metric_points(
    members: list[Member], metric: str, stage: str | None, partial: bool, skipped: list[str]
) -> tuple[list[Point], bool, list[str]]:
    """Per-stage points; whether any member logs the metric; the keys one member logs (for the error)."""
    points: list[Point] = []
    logged_anywhere = False
    keys: list[str] = []
    for m in members:
        stages = _spec_stages(m)
        if stages is None:
            skipped.append(f"skipped {m.name}: no readable spec.yaml (not started yet?)")
            continue
        if stage and stage not in stages:
            skipped.append(
                f"skipped {m.name}: no stage '{stage}' in its spec.yaml (stages: {', '.join(stages)})"
            )
            continue
        candidates = [stage] if stage else [s for s in reversed(list(stages)) if is_training(stages[s])]
        chosen, value = None, None
        for s in candidates:
            rows = read_metrics(_join(m.url, s))
            if not keys:
                keys = sorted({k for r in rows for k in r})
            have = [r[metric] for r in rows if isinstance(r.get(metric), (int, float))]
            if not have:
                done = _read_json(_join(m.url, s, "final", "done.json"))
                final = done.get("metrics", {}) if isinstance(done, dict) else {}
                if isinstance(final, dict) and isinstance(final.get(metric), (int, float)):
                    have = [final[metric]]
            if have:
                chosen, value = s, float(have[-1])
                break
        if chosen is None:
            where = f"stage {stage}" if stage else "any training stage"
            skipped.append(f"skipped {m.name}: {where} logs no '{metric}' yet")
            continue
        logged_anywhere = True
        f = stage_flops(m, stages, chosen)
        why, is_partial = _flops_problem(f, partial)
        if why:
            skipped.append(f"skipped {m.name}: {why}")
            continue
        points.append(Point(m.name, "", "", chosen, f.total, value, is_partial, values=m.values))
    return points, logged_anywhere, keys


def probe_points(
    members: list[Member], metric: str, partial: bool, skipped: list[str], task: str | None, probe: str | None
) -> tuple[list[Point], bool]:
    """One point per probe result (encoder stage, task, probe kind) of every member; whether any was found."""
    points: list[Point] = []
    found_any = False
    for m in members:
        stages = _spec_stages(m)
        if stages is None:
            skipped.append(f"skipped {m.name}: no readable spec.yaml (not started yet?)")
            continue
        probes = [s for s, c in stages.items() if isinstance(c, dict) and c.get("kind") == "probe"]
        waiting, reasons = [], []
        for s in probes:
            res = _read_json(_join(m.url, s, "results.json"))
            if not isinstance(res, dict):
                waiting.append(s)
                continue
            found_any = True
            if not isinstance(res.get(metric), (int, float)):
                reasons.append(f"{s}: results.json has no '{metric}'")
                continue
            if (task and res.get("task") != task) or (probe and res.get("kind") != probe):
                continue
            enc_stage = res.get("encoder_stage")
            random = res.get("encoder") == "random" or enc_stage is None
            cfg_enc = stages[s].get("encoder") if isinstance(stages[s], dict) else None
            random = random or (isinstance(cfg_enc, dict) and "random" in cfg_enc)
            panel = f"{res.get('task', '?')} / {res.get('kind', '?')}"
            encoder = "random" if random else str(enc_stage)
            if random:
                points.append(
                    Point(m.name, encoder, panel, s, 0.0, float(res[metric]), reference=True, encoder=encoder)
                )
                points[-1].values = m.values
                continue
            f = stage_flops(m, stages, str(enc_stage))
            why, is_partial = _flops_problem(f, partial)
            if why:
                reasons.append(f"{s}: encoder {why}")
                continue
            points.append(
                Point(m.name, encoder, panel, s, f.total, float(res[metric]), is_partial, encoder=encoder)
            )
            points[-1].values = m.values
        if waiting:
            reasons.insert(0, f"no results.json yet for {', '.join(waiting)}")
        if reasons:
            drawn = sum(p.member == m.name for p in points)
            verb = "skipped" if not drawn else "partly skipped"
            skipped.append(f"{verb} {m.name}: {'; '.join(reasons)}")
    return points, found_any


# ----------------------------------------------------------------------------- Pareto frontier


def better_or_equal(a: float, b: float, maximize: bool) -> bool:
    """Whether metric a is at least as good as b."""
    return a >= b if maximize else a <= b


def pareto(xy: list[tuple[float, float]], maximize: bool) -> list[bool]:
    """For each (flops, metric) point, whether no other point has <= flops and a better-or-equal metric,
    strictly better in one (exact duplicates are both kept)."""
    out = []
    for i, (x, y) in enumerate(xy):
        dominated = any(
            j != i
            and x2 <= x
            and better_or_equal(y2, y, maximize)
            and (x2 < x or (y2 != y and better_or_equal(y2, y, maximize)))
            for j, (x2, y2) in enumerate(xy)
        )
        out.append(not dominated)
    return out


def mark_frontiers(points: list[Point], maximize: bool) -> None:
    """Set each point's frontier flag within its (panel, series) and within its panel."""
    for _, group in itertools.groupby(sorted(points, key=lambda p: p.panel), key=lambda p: p.panel):
        panel = list(group)
        for p, on in zip(panel, pareto([(p.flops, p.value) for p in panel], maximize), strict=True):
            p.frontier_all = on
        for s in {p.series for p in panel}:
            ser = [p for p in panel if p.series == s]
            for p, on in zip(ser, pareto([(p.flops, p.value) for p in ser], maximize), strict=True):
                p.frontier = on


# ----------------------------------------------------------------------------- outputs


def _flops_str(x: float) -> str:
    return "0" if x == 0 else f"{x:.3g}"


def markdown_table(points: list[Point], metric: str, label: str | None) -> str:
    """The points as a Markdown table, per panel, series and FLOPs."""
    panels = any(p.panel for p in points)
    head = (["panel"] if panels else []) + ["series", "member", "stage", "FLOPs", metric, "on frontier"]
    if label:
        head.insert(head.index("member") + 1, label.rsplit(".", 1)[-1])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in sorted(points, key=lambda p: (p.panel, p.series, p.flops, p.member)):
        on = [w for w, flag in (("series", p.frontier), ("all", p.frontier_all)) if flag]
        row = ([p.panel] if panels else []) + [p.series or "-", p.member]
        row += ([_fmt(p.values.get(label, ""))] if label else []) + [p.stage]
        flops = (
            _flops_str(p.flops) + (" (partial)" if p.partial else "") + (" (random)" if p.reference else "")
        )
        row += [flops, f"{p.value:.4g}", ", ".join(on) or "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(points: list[Point], metric: str, maximize: bool, label: str | None) -> bytes:
    """A PNG: one panel per (task, probe kind), log-x FLOPs, one colour per series, frontiers as steps."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = sorted({p.panel for p in points})
    series = sorted({p.series for p in points})
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(series)}
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.6), squeeze=False)
    better = "higher" if maximize else "lower"
    for ax, panel in zip(axes[0], panels, strict=True):
        here = [p for p in points if p.panel == panel]
        trained = [p for p in here if p.flops > 0]
        for s in series:
            pts = sorted((p for p in trained if p.series == s), key=lambda p: p.flops)
            c = colours[s]
            levels = sorted({p.value for p in here if p.series == s and p.flops <= 0})  # members share one
            for i, v in enumerate(levels):
                ax.axhline(v, color=c, ls="--", lw=1, label=None if i else f"{s or metric} (0 FLOPs)")
            if not pts:
                continue
            ax.scatter(
                [p.flops for p in pts],
                [p.value for p in pts],
                color=c,
                alpha=[1.0 if p.frontier else 0.35 for p in pts],
                marker="o",
                label=s or metric,
                zorder=3,
            )
            front = [p for p in pts if p.frontier]
            ax.plot(
                [p.flops for p in front], [p.value for p in front], color=c, drawstyle="steps-post", lw=1.5
            )
            for p in pts:
                if p.partial:
                    ax.annotate("partial", (p.flops, p.value), fontsize=6, color=c, xytext=(3, -8),
                                textcoords="offset points")  # fmt: skip
                if label:
                    ax.annotate(_fmt(p.values.get(label, "")), (p.flops, p.value), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")  # fmt: skip
        front = sorted((p for p in trained if p.frontier_all), key=lambda p: p.flops)
        if len({p.series for p in here}) > 1 and front:  # the frontier over all series: ringed, dotted steps
            xs, ys = [p.flops for p in front], [p.value for p in front]
            ax.plot(xs, ys, color="black", ls=":", lw=1.8, drawstyle="steps-post", zorder=2)
            ax.scatter(
                xs, ys, s=110, facecolors="none", edgecolors="black", label="frontier, all series", zorder=4
            )
        if trained:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded minor labels
        ax.set_xlabel("training FLOPs (stage and the stages it loads)")
        ax.set_ylabel(metric)
        ax.set_title((panel + "\n" if panel else "") + f"{metric} vs training FLOPs ({better} is better)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return png(fig)


def _num(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, (int, float)) else (1, str(v))


def smallest(
    points: list[Point], axis: str, reach: float, by: list[str], maximize: bool
) -> tuple[str, list[dict[str, Any]]]:
    """Per combination of the `by` axes (for probes, also panel and encoder), the smallest value of `axis` whose point
    reaches `reach`; else the best value and where. Markdown and rows."""
    rows: list[dict[str, Any]] = []
    probes = any(p.panel for p in points)  # probe points: grouped by panel and encoder too

    def key(p: Point) -> tuple:
        return (p.panel, p.encoder, *(_num(p.values.get(b)) for b in by))

    for _, group in itertools.groupby(sorted(points, key=key), key=key):
        g = [p for p in group if not p.partial]
        if not g:
            continue
        row: dict[str, Any] = {b: g[0].values.get(b) for b in by}
        if probes:
            row = {"panel": g[0].panel, "encoder": g[0].encoder, **row}
        ok = [p for p in g if better_or_equal(p.value, reach, maximize)]
        if ok:
            hit = min(ok, key=lambda p: _num(p.values.get(axis)))
            row.update(smallest=hit.values.get(axis), value=hit.value, member=hit.member, reached=True)
        else:
            best = max(g, key=lambda p: p.value) if maximize else min(g, key=lambda p: p.value)
            row.update(smallest=None, best=best.value, best_at=best.values.get(axis), member=best.member)
            row["reached"] = False
        rows.append(row)
    cols = (["panel", "encoder"] if probes else []) + by
    short = axis.rsplit(".", 1)[-1]
    head = [c.rsplit(".", 1)[-1] for c in cols] + [f"smallest {short}", "metric", "member"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_fmt(r[c]) for c in cols]
        if r["reached"]:
            cells += [_fmt(r["smallest"]), f"{r['value']:.4g}", r["member"]]
        else:
            cells += [
                f"none reached (best {r['best']:.4g} at {short}={_fmt(r['best_at'])})",
                "-",
                r["member"],
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", rows


# ----------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    """The command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "runs", nargs="+", metavar="RUN", help="sweep output, run directory, or a directory of them"
    )
    ap.add_argument("--metric", default="loss", help="a key of metrics.jsonl (loss, acc/eval, ...) or top1")
    ap.add_argument("--stage", help="training stage whose metric is read (default: the last one logging it)")
    ap.add_argument("--series", help="sweep axis whose values make the curves (full key or unique suffix)")
    ap.add_argument("--label", help="sweep axis whose value labels each point")
    ap.add_argument("--task", help="top1: only this probe task (label)")
    ap.add_argument("--probe", help="top1: only this probe kind (linear_probe, attentive_probe)")
    d = ap.add_mutually_exclusive_group()
    d.add_argument("--minimize", action="store_true", help="lower is better (default for keys with 'loss')")
    d.add_argument("--maximize", action="store_true", help="higher is better (default otherwise)")
    ap.add_argument(
        "--partial", action="store_true", help="plot unfinished stages at their last logged FLOPs"
    )
    ap.add_argument(
        "--smallest", metavar="AXIS", help="threshold table: smallest AXIS value reaching --reach"
    )
    ap.add_argument("--reach", type=float, help="the metric value --smallest asks for")
    ap.add_argument("--by", default="", help="comma-separated axes the threshold table is grouped by")
    ap.add_argument("-o", "--output", help="output directory (default: {first RUN}/frontier)")
    return ap


def run(argv: list[str]) -> int:
    """Resolve, gather, mark, write and print; raises FrontierError on bad input."""
    a = parser().parse_args(argv)
    if (a.smallest is None) != (a.reach is None):
        raise FrontierError("--smallest AXIS and --reach VALUE go together; give both")
    members, axes = resolve_members(a.runs)
    series_axis = resolve_axis(a.series, axes) if a.series else None
    label_axis = resolve_axis(a.label, axes) if a.label else None
    small_axis = resolve_axis(a.smallest, axes) if a.smallest else None
    by = [resolve_axis(b.strip(), axes) for b in a.by.split(",") if b.strip()]
    maximize = a.maximize or (not a.minimize and "loss" not in a.metric)

    skipped: list[str] = []
    if a.metric in PROBE_METRICS:
        points, found = probe_points(members, a.metric, a.partial, skipped, a.task, a.probe)
        if not found:
            raise FrontierError(
                f"no member of {', '.join(a.runs)} holds a probe stage's results.json; '{a.metric}' is read "
                "from probe results (run the probe stages first, or name a key of metrics.jsonl)"
            )
    else:
        points, logged, keys = metric_points(members, a.metric, a.stage, a.partial, skipped)
        if not logged:
            where = f"stage '{a.stage}'" if a.stage else "any training stage"
            raise FrontierError(
                f"no member logs '{a.metric}' in {where}; keys in {members[0].name}'s metrics.jsonl: "
                f"{', '.join(keys) or 'none (no metrics.jsonl yet)'}"
            )
    for line in skipped:
        print(line, file=sys.stderr)
    if not points:
        raise FrontierError(f"no finished point to draw in {', '.join(a.runs)} (see the skipped lines above)")
    if series_axis:
        for p in points:
            v = _fmt(p.values.get(series_axis, "?"))
            short = series_axis.rsplit(".", 1)[-1]
            p.series = f"{p.series}, {short}={v}" if p.series else f"{short}={v}"
    mark_frontiers(points, maximize)

    out = a.output or _join(a.runs[0], "frontier")
    table = markdown_table(points, a.metric, label_axis)
    direction = "maximize" if maximize else "minimize"
    write_bytes(
        _join(out, "frontier.md"), f"# {a.metric} vs training FLOPs ({direction})\n\n{table}".encode()
    )
    doc = {
        "metric": a.metric,
        "direction": direction,
        "runs": a.runs,
        "series": series_axis,
        "points": [asdict(p) for p in points],
        "skipped": skipped,
    }
    write_bytes(_join(out, "frontier.json"), (json.dumps(doc, indent=2, default=str) + "\n").encode())
    write_bytes(_join(out, "frontier.png"), plot(points, a.metric, maximize, label_axis))
    print(table)
    written = [_join(out, f) for f in ("frontier.png", "frontier.md", "frontier.json")]
    if small_axis:
        if any(small_axis not in p.values for p in points):
            raise FrontierError(f"--smallest {a.smallest}: some members have no value on {small_axis}")
        md, rows = smallest(points, small_axis, a.reach, by, maximize)
        op = ">=" if maximize else "<="
        head = f"smallest {small_axis} with final {a.metric} {op} {a.reach:g}"
        print(f"{head}:\n\n{md}")
        write_bytes(_join(out, "smallest.md"), f"# {head}\n\n{md}".encode())
        blob = {"axis": small_axis, "reach": a.reach, "direction": direction, "by": by, "rows": rows}
        write_bytes(_join(out, "smallest.json"), (json.dumps(blob, indent=2, default=str) + "\n").encode())
        written += [_join(out, "smallest.md"), _join(out, "smallest.json")]
    print("wrote " + ", ".join(written))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: 0 on success, 2 with a message on stderr for bad input."""
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except FrontierError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
