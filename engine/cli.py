"""Command line: `engine [run] SPEC [overrides]`, `launch`, `validate`, `plan`, `schema`, `sample`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from schemas import Spec, SpecError, dump_spec, load_spec

COMMANDS = ("run", "launch", "validate", "plan", "schema", "sample")
USER_ERROR = 2


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


# ----------------------------------------------------------------------------- validate / schema / plan


def cmd_validate(argv: Sequence[str]) -> int:
    """Validate spec files; print one line per problem; exit 0 when all are valid, 2 otherwise."""
    p = argparse.ArgumentParser(prog="engine validate", description="Check spec files without running them.")
    p.add_argument("specs", nargs="+", help="spec files, then optional key.path=value overrides")
    p.add_argument(
        "--explain", action="store_true", help="print each resolved spec with every field's description"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    a = p.parse_intermixed_args(argv)
    files, overrides = _split(a.specs)
    bad = 0
    for f in files:
        try:
            spec = load_spec(f, overrides)
        except SpecError as e:
            bad += 1
            for issue in e.issues:
                print(issue)
            continue
        if a.explain:
            print(explain(spec))
        elif not a.quiet:
            print(
                f"{f}: ok ({len(spec.stages)} stage{'s' * (len(spec.stages) != 1)}: {', '.join(spec.stages)})"
            )
    return USER_ERROR if bad else 0


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
                lines.append(f"{pad}{k}:")
                walk(v, indent + 1)
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                lines.append(f"{pad}- # [{i}]")
                walk(v, indent + 1)

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
        sys.stdout.write(text)
    return 0


def json_schema() -> str:
    """The JSON Schema text committed as schemas/spec.schema.json."""
    schema = Spec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Engine spec"
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def cmd_plan(argv: Sequence[str]) -> int:
    """Print the plan of a spec: parameters, FLOPs, memory per rank and launch commands."""
    p = argparse.ArgumentParser(prog="engine plan", description="What a spec will cost, without running it.")
    p.add_argument("spec", help="spec file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    a = p.parse_intermixed_args(argv)
    spec = _load(a.spec, a.overrides)
    if spec is None:
        return USER_ERROR
    from engine.plan import make_plan

    plan = make_plan(spec, a.spec, a.overrides)
    print(json.dumps(plan.to_dict(), indent=2) if a.json else plan.render())
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
    from engine.data.stream import counter_rng

    try:
        gen = registry.build_data(spec.stages[name].data)
        ex = gen.sample(counter_rng(a.seed), a.n, a.split)
    except AttributeError:
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
    a = p.parse_intermixed_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    _setup_logging(rank)
    spec = _load(a.spec, a.overrides, report=rank == 0)
    if spec is None:
        return USER_ERROR
    if a.stage and a.stage not in spec.stages:
        return _fail(f"--stage {a.stage!r} is not a stage of {a.spec}; stages: {', '.join(spec.stages)}")

    from engine.plan import make_plan
    from engine.runtime import distributed
    from engine.runtime.checkpoint import write_bytes, write_json
    from engine.runtime.lease import LeaseError, take
    from engine.runtime.signals import Aborted
    from engine.runtime.trainer import LaunchError, NonFiniteLoss, Preempted, run_spec
    from engine.runtime.watchdog import watch_launcher

    log = logging.getLogger("engine")
    watch_launcher()  # under torchrun: stop (checkpoint, exit) when the launcher dies
    try:
        dist = distributed.init(spec.resources.device)
    except LaunchError as e:
        return _fail(str(e))
    code = 0
    lease = None
    try:
        lease = take(spec.run.output, dist)  # one writer per run directory; before anything is written
        plan = make_plan(spec, a.spec, a.overrides)
        if dist.main:
            out = spec.run.output.rstrip("/")
            write_bytes(f"{out}/spec.yaml", dump_spec(spec).encode())
            write_json(f"{out}/plan.json", plan.to_dict())
            if dist.world != spec.resources.world:
                log.info(
                    "note: running on %d rank(s); resources asks for %d", dist.world, spec.resources.world
                )
        results = run_spec(spec, dist, a.stage)
        if lease is not None:
            lease.check()  # lost while the last steps or final/ were written
        if dist.main:
            for name, metrics in results.items():
                if metrics:
                    log.info("%s: %s", name, "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
            table = probe_table(spec, results)
            if table:
                log.info("%s", table)
    except (LaunchError, LeaseError) as e:
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
        code = 3
    except Preempted as e:
        if dist.main:  # every rank stops; one says so
            log.warning("%s", e)
        code = 128 + e.signum
    finally:
        if lease is not None:
            lease.release()
        dist.close()
    return code


def probe_table(spec: Spec, results: dict[str, dict[str, float]]) -> str:
    """Frozen-probe top-1 of every probe stage side by side: which encoder, which task, how good."""
    rows = []
    for name, stage in spec.stages.items():
        if stage.kind != "probe" or "top1" not in results.get(name, {}):
            continue
        enc = stage.encoder
        encoder = f"random ({enc.random})" if hasattr(enc, "random") else getattr(enc, "stage", "checkpoint")
        task = getattr(stage.data, "label", None) or stage.data.kind
        rows.append((name, encoder, task, results[name]["top1"], 1 / stage.data.num_classes))
    if not rows:
        return ""
    lines = ["", f"{'probe':<22}{'encoder':<20}{'task':<12}{'top-1':>7}{'chance':>8}"]
    lines += [f"{n:<22}{e:<20}{t:<12}{a:>7.3f}{c:>8.3f}" for n, e, t, a, c in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m engine`, `torchrun -m engine` and the `engine` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print(
            "usage: engine [run] SPEC [key=value ...] [--stage NAME] | launch [torchrun options] SPEC [key=value ...] | "
            "validate SPEC... | plan SPEC [--json] | "
            "schema [-o FILE] | sample SPEC [--stage S] [--split eval] [-n 4]"
        )
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
        "schema": cmd_schema,
        "sample": cmd_sample,
    }[command](rest)
