"""Tests of the spec language end to end: a corpus of broken specs through `engine validate`, every spec in
specs/ validating (fast, without torch), the committed JSON Schema matching the models, and dump round trips.

Each file in tests/broken/ (except the helpers whose names start with `_`) starts with one header line per
problem that `python -m engine validate FILE` must report:

    # expect: [PARENT@]LINE:COL DOTTED.PATH MESSAGE-SUBSTRING

`PARENT@` names the file (relative to tests/broken/) that the problem lies in when it is not the file
itself (an error inside an extended file); a DOTTED.PATH of `-` means the problem has no key path (a YAML
syntax error). The output must hold exactly one line per header, each `FILE:LINE:COL: PATH: ...MESSAGE...`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

from engine.cli import json_schema, main
from schemas import Spec, SpecError, dump_spec, load_spec

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "tests" / "broken"
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
CASES = sorted(p for p in BROKEN.glob("*.yaml") if not p.name.startswith("_"))
HEADER = re.compile(
    r"^# expect: (?:(?P<file>[^@\s]+)@)?(?P<line>\d+):(?P<col>\d+) (?P<path>\S+) (?P<message>.+)$"
)
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@dataclass(frozen=True)
class Expect:
    """One problem a broken spec must report: the start of its output line, and part of its message."""

    prefix: str
    message: str


@dataclass(frozen=True)
class Result:
    """What a `python -m engine ...` subprocess did."""

    code: int
    stdout: str
    stderr: str


def rel(path: Path) -> str:
    """A path as the CLI prints it when run from the repository root with a relative argument."""
    return os.path.relpath(path, ROOT)


def expectations(case: Path) -> list[Expect]:
    """The `# expect:` headers at the top of a broken spec."""
    out = []
    for line in case.read_text(encoding="utf-8").splitlines():
        if not line.startswith("# expect:"):
            break
        m = HEADER.match(line)
        assert m, f"{rel(case)}: malformed header {line!r}"
        source = rel(BROKEN / m["file"]) if m["file"] else rel(case)
        where = f"{os.path.normpath(source)}:{m['line']}:{m['col']}: "
        out.append(Expect(where if m["path"] == "-" else f"{where}{m['path']}: ", m["message"]))
    assert out, f"{rel(case)} has no `# expect:` header"
    return out


def engine(*args: str, cwd: Path = ROOT) -> Result:
    """Run `python -m engine ARGS` in a fresh interpreter."""
    p = subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120
    )
    return Result(p.returncode, p.stdout, p.stderr)


# One fresh interpreter runs `engine validate FILE` once per file, as `python -m engine validate FILE` would
# (its exit status is what `main` returns), capturing each run's output and any traceback. A new interpreter
# per file would cost ~0.2 s of CPU each (importing pydantic and building the models), far over the budget
# of this suite; `test_driver_agrees_with_python_m_engine` checks that the two give the same answers.
DRIVER = """
import contextlib, io, json, sys, traceback
from engine.cli import main
results = {}
for path in sys.argv[1:]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["validate", path])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
    results[path] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(results))
