"""The command line as editors, CI and pre-commit use it: `validate --format json|github` on the broken-spec
corpus, the pre-commit hook's entry, `plan --strict`, a closed pipe under `plan`, and `engine` without arguments.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from helpers import REPO, env
from test_spec import BROKEN, CASES, HEADER, SPECS, rel

from engine.cli import github_annotation, main
from engine.data.sparse_parity import SparseParity
from schemas.loader import Issue, Where

# One interpreter runs `main(["validate", "--format", FORMAT, FILE])` for every broken spec and both formats,
# as `python -m engine validate --format FORMAT FILE` would (test_spec checks that the two agree).
DRIVER = """
import contextlib, io, json, sys
from engine.cli import main
results = {}
for fmt in ("json", "github"):
    for path in sys.argv[1:]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["validate", "--format", fmt, path])
        results[f"{fmt} {path}"] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(results))
"""


@cache
def formatted() -> dict[str, dict[str, object]]:
    """`engine validate --format F CASE` for both formats and every broken spec: code, stdout, stderr."""
    files = [rel(c) for c in CASES]
    p = subprocess.run(
        [sys.executable, "-c", DRIVER, *files],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)


def expected(case: Path) -> list[dict[str, object]]:
    """The problems a broken spec's `# expect:` headers promise: file, line, column, path, message part."""
    out = []
    for line in case.read_text(encoding="utf-8").splitlines():
        if not line.startswith("# expect:"):
            break
        m = HEADER.match(line)
        assert m, line
        source = os.path.normpath(rel(BROKEN / m["file"])) if m["file"] else rel(case)
        path = "" if m["path"] == "-" else m["path"]
        out.append(
            {
                "file": source,
                "line": int(m["line"]),
                "column": int(m["col"]),
                "path": path,
                "message": m["message"],
            }
        )
    return out


def matches(problem: dict[str, object], want: dict[str, object]) -> bool:
    """Whether a reported problem is the promised one (the message need only contain the promised part)."""
    same = all(problem[k] == want[k] for k in ("file", "line", "column", "path"))
    return same and str(want["message"]) in str(problem["message"])


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_json_format_reports_each_promised_problem(case: Path) -> None:
    r = formatted()[f"json {rel(case)}"]
    assert r["code"] == 2 and r["stderr"] == "", r
    report = json.loads(str(r["stdout"]))  # one JSON document and nothing else on stdout
    assert report["ok"] is False
    [entry] = report["files"]
    assert entry["file"] == rel(case) and entry["ok"] is False
    problems, wants = entry["problems"], expected(case)
    for want in wants:
        assert any(matches(p, want) for p in problems), f"{want} not in {problems}"
    assert len(problems) == len(wants), problems


