"""The run directory holds what its spec says: stage fingerprints, `spec.yaml` and the history of its changes.

A stage's *identity* is everything that determines its result: its resolved config without the fields a config
class marks `OPERATIONAL` (logging, evaluation and checkpoint periods, micro-batching, sharding options), the run
seed, the compute precision the device resolves to, and the identities of the stages whose weights or configs it
uses. Its digest is recorded in `{output}/{stage}/fingerprint.json` when the stage starts. A rerun whose identity
differs from the recorded one for a stage that holds results (checkpoints or `final/`) is refused with the fields
that differ, unless every difference is a field its config class lists in `ON_RESUME` (`schedule.steps`) and the
user accepts it (`--accept-changes`). `spec.yaml` is only rewritten once every stage agrees, and each accepted
spec is appended to `spec_history.jsonl`.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from schemas import Spec, dump_spec

from .checkpoint import exists, read_json, write_bytes, write_json

log = logging.getLogger("engine")

FINGERPRINT = "fingerprint.json"
HISTORY = "spec_history.jsonl"
MISSING = "<absent>"


class RunDirConflict(RuntimeError):
    """The run directory holds results of a different spec; nothing was run or written."""


# ----------------------------------------------------------------------------- where the run writes


def check_output(output: str) -> None:
    """Refuse an output the run cannot keep: one only this process can see (memory://), or one it cannot write
    (checked by creating the directory and a probe file before any compute)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(output)
    if "memory" in fs.protocol:
        raise RunDirConflict(
            f"run.output={output} is in this process's memory and is lost when the run exits (each rank has its "
            "own); write to a local path, a shared filesystem or an object store (s3://, gs://, ...). memory:// is "
            "for tests that call engine.runtime.trainer.run_spec in-process"
        )
    probe = f"{path.rstrip('/')}/.write-test-{socket.gethostname()}-{os.getpid()}"
    try:
        fs.makedirs(path, exist_ok=True)
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except OSError as e:
        reason = e.strerror or str(e)
        raise RunDirConflict(
            f"run.output={output} is not writable ({reason}); choose a directory you can write, e.g. "
            "run.output=runs/<name>, or fix its permissions"
        ) from None


# ----------------------------------------------------------------------------- identity


def _walk(obj: Any, path: str, out: dict[str, Any], resumable: set[str], refs: list[tuple[str, Any]]) -> None:
    """Flatten a config into `out` (dotted path -> JSON value), skipping OPERATIONAL fields; collect the paths
    of ON_RESUME fields and of references to other stages (objects with a `stage` or `random` field)."""
    if isinstance(obj, BaseModel):
        cls = type(obj)
        skip = getattr(cls, "OPERATIONAL", frozenset())
        later = getattr(cls, "ON_RESUME", frozenset())
        names = set(cls.model_fields)
        if names in ({"stage"}, {"random"}):  # a reference to another stage of the run
            refs.append((path, obj))
        for name, info in cls.model_fields.items():
            if name in skip or name == "extends":
                continue
            key = f"{path}.{info.alias or name}" if path else (info.alias or name)
            if name in later:
                resumable.add(key)
            _walk(getattr(obj, name), key, out, resumable, refs)
    elif isinstance(obj, dict):
        if not obj:
            out[path] = {}
        for k, v in obj.items():
            _walk(v, f"{path}.{k}", out, resumable, refs)
    elif isinstance(obj, list | tuple):
        if not obj:
            out[path] = []
        for i, v in enumerate(obj):
            _walk(v, f"{path}.{i}", out, resumable, refs)
    else:
        out[path] = obj


@dataclass
class Identity:
    """What determines a stage's result, flattened to dotted paths, and which of them may change on resume."""

    fields: dict[str, Any]
    resumable: set[str] = field(default_factory=set)

    @property
    def digest(self) -> str:
        """A SHA-256 of the canonical JSON of the fields."""
        text = json.dumps(self.fields, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def stage_identity(
    spec: Spec, name: str, precision: str, _seen: dict[str, Identity] | None = None
) -> Identity:
    """The identity of stage `name`: its config (operational fields left out), the seed, the resolved compute
    precision, and the digest of every stage it refers to (the whole stage for weights, the model for `random`)."""
    seen = {} if _seen is None else _seen
    if name in seen:
        return seen[name]
    fields: dict[str, Any] = {}
    resumable: set[str] = set()
    refs: list[tuple[str, Any]] = []
    _walk(spec.stages[name], f"stages.{name}", fields, resumable, refs)
    fields["run.seed"] = spec.run.seed
    fields[f"stages.{name}.precision"] = precision
    for path, ref in refs:
        if getattr(ref, "stage", None) in spec.stages:
            parent = stage_identity(spec, ref.stage, precision, seen)
            fields[f"{path} (stage {ref.stage!r} as trained)"] = parent.digest
        elif getattr(ref, "random", None) in spec.stages:
            model: dict[str, Any] = {}
            _walk(getattr(spec.stages[ref.random], "model", None), "", model, set(), [])
            fields[f"{path} (stage {ref.random!r}'s model)"] = Identity(model).digest
    seen[name] = Identity(fields, resumable)
    return seen[name]


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(path, old value, new value) for every path whose value differs, in path order."""
    keys = sorted(set(old) | set(new))
    return [
        (k, old.get(k, MISSING), new.get(k, MISSING))
        for k in keys
        if old.get(k, MISSING) != new.get(k, MISSING)
    ]


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str) if value != MISSING else MISSING
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------- the check


@dataclass
class StageState:
    """What a stage directory holds, and what this run will do about it."""

    name: str
    url: str
    identity: Identity
    recorded: dict[str, Any] | None  # the recorded fingerprint.json, if any
    finished: bool
    checkpoints: list[int]
    accepted: list[tuple[str, Any, Any]] = field(default_factory=list)

    @property
    def has_results(self) -> bool:
        """Whether the directory holds anything a rerun would reuse (complete checkpoints or final/)."""
        return self.finished or bool(self.checkpoints)


def _checkpoint_steps(url: str) -> list[int]:
    """Steps of the complete checkpoints under a stage's checkpoint URL (train_state.json present)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(root):
        return []
    steps = []
    for entry in fs.ls(root, detail=False):
        base = entry.rstrip("/").rsplit("/", 1)[-1]
        if (
            base.startswith("step-")
            and base[5:].isdigit()
            and fs.exists(f"{entry.rstrip('/')}/train_state.json")
        ):
            steps.append(int(base[5:]))
    return sorted(steps)


def _previous_spec(output: str) -> Spec | None:
    """The spec recorded in an older run directory (written before fingerprints existed), if it still loads."""
    import tempfile

    from schemas import SpecError, load_spec

    if not exists(f"{output}/spec.yaml"):
        return None
    import fsspec

    with fsspec.open(f"{output}/spec.yaml", "r") as f:
        text = f.read()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tmp:
        tmp.write(text)
    try:
        return load_spec(tmp.name, [])
    except SpecError:
        return None
    finally:
        os.unlink(tmp.name)


def inspect(spec: Spec, precision: dict[str, str]) -> list[StageState]:
    """The state of every stage directory of the run, with the identity this spec gives each stage."""
    output = spec.run.output.rstrip("/")
    seen: dict[str, Identity] = {}
    states = []
    for name, stage in spec.stages.items():
        url = f"{output}/{name}"
        ckpt = getattr(getattr(stage, "checkpoint", None), "url", None) or f"{url}/checkpoints"
        recorded = read_json(f"{url}/{FINGERPRINT}") if exists(f"{url}/{FINGERPRINT}") else None
        states.append(
            StageState(
                name,
                url,
                stage_identity(spec, name, precision[name], seen),
                recorded,
                exists(f"{url}/final/done.json"),
                _checkpoint_steps(ckpt),
            )
        )
    return states


def check(spec: Spec, precision: dict[str, str], accept: bool) -> list[StageState]:
    """Compare every stage that holds results with its recorded identity; raise RunDirConflict on a change that
    was not accepted (or cannot be). Returns the states, with the accepted differences filled in."""
    states = inspect(spec, precision)
    legacy: Spec | None = None
    problems: list[str] = []
    for s in states:
        if not s.has_results:
            continue
        if s.recorded is None:  # written by an engine without fingerprints: compare with its spec.yaml
            legacy = legacy or _previous_spec(spec.run.output.rstrip("/"))
            if legacy is None or s.name not in legacy.stages:
                log.warning(
                    "%s: no fingerprint recorded in %s (an older run directory); assuming it holds this spec",
                    s.name,
                    s.url,
                )
                continue
            old = stage_identity(legacy, s.name, precision[s.name]).fields
        else:
            old = s.recorded["fields"]
        diffs = differences(old, s.identity.fields)
        if not diffs:
            continue
        blocking = [d for d in diffs if d[0] not in s.identity.resumable]
        if not blocking and accept:
            problem = _unextendable(s, diffs)
            if problem is None:
                s.accepted = diffs
                continue
            problems.append(problem)
            continue
        problems.append(_refusal(spec, s, diffs, blocking))
    if problems:
        raise RunDirConflict("\n\n".join(problems))
    return states


def _unextendable(s: StageState, diffs: list[tuple[str, Any, Any]]) -> str | None:
    """Why an accepted `steps` change cannot apply to what the stage holds (None when it can)."""
    for path, old, new in diffs:
        if not path.endswith(".schedule.steps") or not isinstance(new, int):
            continue
        newest = s.checkpoints[-1] if s.checkpoints else 0
        if newest > new:
            return (
                f"stage {s.name}: schedule.steps={new} is below its newest checkpoint (step {newest}); "
                f"a run cannot be shortened past what it has trained. Use a new run.output"
            )
        if s.finished and isinstance(old, int) and new < old:
            return (
                f"stage {s.name}: schedule.steps={new} is below the {old} steps its final/ was trained for; "
                "a finished stage can be extended, not shortened. Use a new run.output"
            )
    return None


def _refusal(spec: Spec, s: StageState, diffs: list[tuple[str, Any, Any]], blocking: list) -> str:
    """The message that refuses a changed stage: what differs and the ways out."""
    held = "final weights" if s.finished else f"a checkpoint at step {s.checkpoints[-1]}"
    lines = [
        f"stage {s.name}: {s.url} holds {held} of a different spec; fields that differ (recorded -> now):"
    ]
    lines += [f"  {p}: {_shown(a)} -> {_shown(b)}" for p, a, b in diffs[:20]]
    if len(diffs) > 20:
        lines.append(f"  ... and {len(diffs) - 20} more")
    recorded = f"{spec.run.output.rstrip('/')}/spec.yaml"
    lines.append("Nothing was run or written. To go on, either")
    lines.append("  - write to a new directory: run.output=<new path>, or")
    if not blocking:
        lines.append(f"  - revert these fields (the recorded spec is {recorded}), or")
        lines.append(
            "  - accept the change: rerun with --accept-changes"
            + (" (final/ is set aside and the stage resumes from its last checkpoint)" if s.finished else "")
        )
        return "\n".join(lines)
    if any("(stage " in p for p, _, _ in blocking):
        lines.append(f"  - revert these fields (the recorded spec is {recorded}), or")
        lines.append(f"  - retrain this stage from the changed stage it uses: move {s.url} aside.")
    else:
        lines.append(f"  - revert these fields (the recorded spec is {recorded}).")
    safe = sorted({p.split(".", 2)[-1] for p in s.identity.resumable})
    lines.append(
        f"Only {', '.join(safe) or 'no field'} may change on resume (with --accept-changes); logging, evaluation, "
        "checkpoint and sharding settings change freely."
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- recording


def _rename(url: str, suffix: str) -> str:
    """Move a directory aside (never deleted): `final` -> `final.superseded-<UTC time>`."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    target = f"{path}.{suffix}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    fs.mv(path, target, recursive=True)
    return target


def record(spec: Spec, states: list[StageState], argv: list[str]) -> None:
    """After a successful check (rank 0): apply accepted changes, then write spec.yaml and its history entry."""
    output = spec.run.output.rstrip("/")
    for s in states:
        if not s.accepted:
            continue
        changes = ", ".join(f"{p.split('.', 2)[-1]} {_shown(a)} -> {_shown(b)}" for p, a, b in s.accepted)
        if s.finished:
            moved = _rename(f"{s.url}/final", "superseded")
            log.info(
                "%s: accepted %s; its final/ is set aside as %s and the stage resumes", s.name, changes, moved
            )
        else:
            log.info("%s: accepted %s", s.name, changes)
        write_fingerprint(s.url, s.identity)
    text = dump_spec(spec)
    previous = None
    if exists(f"{output}/spec.yaml"):
        import fsspec

        with fsspec.open(f"{output}/spec.yaml", "r") as f:
            previous = f.read()
    if previous != text:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": socket.gethostname(),
            "user": _user(),
            "argv": argv,
            "accepted": {s.name: [[p, a, b] for p, a, b in s.accepted] for s in states if s.accepted},
            "spec": text,
        }
        _append(f"{output}/{HISTORY}", json.dumps(entry, default=str) + "\n")
        write_bytes(f"{output}/spec.yaml", text.encode())


def write_fingerprint(stage_url: str, identity: Identity) -> None:
    """Record a stage's identity (written when the stage starts, and when a change is accepted)."""
    write_json(
        f"{stage_url}/{FINGERPRINT}",
        {"digest": identity.digest, "fields": identity.fields, "resumable": sorted(identity.resumable)},
    )


def _append(url: str, line: str) -> None:
    """Append a line to a small file (read and rewrite on object stores, which cannot append)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    old = fs.cat_file(path).decode() if fs.exists(path) else ""
    write_bytes(url, (old + line).encode())


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