"""


@cache
def validate_all_broken() -> dict[str, Result]:
    """`engine validate CASE` for every broken spec, each run on its own, all in one fresh interpreter."""
    files = [rel(c) for c in CASES]
    p = subprocess.run(
        [sys.executable, "-c", DRIVER, *files], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stdout + p.stderr
    results = json.loads(p.stdout)
    return {Path(f).name: Result(r["code"], r["stdout"], r["stderr"]) for f, r in results.items()}


# ----------------------------------------------------------------------------- the broken corpus


def test_corpus_is_large_and_covers_the_promised_mistakes() -> None:
    names = {c.stem for c in CASES}
    assert len(names) >= 30
    must = set(
        "unknown_key unknown_top_key wrong_type bad_model_kind bad_data_kind bad_position_kind bad_ffn_kind "
        "bad_optim_kind bad_evals_kind unsafe_tag extends_cycle error_in_parent yaml_syntax_error".split()
    )
    assert must <= names


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_broken_spec_is_reported_at_its_place(case: Path) -> None:
    expects = expectations(case)
    r = validate_all_broken()[case.name]
    out = r.stdout + r.stderr
    assert r.code == 2, f"exit {r.code}, expected 2; output:\n{out}"
    assert "Traceback" not in out, out
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    for e in expects:
        hits = [line for line in lines if line.startswith(e.prefix) and e.message in line]
        assert hits, f"no line starting {e.prefix!r} containing {e.message!r} in:\n{out}"
    assert len(lines) == len(expects), f"expected exactly {len(expects)} problem line(s), got:\n{out}"


SAMPLE = ["unknown_key", "yaml_syntax_error", "error_in_parent", "unsafe_tag"]


def test_driver_agrees_with_python_m_engine() -> None:
    cases = [BROKEN / f"{name}.yaml" for name in SAMPLE]
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        real = list(pool.map(lambda case: engine("validate", rel(case)), cases))
    for case, r in zip(cases, real, strict=True):
        driven = validate_all_broken()[case.name]
        assert (r.code, r.stdout) == (driven.code, driven.stdout), case.name
        assert r.code == 2 and "Traceback" not in r.stderr, r.stderr


def test_three_independent_mistakes_are_all_reported_in_source_order() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(str(BROKEN / "three_mistakes.yaml"))
    issues = info.value.issues
    assert [(i.path, i.where.line) for i in issues] == [
        ("stages.train.model.heads", 8),
        ("stages.train.schedule.warmup", 9),
        ("stages.finetune.optim.kind", 13),
    ]
    assert str(info.value).splitlines() == [str(i) for i in issues]


def test_problems_in_several_files_are_reported_by_one_validate_call() -> None:
    files = [rel(BROKEN / "unknown_key.yaml"), rel(BROKEN / "wrong_type.yaml"), rel(BROKEN / "_base.yaml")]
    r = engine("validate", *files)
    assert r.code == 2
    assert f"{files[0]}:6:7: stages.train.model.dpeth: unknown key" in r.stdout
    assert f"{files[1]}:6:14: stages.train.model.depth: " in r.stdout
    assert f"{files[2]}: ok" in r.stdout


# ----------------------------------------------------------------------------- the specs in specs/


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_spec_in_specs_validates(spec: Path) -> None:
    loaded = load_spec(str(spec))
    assert isinstance(loaded, Spec) and loaded.stages


def test_validate_cli_accepts_all_specs() -> None:
    assert SPECS, "specs/ holds no spec"
    r = engine("validate", *(rel(s) for s in SPECS))
    assert r.code == 0, r.stdout + r.stderr
    assert r.stdout.count(": ok (") == len(SPECS)


def test_validate_does_not_import_torch_and_is_fast() -> None:
    """Every spec validates in one process without torch; the plain specs in under a second together. A sweep
    whose budget prices masked-video stages draws their masks to derive each member's steps (salt_frontier:
    about 2 s), so sweeps get a second each on top."""
    files = [rel(s) for s in SPECS]
    sweeps = [f for f in files if re.search(r"^sweep:", Path(ROOT / f).read_text(), re.M)]
    code = (
        "import sys, time\n"
        "from engine.cli import main\n"
        "t = time.perf_counter()\n"
        f"rc = main(['validate', *{[f for f in files if f not in sweeps]!r}])\n"
        "dt = time.perf_counter() - t\n"
        f"rc |= main(['validate', *{sweeps!r}])\n"
        "dt_sweeps = time.perf_counter() - t - dt\n"
        "assert rc == 0, rc\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, 'validate imported ' + ', '.join(loaded[:5])\n"
        "print(f'SECONDS={dt:.4f} SWEEPS={dt_sweeps:.4f}')\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stdout + p.stderr
    seconds, swept = (float(x) for x in re.search(r"SECONDS=([\d.]+) SWEEPS=([\d.]+)", p.stdout).groups())
    assert sweeps and seconds < 1.0, (
        f"validating {len(files) - len(sweeps)} spec(s) took {seconds:.2f} s; validation must stay interactive"
    )
    assert swept < 1.0 + len(sweeps), f"validating the sweeps {sweeps} took {swept:.2f} s"


def test_validate_in_process_returns_2_on_a_broken_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", rel(BROKEN / "heads_not_dividing_dim.yaml")]) == 2
    assert "stages.train.model.heads: 6 does not divide dim=64" in capsys.readouterr().out


# ----------------------------------------------------------------------------- JSON Schema drift


def test_committed_json_schema_matches_the_models() -> None:
    committed = ROOT / "schemas" / "spec.schema.json"
    regenerate = "regenerate it with `python -m engine schema -o schemas/spec.schema.json` and commit it"
    assert committed.exists(), f"schemas/spec.schema.json is missing; {regenerate}"
    assert committed.read_text(encoding="utf-8") == json_schema(), (
        f"schemas/spec.schema.json is out of date with the pydantic models; {regenerate}"
    )


def test_json_schema_describes_every_field() -> None:
    schema = json.loads(json_schema())
    assert schema["additionalProperties"] is False
    undocumented = []
    for name, definition in schema.get("$defs", {}).items():
        for field, prop in definition.get("properties", {}).items():
            if not prop.get("description"):
                undocumented.append(f"{name}.{field}")
    assert not undocumented, f"fields without a description (editors show none): {undocumented}"


# ----------------------------------------------------------------------------- dump_spec


def _fields_present(value: object, dumped: object, path: str, missing: list[str]) -> None:
    """Record every model field of `value` that the dumped mapping lacks (recursively)."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        assert isinstance(dumped, dict), path
        for name, field in type(value).model_fields.items():
            key = field.alias or name
            if name == "extends":
                continue
            if key not in dumped:
                missing.append(f"{path}{key}")
            else:
                _fields_present(getattr(value, name), dumped[key], f"{path}{key}.", missing)
    elif isinstance(value, dict):
        for k, v in value.items():
            _fields_present(v, dumped[k], f"{path}{k}.", missing)
    elif isinstance(value, list | tuple) and isinstance(dumped, list):
        for i, (v, d) in enumerate(zip(value, dumped, strict=True)):
            _fields_present(v, d, f"{path}{i}.", missing)