def parse_annotation(line: str) -> dict[str, object]:
    """A `::error file=F,line=L,col=C,title=T::MESSAGE` workflow command, unescaped as GitHub reads it."""

    def unescape(text: str) -> str:
        for code, char in (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
            text = text.replace(code, char)
        return text

    m = re.fullmatch(r"::error (?P<props>[^:]*)::(?P<message>.*)", line)
    assert m, f"not a workflow command: {line!r}"
    props = dict(p.split("=", 1) for p in m["props"].split(","))
    assert set(props) <= {"file", "line", "col", "title"}, props
    title = unescape(props["title"])
    return {
        "file": unescape(props["file"]),
        "line": int(props["line"]) if "line" in props else None,
        "column": int(props["col"]) if "col" in props else None,
        "path": title.removeprefix("engine validate").removeprefix(": "),
        "message": unescape(m["message"]),
    }


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_github_format_annotates_each_promised_problem(case: Path) -> None:
    r = formatted()[f"github {rel(case)}"]
    assert r["code"] == 2 and r["stderr"] == "", r
    lines = str(r["stdout"]).splitlines()
    assert lines[-1] == "engine validate: 0 of 1 spec(s) valid, " + f"{len(lines) - 1} problem(s)"
    annotations = [parse_annotation(line) for line in lines[:-1]]
    wants = expected(case)
    for want in wants:
        assert any(matches(a, want) for a in annotations), f"{want} not in {annotations}"
    assert len(annotations) == len(wants), annotations


def test_json_format_lists_valid_files_and_override_problems() -> None:
    good, bad = rel(SPECS[0]), rel(BROKEN / "unknown_key.yaml")
    p = subprocess.run(
        [sys.executable, "-m", "engine", "validate", "--format", "json", good, bad, "run.seed=1.5"],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    report = json.loads(p.stdout)
    assert report["ok"] is False and report["overrides"] == ["run.seed=1.5"]
    first, second = report["files"]
    assert first["file"] == good and first["ok"] is False  # the override breaks every file
    [problem] = first["problems"]
    assert problem == {
        "file": good,
        "line": None,
        "column": None,
        "path": "run.seed",
        "message": problem["message"],
        "override": "run.seed=1.5",
    }
    assert "1.5 is not a whole number" in problem["message"]
    assert {p["path"] for p in second["problems"]} == {"run.seed", "stages.train.model.dpeth"}
    ok = subprocess.run(
        [sys.executable, "-m", "engine", "validate", "--format", "json", good],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["files"][0] == {
        "file": good,
        "ok": True,
        "problems": [],
        "stages": list(yaml.safe_load(SPECS[0].read_text())["stages"]),
    }


def test_github_annotation_escapes_what_github_requires() -> None:
    issue = Issue(Where("dir,x/a:b.yaml", 3, 7), "stages.a,b", "100% wrong\nsecond line, with: colon")
    line = github_annotation(issue, "spec.yaml")
    assert "\n" not in line
    assert line == (
        "::error file=dir%2Cx/a%3Ab.yaml,line=3,col=7,title=engine validate%3A stages.a%2Cb"
        "::100%25 wrong%0Asecond line, with: colon"
    )
    assert parse_annotation(line)["message"] == issue.message


def test_explain_only_with_text_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--explain", "--format", "json", rel(SPECS[0])]) == 2
    assert "--explain" in capsys.readouterr().err


# ----------------------------------------------------------------------------- pre-commit


def hook() -> dict[str, object]:
    """The engine-validate hook of .pre-commit-hooks.yaml."""
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    [h] = [h for h in hooks if h["id"] == "engine-validate"]
    return h


def selected(paths: list[str]) -> list[str]:
    """The files pre-commit hands the hook: `files` matches and `exclude` does not (re.search on the path)."""
    h = hook()
    return [p for p in paths if re.search(h["files"], p) and not re.search(h["exclude"], p)]


def run_hook(files: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The hook's entry plus the file names, as pre-commit runs it (`engine` is `python -m engine`)."""
    entry = shlex.split(str(hook()["entry"]))
    assert entry[0] == "engine"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["engine"] == "engine.cli:main"  # the same main as python -m engine
    return subprocess.run(
        [sys.executable, "-m", *entry, *files],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pre_commit_hook_selects_specs_and_skips_parents_and_other_yaml() -> None:
    h = hook()
    assert h["language"] == "python" and h["types"] == ["yaml"]
    paths = [
        "specs/sparse_parity.yaml",
        "specs/ablations/rope.yml",
        "specs/_shared_model.yaml",
        "specs/ablations/_base.yaml",
        ".github/workflows/ci.yaml",
        "configs/sweep.yaml",
        "specs/notes.md",
    ]
    assert selected(paths) == ["specs/sparse_parity.yaml", "specs/ablations/rope.yml"]
    assert selected([rel(s) for s in SPECS]) == [rel(s) for s in SPECS]


def test_pre_commit_hook_passes_good_specs_and_fails_broken_ones(tmp_path: Path) -> None:
    """A research repository with a specs/ folder: a good spec, a partial parent, then a broken child."""
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "_model.yaml").write_text(  # a parent holding part of a spec: invalid on its own
        "stages:\n  train:\n    model: {kind: transformer, dim: 64, depth: 2, heads: 4}\n", encoding="utf-8"
    )
    (specs / "parity.yaml").write_text(
        "extends: _model.yaml\n"
        "run: {name: p, output: runs/p}\n"
        "stages:\n"
        "  train:\n"
        "    data: {kind: sparse_parity, k: 3, length: {train: [8, 16], eval: [17, 32]}}\n"
        "    schedule: {steps: 100}\n"
        "    batch: {global: 8}\n",
        encoding="utf-8",
    )
    files = sorted(str(p.relative_to(tmp_path)) for p in specs.iterdir())
    good = run_hook(selected(files), tmp_path)
    assert selected(files) == ["specs/parity.yaml"]
    assert good.returncode == 0 and good.stdout == "" and good.stderr == "", good  # --quiet: silent when ok
    assert run_hook(files, tmp_path).returncode == 2  # the parent alone is not a spec: why it is excluded

    (specs / "parity.yaml").write_text(
        (specs / "parity.yaml").read_text().replace("steps: 100", "steps: 1e26"), encoding="utf-8"
    )
    bad = run_hook(selected(files), tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stdout.startswith("specs/parity.yaml:6:23: stages.train.schedule.steps: 1e+26 is a float")


# ----------------------------------------------------------------------------- plan


def test_plan_strict_fails_when_the_plan_warns(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(REPO / "specs" / "sparse_parity.yaml")
    assert main(["plan", "--strict", spec]) == 0  # CPU without device_memory: nothing to check against
    assert capsys.readouterr().err == ""
    small = "resources.device_memory=0.01"  # 10 MiB per rank
    assert main(["plan", spec, small]) == 0  # without --strict a warning is only printed
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {spec}: stage train: ~") and "exceeds resources.device_memory" in err
    assert main(["plan", "--strict", spec, small]) == 1
    capsys.readouterr()
    assert main(["plan", "--json", spec, small]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["warnings"]) == 1 and out["device_memory"] == int(0.01 * 2**30)


def test_sample_reports_an_unknown_split_but_not_a_generator_bug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = str(REPO / "specs" / "sparse_parity.yaml")
    assert main(["sample", spec, "--split", "test", "-n", "1"]) == 2
    assert capsys.readouterr().err == "error: split 'test' does not exist for sparse_parity\n"

    def broken(*args: object, **kwargs: object) -> None:
        raise AttributeError("'NoneType' object has no attribute 'shape'")

    monkeypatch.setattr(SparseParity, "sample", broken)
    with pytest.raises(AttributeError, match="no attribute 'shape'"):  # a bug surfaces, not "no such split"
        main(["sample", spec, "-n", "1"])


def test_plan_into_a_closed_pipe_is_not_an_error() -> None:
    """`engine plan SPEC | head -0`: the reader is gone before the first line; no BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)
    p = subprocess.run(
        [sys.executable, "-m", "engine", "plan", str(REPO / "specs" / "sparse_parity.yaml")],
        cwd=REPO,
        env=env(),
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(write)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_validate_into_a_closed_pipe_keeps_its_exit_status() -> None:
    read, write = os.pipe()
    os.close(read)
    p = subprocess.run(
        [sys.executable, "-m", "engine", "validate", rel(SPECS[0]), rel(BROKEN / "unknown_key.yaml")],
        cwd=REPO,
        env=env(),
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(write)
    assert p.returncode == 2 and p.stderr == "", p.stderr


# ----------------------------------------------------------------------------- engine without arguments


def test_engine_without_arguments_prints_usage_to_stderr_and_exits_2() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "engine"], cwd=REPO, env=env(), capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("usage: engine ") and "validate" in p.stderr


def test_engine_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "usage: engine " in capsys.readouterr().out


# ----------------------------------------------------------------------------- docs/ci.md


def yaml_blocks(path: Path) -> list[object]:
    """The ```yaml blocks of a Markdown page, parsed."""
    text = path.read_text(encoding="utf-8")
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]


def ci_steps() -> dict[str, str]:
    """name -> script of the steps of the GitHub Actions workflow in docs/ci.md that run the engine."""
    workflow = yaml_blocks(REPO / "docs" / "ci.md")[0]
    assert workflow.get("on", workflow.get(True)) == ["push", "pull_request"]  # YAML 1.1 reads `on` as true
    steps = workflow["jobs"]["specs"]["steps"]
    install = next(s["run"] for s in steps if "Install" in s.get("name", ""))
    torch_line = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    assert install.index(torch_line) < install.index('pip install "$ENGINE"')  # CPU torch first
    return {
        s["name"]: s["run"] for s in steps if "run" in s and "engine " in s["run"] and "pip" not in s["run"]
    }


def run_step(script: str, cwd: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    """A workflow step as GitHub runs it (bash -eo pipefail), with `engine` this checkout's `python -m engine`."""
    e = {**env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=e,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ci_workflow_in_docs_validates_and_plans_a_research_repository(tmp_path: Path) -> None:
    steps = ci_steps()
    validate = next(v for k, v in steps.items() if k.startswith("Validate"))
    plan = next(v for k, v in steps.items() if k.startswith("Plan"))
    assert "--format github" in validate and "plan --strict" in plan
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "engine").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m engine "$@"\n', encoding="utf-8")
    (bin_dir / "engine").chmod(0o755)
    repo = tmp_path / "research"
    (repo / "specs" / "ablations").mkdir(parents=True)
    for name in ("sparse_parity.yaml", "sparse_parity_moe.yaml"):
        (repo / "specs" / name).write_text((REPO / "specs" / name).read_text(), encoding="utf-8")
    (repo / "specs" / "ablations" / "_optim.yaml").write_text(  # a partial parent: skipped on its own
        "stages:\n  train:\n    optim: {lr: 0.001}\n", encoding="utf-8"
    )
    (repo / "specs" / "ablations" / "lr.yaml").write_text(
        "extends: [../sparse_parity.yaml, _optim.yaml]\nrun: {name: lr, output: runs/lr}\n", encoding="utf-8"
    )
    for script in (validate, plan):
        r = run_step(script, repo, bin_dir)
        assert r.returncode == 0, r.stdout + r.stderr
    assert (
        run_step(validate, repo, bin_dir).stdout.strip()
        == "engine validate: 3 of 3 spec(s) valid, 0 problem(s)"
    )

    (repo / "specs" / "ablations" / "big.yaml").write_text(  # valid, but cannot fit 1 MiB per rank
        "extends: ../sparse_parity.yaml\nresources: {device_memory: 0.001}\n", encoding="utf-8"
    )
    assert run_step(validate, repo, bin_dir).returncode == 0
    r = run_step(plan, repo, bin_dir)
    assert r.returncode == 1 and "warning: specs/ablations/big.yaml: stage train: " in r.stderr, r.stderr

    (repo / "specs" / "ablations" / "bad.yaml").write_text(
        "extends: ../sparse_parity.yaml\nstages:\n  train:\n    optim: {momentum: 0.9}\n",
        encoding="utf-8",
    )
    r = run_step(validate, repo, bin_dir)
    assert r.returncode != 0
    assert (
        "::error file=specs/ablations/bad.yaml,line=4,col=13,title=engine validate%3A stages.train.optim.momentum::"
        in r.stdout
    )


def test_pre_commit_entries_in_docs_match_the_hook() -> None:
    configs = [b for b in yaml_blocks(REPO / "docs" / "ci.md") if isinstance(b, dict) and "repos" in b]
    remote, local = configs
    assert remote["repos"][0]["hooks"] == [{"id": "engine-validate"}]
    [entry] = local["repos"][0]["hooks"]
    h = hook()
    assert entry["language"] == "system"
    assert {k: entry[k] for k in ("id", "entry", "files", "exclude", "types")} == {
        k: h[k] for k in ("id", "entry", "files", "exclude", "types")
    }


def test_run_warns_at_start_when_the_plan_exceeds_its_device(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, one_thread: None
) -> None:
    from helpers import SPEC, TINY

    import engine.runtime.distributed as distributed

    measured: list[object] = []

    def tiny_device(d: object) -> int:
        measured.append(d)
        return 1024  # 1 KiB: no stage fits

    monkeypatch.setattr(distributed, "device_memory_bytes", tiny_device)
    steps = ["stages.train.schedule.steps=2", "stages.train.schedule.warmup=1", f"run.output={tmp_path}"]
    assert main([SPEC, *TINY, *steps]) == 0
    out = capsys.readouterr().out
    assert len(measured) == 1
    assert "warning: stage train: ~" in out and "exceeds this device's 1.00 KiB" in out
    assert out.index("warning: stage train") < out.index("train: starting")
