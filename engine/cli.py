"""Command line: `engine [run] SPEC [overrides]`, `launch`, `validate`, `plan`, `sbatch`, `schema`, `sample`,
`evaluate`."""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from schemas import Issue, Spec, SpecError, load_spec
from schemas.sweep import SweepPlan

COMMANDS = ("run", "launch", "validate", "plan", "sbatch", "schema", "sample", "evaluate")
USER_ERROR = 2
PLAN_WARNED = 1  # `engine plan --strict` on a plan with warnings
USAGE = (
    "usage: engine [run] SPEC [key=value ...] [--stage NAME] [--member N] [--accept-changes] | "
    "launch [torchrun options] SPEC [key=value ...] | validate SPEC... [--format text|json|github] | "
    "plan SPEC [--json] [--strict] [--member N] | sbatch SPEC [-o FILE] [--parallel K] | schema [-o FILE] | "
    "sample SPEC [--stage S] [--split eval] [-n 4] | "
    "evaluate SPEC [key=value ...] --stage NAME"
)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return USER_ERROR


def _split(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate `key.path=value` overrides from the other positional words."""
    words = [a for a in args if "=" not in a or a.startswith("-")]
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    return words, overrides


def _load(path: str, overrides: Sequence[str], report: bool = True) -> Spec | None:
    """The validated spec, or None after printing every problem to stderr (only where `report`)."""
    try:
        return load_spec(path, list(overrides))
    except SpecError as e:
        if report:
            print(e, file=sys.stderr)
        return None


def _print(text: str = "") -> None:
    """print() to stdout that survives a reader that has left (`engine plan ... | head`): the rest is dropped."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# ----------------------------------------------------------------------------- validate / schema / plan

FORMATS = ("text", "json", "github")


def cmd_validate(argv: Sequence[str]) -> int:
    """Validate spec files and report every problem; exit 0 when all are valid, 2 otherwise.

    `--format text` prints one line per problem (and one per valid file), `json` one document with every
    file and its problems, `github` GitHub Actions error annotations.
    """
    p = argparse.ArgumentParser(prog="engine validate", description="Check spec files without running them.")
    p.add_argument("specs", nargs="+", help="spec files, then optional key.path=value overrides")
    p.add_argument(
        "--explain", action="store_true", help="print each resolved spec with every field's description"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help="text (one line per problem), json (one document) or github (Actions annotations)",
    )
    a = p.parse_intermixed_args(argv)
    if a.explain and a.format != "text":
        return _fail("--explain prints text; leave out --format or use --format text")
    files, overrides = _split(a.specs)
    if not files:
        return _fail("no spec file given (only key.path=value overrides)")
    results: list[tuple[str, Spec | None, list[Issue]]] = []
    members: dict[str, int] = {}  # sweeps: how many members each file makes
    for f in files:
        try:
            spec = load_spec(f, overrides)
            if spec.sweep is not None:
                from engine.sweep import load

                members[f] = len(load(f, overrides).members)
            results.append((f, spec, []))
        except SpecError as e:
            results.append((f, None, e.issues))
    bad = sum(spec is None for _, spec, _ in results)
    if a.format == "json":
        report = validation_report(results, overrides)
        for entry in report["files"]:
            if entry["file"] in members:
                entry["members"] = members[entry["file"]]
        _print(json.dumps(report, indent=2))
    elif a.format == "github":
        for f, _, issues in results:
            for issue in issues:
                _print(github_annotation(issue, f))
        problems = sum(len(issues) for _, _, issues in results)
        _print(f"engine validate: {len(files) - bad} of {len(files)} spec(s) valid, {problems} problem(s)")
    else:
        for f, spec, issues in results:
            if spec is None:
                for issue in issues:
                    _print(str(issue))
            elif a.explain:
                _print(explain(spec))
            elif not a.quiet:
                stages = spec.stages
                swept = f"sweep of {members[f]} members; " if f in members else ""
                _print(f"{f}: ok ({swept}{len(stages)} stage{'s' * (len(stages) != 1)}: {', '.join(stages)})")
    return USER_ERROR if bad else 0


def _origin(issue: Issue, spec_file: str) -> tuple[str, str | None]:
    """(the file a problem lies in, the override it comes from): override problems lie in the spec file."""
    source = issue.where.source
    if source.startswith("override "):
        try:
            return spec_file, str(ast.literal_eval(source.removeprefix("override ")))
        except (ValueError, SyntaxError):
            return spec_file, source
    return source, None


def validation_report(
    results: Sequence[tuple[str, Spec | None, Sequence[Issue]]], overrides: Sequence[str] = ()
) -> dict[str, object]:
    """What `engine validate --format json` prints: every file, whether it is valid, and its problems."""
    files = []
    for f, spec, issues in results:
        problems = []
        for issue in issues:
            where, override = _origin(issue, f)
            problems.append(
                {
                    "file": where,
                    "line": issue.where.line or None,
                    "column": issue.where.col or None,
                    "path": issue.path,
                    "message": issue.message,
                    "override": override,
                }
            )
        entry: dict[str, object] = {"file": f, "ok": spec is not None, "problems": problems}
        if spec is not None:
            entry["stages"] = list(spec.stages)
        files.append(entry)
    return {"ok": all(e["ok"] for e in files), "overrides": list(overrides), "files": files}


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotation(issue: Issue, spec_file: str) -> str:
    """One problem as a GitHub Actions workflow command: `::error file=F,line=L,col=C,title=T::MESSAGE`."""
    where, override = _origin(issue, spec_file)
    props = [f"file={_escape_property(where)}"]
    if issue.where.line:
        props += [f"line={issue.where.line}", f"col={issue.where.col}"]
    title = f"engine validate: {issue.path}" if issue.path else "engine validate"
    props.append(f"title={_escape_property(title)}")
    message = f"override {override!r}: {issue.message}" if override is not None else issue.message
    return f"::error {','.join(props)}::{_escape_data(message)}"


def explain(spec: Spec) -> str:
    """The resolved spec as YAML-like lines, each leaf annotated with its field description."""
    from pydantic import BaseModel

    lines: list[str] = []

    def walk(obj: object, indent: int) -> None:
        pad = "  " * indent
        if isinstance(obj, BaseModel):
            for name, field in type(obj).model_fields.items():
                if name == "extends":
                    continue  # already merged by the loader
                key = field.alias or name
                value = getattr(obj, name)
                doc = f"  # {field.description}" if field.description else ""
                if isinstance(value, BaseModel | dict) or (
                    isinstance(value, list) and value and isinstance(value[0], BaseModel)
                ):
                    lines.append(f"{pad}{key}:{doc}")
                    walk(value, indent + 1)
                else:
                    shown = json.dumps(list(value) if isinstance(value, tuple) else value)
                    lines.append(f"{pad}{key}: {shown}{doc}")
        elif isinstance(obj, dict):
            for k, v in obj.items():
                if nested(v):
                    lines.append(f"{pad}{k}:")
                    walk(v, indent + 1)
                else:  # plain data (a sweep's values): as JSON on one line
                    lines.append(f"{pad}{k}: {json.dumps(v)}")
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                if nested(v):
                    lines.append(f"{pad}- # [{i}]")
                    walk(v, indent + 1)
                else:
                    lines.append(f"{pad}- {json.dumps(v)}")

    def nested(v: object) -> bool:
        """Whether a value holds spec models (walked field by field) rather than plain data."""
        if isinstance(v, BaseModel):
            return True
        items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        return any(nested(x) for x in items)

    walk(spec, 0)
    return "\n".join(lines)


def cmd_schema(argv: Sequence[str]) -> int:
    """Write the JSON Schema of the spec language (for editors)."""
    p = argparse.ArgumentParser(prog="engine schema", description="Print or write the spec's JSON Schema.")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    a = p.parse_intermixed_args(argv)
    text = json_schema()
    if a.output:
        with open(a.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        _print(text.removesuffix("\n"))
    return 0


def json_schema() -> str:
    """The JSON Schema text committed as schemas/spec.schema.json."""
    schema = Spec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Engine spec"
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def cmd_plan(argv: Sequence[str]) -> int:
    """Print the plan of a spec: parameters, FLOPs, memory per rank and launch commands, then any warnings.

    Exit 0, or 1 with `--strict` when the plan warns (a stage that cannot fit its device), 2 on a bad spec.
    """
    p = argparse.ArgumentParser(prog="engine plan", description="What a spec will cost, without running it.")
    p.add_argument("spec", help="spec file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (with its warnings)")
    p.add_argument("--strict", action="store_true", help="exit 1 when the plan warns (for CI)")
    p.add_argument("--member", help="a sweep's member (number or name): its full plan instead of the table")
    a = p.parse_intermixed_args(argv)
    spec = _load(a.spec, a.overrides)
    if spec is None:
        return USER_ERROR
    from engine.plan import make_plan

    runs = _members(a.spec, a.overrides, spec, a.member)
    if isinstance(runs, int):
        return runs
    if spec.sweep is not None and a.member is None:
        from engine import sweep as sweeps

        described = sweeps.describe(runs.sweep)
        warnings = [
            f"member {m.index} {m.name}: {w}"
            for m in runs.sweep.members
            for w in make_plan(m.spec).warnings()
        ]
        if a.json:
            _print(json.dumps({**described, "warnings": warnings}, indent=2))
        else:
            _print(sweeps.render(runs.sweep, described))
        for w in warnings:
            print(f"warning: {a.spec}: {w}", file=sys.stderr)
        return PLAN_WARNED if a.strict and warnings else 0
    spec, launch_args = runs.runs[0][1], runs.runs[0][2]
    plan = make_plan(spec, a.spec, launch_args)
    warnings = plan.warnings()
    _print(json.dumps({**plan.to_dict(), "warnings": warnings}, indent=2) if a.json else plan.render())
    for w in warnings:
        print(f"warning: {a.spec}: {w}", file=sys.stderr)
    return PLAN_WARNED if a.strict and warnings else 0


def cmd_sbatch(argv: Sequence[str]) -> int:
    """Print (or write) the sbatch script of a spec: a job array with one task per member for a sweep."""
    p = argparse.ArgumentParser(
        prog="engine sbatch",
        description="An sbatch script for the spec's resources; for a sweep, a job array of its members.",
    )
    p.add_argument("spec", help="spec file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--parallel", type=int, help="a sweep: at most this many members at once (--array=...%%K)")
    a = p.parse_intermixed_args(argv)
    if a.parallel is not None and a.parallel < 1:
        return _fail(f"--parallel {a.parallel}: give at least 1")
    spec = _load(a.spec, a.overrides)
    if spec is None:
        return USER_ERROR
    from engine.plan.launch import sbatch_script

    if spec.sweep is None:
        text = sbatch_script(spec, a.spec, a.overrides)
    else:
        from engine import sweep as sweeps

        try:
            text = sweeps.sbatch_array(sweeps.load(a.spec, a.overrides), spec, a.parallel)
        except SpecError as e:
            print(e, file=sys.stderr)
            return USER_ERROR
        except ValueError as e:
            return _fail(str(e))
    if a.output:
        with open(a.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        _print(text.removesuffix("\n"))
    return 0


def cmd_sample(argv: Sequence[str]) -> int:
    """Print rendered examples of a stage's data, so the data can be inspected before any compute."""
    p = argparse.ArgumentParser(
        prog="engine sample", description="Show examples of a stage's data generator."
    )
    p.add_argument("spec")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--stage", help="stage name (default: the first)")
    p.add_argument("--split", default="train", help="data split (default train)")
    p.add_argument("-n", type=int, default=4, help="number of examples")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    a = p.parse_intermixed_args(argv)
    spec = _load(a.spec, a.overrides)
    if spec is None:
        return USER_ERROR
    name = a.stage or next(iter(spec.stages))
    if name not in spec.stages:
        return _fail(f"no stage {name!r}; stages: {', '.join(spec.stages)}")
    from engine import registry
    from engine.data.base import UnknownSplit
    from engine.data.stream import counter_rng

    data = getattr(spec.stages[name], "data", None)
    if data is None:
        return _fail(f"stage {name!r} has no data of its own (its models' stages have); sample one of those")
    try:
        gen = registry.build_data(data)
        ex = gen.sample(counter_rng(a.seed), a.n, a.split)
    except UnknownSplit:
        return _fail(f"split {a.split!r} does not exist for {spec.stages[name].data.kind}")
    except FileNotFoundError as e:
        return _fail(f"stages.{name}.data: {e}; point it at your data by override (key.path=value)")
    try:
        for i in range(len(ex)):
            print(gen.render(ex[i]), flush=True)
    except BrokenPipeError:  # `engine sample ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


# ----------------------------------------------------------------------------- run


def _setup_logging(rank: int) -> None:
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(message)s" if rank == 0 else f"[rank {rank}] %(message)s",
        stream=sys.stdout,
        force=True,
    )


def cmd_run(argv: Sequence[str]) -> int:
    """Run every stage of a spec (under torchrun or as a single process)."""
    p = argparse.ArgumentParser(prog="engine", description="Run a spec: torchrun -m engine SPEC [overrides].")
    p.add_argument("spec", help="spec file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--stage", help="run only this stage")
    p.add_argument(
        "--accept-changes",
        action="store_true",
        help="resume stages whose spec changed in fields that may change on resume (schedule.steps)",
    )
    p.add_argument("--member", help="a sweep: run only this member (number or name), e.g. a SLURM array task")
    a = p.parse_intermixed_args(argv)

    def work(spec: Spec, dist, identities) -> dict[str, dict[str, float]]:
        from engine.runtime.trainer import run_spec

        return run_spec(spec, dist, a.stage, identities)

    return _launch(a, argv, work)


def cmd_evaluate(argv: Sequence[str]) -> int:
    """Run a stage's evaluators on its final weights, without training (under torchrun or one process)."""
    p = argparse.ArgumentParser(
        prog="engine evaluate",
        description="Evaluate a finished stage's weights: engine evaluate SPEC --stage NAME.",
    )
    p.add_argument("spec", help="spec file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--stage", required=True, help="the stage whose evaluators run on its final weights")
    p.add_argument("--member", help="a sweep: evaluate this member (number or name)")
    a = p.parse_intermixed_args(argv)
    a.accept_changes = False

    def work(spec: Spec, dist, identities) -> dict[str, dict[str, float]]:
        from engine.runtime.trainer import evaluate_stage

        return {a.stage: evaluate_stage(spec, dist, a.stage)}

    return _launch(a, ["evaluate", *argv], work)


@dataclass
class _Runs:
    """What a command runs: the spec itself, or members of its sweep (each with the args that select it)."""

    sweep: SweepPlan | None
    runs: list[tuple[str | None, Spec, list[str]]]  # (member label, spec, arguments of its launch line)


def _members(
    path: str, overrides: Sequence[str], spec: Spec, member: str | None, report: bool = True
) -> _Runs | int:
    """The runs of a spec: itself, every member of its sweep, or the one `--member` names; else an exit code."""
    if spec.sweep is None:
        if member is not None:
            return _fail(f"--member {member}: {path} has no sweep block; leave out --member")
        return _Runs(None, [(None, spec, list(overrides))])
    from engine import sweep as sweeps

    try:
        sweep = sweeps.load(path, overrides, only=member)  # one member: the others are not priced
    except SpecError as e:
        if report:
            print(e, file=sys.stderr)
        return USER_ERROR
    except ValueError as e:  # no such member
        return _fail(str(e)) if report else USER_ERROR
    return _Runs(
        sweep,
        [
            (f"member {m.index}/{sweep.total} {m.name}", m.spec, [*overrides, "--member", m.name])
            for m in sweep.members
        ],
    )


def _launch(a: argparse.Namespace, argv: Sequence[str], work) -> int:
    """Load the spec, start the process group, and run `work(spec, dist, identities)` on it, or on each member of
    its sweep in turn (a member that ends with a non-finite loss does not stop the others); the exit status
    says how it ended (0, 2 user error, 3 non-finite loss, 128+sig)."""
    rank = int(os.environ.get("RANK", "0"))
    _setup_logging(rank)
    spec = _load(a.spec, a.overrides, report=rank == 0)
    if spec is None:
        return USER_ERROR
    if a.stage and a.stage not in spec.stages:
        return _fail(f"--stage {a.stage!r} is not a stage of {a.spec}; stages: {', '.join(spec.stages)}")
    runs = _members(a.spec, a.overrides, spec, a.member, report=rank == 0)
    if isinstance(runs, int):
        return runs

    from engine.runtime import distributed
    from engine.runtime.trainer import LaunchError
    from engine.runtime.watchdog import watch_launcher

    log = logging.getLogger("engine")
    watch_launcher()  # under torchrun: stop (checkpoint, exit) when the launcher dies
    try:
        dist = distributed.init(spec.resources.device)
    except LaunchError as e:
        return _fail(str(e))
    failed: list[str] = []
    code = 0
    try:
        if runs.sweep is not None and dist.main:
            code = _describe_sweep(a, runs.sweep)
        for label, member, args in runs.runs if not code else ():
            if label is not None and dist.main:
                log.info("== %s: %s", label, member.run.output)
            rerun = (
                argv if a.member or label is None else [*argv, "--member", args[-1]]
            )  # for the spec history
            code = _run_one(a, rerun, member, args, dist, work)
            if code == NON_FINITE and label is not None:
                failed.append(label)  # the other members are independent runs: go on
                continue
            if code:
                break
    finally:
        dist.close()
    if failed and not code:
        if dist.main:
            log.error("error: %d member(s) stopped on a non-finite loss: %s", len(failed), "; ".join(failed))
        code = NON_FINITE
    return code


NON_FINITE = 3  # exit status of a run stopped by a non-finite loss


def _describe_sweep(a: argparse.Namespace, sweep: SweepPlan) -> int:
    """Write `{output}/sweep.json` for the tools (a single member's run writes it only when it is missing: the
    other members are then planned once); 0, or the exit status of an output that cannot be written."""
    from engine import sweep as sweeps
    from engine.runtime.checkpoint import exists, write_json
    from engine.runtime.rundir import RunDirConflict, check_output

    url = f"{sweep.output}/sweep.json"
    try:
        check_output(sweep.output)
        if a.member is not None and exists(url):
            return 0
        whole = sweeps.load(sweep.path, sweep.overrides) if a.member is not None else sweep
        write_json(url, sweeps.describe(whole))
    except (RunDirConflict, OSError) as e:
        return _fail(f"cannot write {url}: {e}")
    return 0


def _run_one(a: argparse.Namespace, argv: Sequence[str], spec: Spec, args: list[str], dist, work) -> int:
    """Take the run directory's lease, check it against the spec, run `work` and report; the exit status."""
    from engine.plan import make_plan
    from engine.runtime import distributed
    from engine.runtime.checkpoint import write_json
    from engine.runtime.lease import LeaseError, take
    from engine.runtime.loader import DataWorkerError
    from engine.runtime.rundir import RunDirConflict, check_output
    from engine.runtime.signals import Aborted
    from engine.runtime.trainer import LaunchError, NonFiniteLoss, Preempted, prepare

    log = logging.getLogger("engine")
    code = 0
    lease = None
    try:
        check_output(spec.run.output)
        lease = take(spec.run.output, dist)  # one writer per run directory; before anything is written
        plan = make_plan(spec, a.spec, args)
        identities = prepare(spec, dist, a.accept_changes, ["engine", *argv])
        if dist.main:
            write_json(f"{spec.run.output.rstrip('/')}/plan.json", plan.to_dict())
            for warning in plan.warnings(distributed.device_memory_bytes(dist)):
                log.warning("warning: %s", warning)
            if dist.world != spec.resources.world:
                log.info(
                    "note: running on %d rank(s); resources asks for %d", dist.world, spec.resources.world
                )
        results = work(spec, dist, identities)
        if lease is not None:
            lease.check()  # lost while the last steps or final/ were written
        if dist.main:
            for name, metrics in results.items():
                if metrics:
                    log.info("%s: %s", name, "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    except (LaunchError, LeaseError, RunDirConflict) as e:
        code = _fail(str(e)) if dist.main else USER_ERROR
    except Aborted as e:
        if dist.main:
            log.error("error: %s", e)
        code = USER_ERROR
    except FileNotFoundError as e:
        code = (
            _fail(f"{e}; point the stage's data at your files by override (key.path=value)")
            if dist.main
            else 2
        )
    except NonFiniteLoss as e:
        if dist.main:
            log.error("error: %s", e)
        code = NON_FINITE
    except DataWorkerError as e:  # on this rank: say so whichever it is
        log.error("error: %s; rerun the same command to resume from the last checkpoint", e)
        code = 1
    except Preempted as e:
        if dist.main:  # every rank stops; one says so
            log.warning("%s", e)
        code = 128 + e.signum
    finally:
        if lease is not None:
            lease.release()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m engine`, `torchrun -m engine` and the `engine` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # a mistake: say how to use it, on stderr, and fail (scripts must not read it as success)
        print(USAGE, file=sys.stderr)
        print("error: no command or spec given; `engine --help` explains the commands", file=sys.stderr)
        return USER_ERROR
    if argv[0] in ("-h", "--help"):
        print(__doc__)
        print(USAGE)
        return 0
    command = argv[0] if argv[0] in COMMANDS else "run"
    rest = argv[1:] if argv[0] in COMMANDS else argv
    if command == "launch":
        from engine.launch import cmd_launch

        return cmd_launch(rest)
    return {
        "run": cmd_run,
        "validate": cmd_validate,
        "plan": cmd_plan,
        "sbatch": cmd_sbatch,
        "schema": cmd_schema,
        "sample": cmd_sample,
        "evaluate": cmd_evaluate,
    }[command](rest)