@pytest.mark.parametrize(
    "spec", [*SPECS, BROKEN / "_base.yaml"], ids=[*(s.stem for s in SPECS), "broken_base"]
)
def test_dump_spec_round_trips_with_every_default(spec: Path, tmp_path: Path) -> None:
    original = load_spec(str(spec))
    text = dump_spec(original)
    dumped = yaml.safe_load(text)
    missing: list[str] = []
    _fields_present(original, dumped, "", missing)
    assert not missing, f"dump_spec left out {missing}"
    assert "extends" not in dumped
    (tmp_path / "resolved.yaml").write_text(text, encoding="utf-8")
    again = load_spec(str(tmp_path / "resolved.yaml"))
    assert again == original
    assert again.model_dump() == original.model_dump()
    assert dump_spec(again) == text


def test_dump_spec_resolves_extends_and_overrides(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text(
        f"extends: {BROKEN / '_base.yaml'}\nrun: {{name: child, output: runs/child}}\n", encoding="utf-8"
    )
    spec = load_spec(str(child), ["stages.train.schedule.steps=70"])
    dumped = yaml.safe_load(dump_spec(spec))
    assert dumped["run"]["name"] == "child"
    assert dumped["stages"]["train"]["schedule"]["steps"] == 70
    assert dumped["stages"]["train"]["model"]["dim"] == 64  # from the parent
    assert dumped["stages"]["train"]["batch"] == {"global": 16, "micro": None}
