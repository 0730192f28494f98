"""Tests of schemas/loader.py: dotted overrides, `extends` deep merge and the positions it keeps, safe YAML
only (no tag ever constructs an object or runs code), and the shape of the errors it raises."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from schemas import Issue, Spec, SpecError, load_spec, load_tree

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

BASE = """\
run: {name: base, output: runs/base, seed: 0}
resources: {nodes: 1, procs_per_node: 2}
stages:
  train:
    model:
      kind: transformer
      dim: 64
      depth: 2
      heads: 4
      ffn: {kind: dense, hidden: 128}
    data: {kind: sparse_parity, k: 3, length: {train: [8, 16], eval: [17, 32]}}
    optim: {kind: adamw, lr: 1.0e-3}
    schedule: {steps: 100, warmup: 10}
    batch: {global: 16}
    evals: [{kind: accuracy_by_length, every: 50}, {kind: accuracy_by_length, every: 25, examples: 8}]
"""


def write(directory: Path, name: str, text: str) -> str:
    """Write a spec file (creating folders) and return its path as a string."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def base(tmp_path: Path) -> str:
    """A valid one-stage spec file."""
    return write(tmp_path, "base.yaml", BASE)


def problems(path: str, overrides: list[str] | None = None) -> list[Issue]:
    """The issues that loading `path` raises (fails the test when it loads cleanly)."""
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides or [])
    return info.value.issues


def validate(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m engine validate ARGS` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "engine", "validate", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ----------------------------------------------------------------------------- overrides


def test_override_changes_an_existing_value(base: str) -> None:
    assert load_spec(base).stages["train"].schedule.steps == 100
    assert load_spec(base, ["stages.train.schedule.steps=250"]).stages["train"].schedule.steps == 250


def test_override_sets_a_schema_field_absent_from_the_file(base: str) -> None:
    spec = load_spec(base, ["stages.train.batch.micro=4", "stages.train.checkpoint.every=5"])
    train = spec.stages["train"]
    assert train.batch.micro == 4 and train.batch.global_ == 16
    assert train.checkpoint.every == 5 and train.checkpoint.keep_last == 2


def test_override_of_an_unknown_key_suggests_the_right_one(base: str) -> None:
    (issue,) = problems(base, ["stages.train.schedule.stpes=5"])
    assert issue.path == "stages.train.schedule.stpes"
    assert "no such key; did you mean 'steps'?" in issue.message
    assert str(issue.where) == "override 'stages.train.schedule.stpes=5'"


def test_override_of_an_unknown_stage_is_an_error_not_a_new_stage(base: str) -> None:
    (issue,) = problems(base, ["stages.trian.schedule.steps=5"])
    assert issue.path == "stages.trian" and "did you mean 'train'?" in issue.message


def test_override_of_a_field_of_another_kind_lists_the_keys(base: str) -> None:
    (issue,) = problems(base, ["stages.train.model.ffn.experts=4"])
    assert issue.path == "stages.train.model.ffn.experts"
    assert "no such key" in issue.message and "activation, hidden, kind" in issue.message


def test_override_without_equals_sign_is_an_error(base: str) -> None:
    (issue,) = problems(base, ["stages.train.schedule.steps"])
    assert "key.path=value" in issue.message


def test_every_bad_override_is_reported_at_once(base: str) -> None:
    issues = problems(
        base, ["stages.train.schedule.stpes=5", "=3", "run.nmae=x", "stages.train.evals.5.every=1"]
    )
    assert len(issues) == 4
    assert {i.path for i in issues} == {"stages.train.schedule.stpes", "", "run.nmae", "stages.train.evals.5"}


def test_override_list_index(base: str) -> None:
    spec = load_spec(base, ["stages.train.evals.0.every=7", "stages.train.evals.1.lengths=[8, 16]"])
    evals = spec.stages["train"].evals
    assert [e.every for e in evals] == [7, 25]
    assert evals[1].lengths == [8, 16] and evals[1].examples == 8


def test_override_list_index_out_of_range(base: str) -> None:
    (issue,) = problems(base, ["stages.train.evals.2.every=7"])
    assert issue.path == "stages.train.evals.2" and "0..1" in issue.message


def test_override_values_are_typed_yaml(base: str) -> None:
    overrides = [
        "stages.train.model.bias=true",
        "stages.train.optim.lr=1e-3",
        "stages.train.optim.betas=[0.8, 0.9]",
    ]
    tree = load_tree(base, overrides)
    model, optim = tree.data["stages"]["train"]["model"], tree.data["stages"]["train"]["optim"]
    assert model["bias"] is True
    assert isinstance(optim["lr"], float) and optim["lr"] == 1e-3
    assert optim["betas"] == [0.8, 0.9]
    spec = load_spec(base, overrides)
    assert spec.stages["train"].optim.betas == (0.8, 0.9)
    assert spec.stages["train"].model.bias is True


def test_override_replaces_a_whole_mapping(base: str) -> None:
    spec = load_spec(base, ["stages.train.model.position={kind: learned, max_len: 64}"])
    position = spec.stages["train"].model.position
    assert position.kind == "learned" and position.max_len == 64


def test_override_into_a_null_mapping_field(tmp_path: Path) -> None:
    path = write(tmp_path, "init_null.yaml", BASE + "    init: null\n")
    (issue,) = problems(path, ["stages.train.init.stage=nope"])
    assert issue.path == "stages.train.init.stage" and "not an earlier stage" in issue.message


def test_override_that_breaks_a_rule_is_reported_at_the_override(base: str) -> None:
    (issue,) = problems(base, ["stages.train.model.heads=6"])
    assert str(issue) == (
        "override 'stages.train.model.heads=6': stages.train.model.heads: "
        "6 does not divide dim=64; pick heads with dim % heads == 0"
    )


def test_override_with_invalid_yaml_value(base: str) -> None:
    (issue,) = problems(base, ["run.name=[unclosed"])
    assert issue.path == "run.name" and "not valid YAML" in issue.message


def test_override_of_extends_is_refused(base: str) -> None:
    (issue,) = problems(base, ["extends=other.yaml"])
    assert issue.path == "extends" and "cannot be overridden" in issue.message


def test_override_of_a_scalar_as_a_mapping(base: str) -> None:
    (issue,) = problems(base, ["stages.train.model.dim.x=1"])
    assert issue.path == "stages.train.model.dim.x" and "not a mapping" in issue.message


def test_override_of_values_from_an_extended_file(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", BASE)
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\nrun: {name: child, output: runs/child}\n")
    spec = load_spec(child, ["stages.train.model.dim=128", "stages.train.model.heads=8"])
    model = spec.stages["train"].model
    assert (model.dim, model.heads, model.depth) == (128, 8, 2)
    assert spec.run.name == "child"
    (issue,) = problems(child, ["stages.train.model.heads=5"])
    assert str(issue.where) == "override 'stages.train.model.heads=5'"  # not the parent's line


def test_overrides_through_the_cli(base: str) -> None:
    runs = {
        "ok": [base, "stages.train.schedule.steps=50", "stages.train.batch.micro=4"],
        "typo": [base, "stages.train.schedule.stpes=50"],
        "bad": [base, "stages.train.model.heads=6"],
        "malformed": [base, "=3", "run.nmae=x"],
        "no_equals": [base, "stages.train.schedule.steps"],
    }
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        r = dict(zip(runs, pool.map(lambda args: validate(*args), runs.values()), strict=True))
    assert r["ok"].returncode == 0, r["ok"].stdout + r["ok"].stderr
    assert "stages.train.schedule.stpes: no such key; did you mean 'steps'?" in r["typo"].stdout
    assert (
        "override 'stages.train.model.heads=6': stages.train.model.heads: 6 does not divide"
        in r["bad"].stdout
    )
    assert "override '=3': an override must look like key.path=value" in r["malformed"].stdout
    assert "override 'run.nmae=x': run.nmae: no such key; did you mean 'name'?" in r["malformed"].stdout
    assert "stages.train.schedule.steps" in r["no_equals"].stdout + r["no_equals"].stderr
    for name in ("typo", "bad", "malformed", "no_equals"):
        assert r[name].returncode == 2, name
        assert "Traceback" not in r[name].stdout + r[name].stderr, name


# ----------------------------------------------------------------------------- extends


PARENT = """\
run: {name: parent, output: runs/parent}
stages:
  train:
    model: {kind: transformer, dim: 64, depth: 2, heads: 4, ffn: {kind: dense, hidden: 128, activation: swiglu}}
    data: {kind: sparse_parity, k: 3, length: {train: [8, 16], eval: [17, 32]}}
    schedule: {steps: 100, warmup: 10}
    batch: {global: 16}
    evals: [{kind: accuracy_by_length, every: 50}, {kind: accuracy_by_length, every: 25}]
"""


def test_extends_deep_merges_mappings_and_replaces_lists_and_scalars(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", PARENT)
    child = write(
        tmp_path,
        "child.yaml",
        "extends: parent.yaml\n"
        "stages:\n"
        "  train:\n"
        "    model: {depth: 3, ffn: {hidden: 256}}\n"
        "    evals: [{kind: accuracy_by_length, every: 10}]\n",
    )
    train = load_spec(child).stages["train"]
    assert (train.model.dim, train.model.depth, train.model.heads) == (64, 3, 4)  # merged mapping
    assert (train.model.ffn.hidden, train.model.ffn.activation) == (256, "swiglu")  # merged two levels down
    assert [e.every for e in train.evals] == [10]  # the list is replaced, not merged item by item
    assert train.schedule.steps == 100 and load_spec(child).run.name == "parent"


def test_extends_a_different_kind_replaces_the_mapping(tmp_path: Path) -> None:
    write(
        tmp_path,
        "moe.yaml",
        PARENT.replace("{kind: dense, hidden: 128, activation: swiglu}", "{kind: moe, experts: 4}"),
    )
    assert load_spec(str(tmp_path / "moe.yaml")).stages["train"].model.ffn.experts == 4
    child = write(
        tmp_path, "dense.yaml", "extends: moe.yaml\nstages: {train: {model: {ffn: {kind: dense}}}}\n"
    )
    ffn = load_spec(child).stages["train"].model.ffn
    assert ffn.kind == "dense" and ffn.hidden is None  # `experts` was not inherited into the dense block


def test_extends_over_several_levels_keeps_each_files_positions(tmp_path: Path) -> None:
    c = write(tmp_path, "c.yaml", PARENT)
    b = write(tmp_path, "sub/b.yaml", "extends: ../c.yaml\nstages:\n  train:\n    model: {depth: 6}\n")
    a = write(tmp_path, "a.yaml", "extends: sub/b.yaml\nrun: {name: a, output: runs/a}\n")
    spec = load_spec(a)
    assert (spec.run.name, spec.stages["train"].model.depth, spec.stages["train"].model.dim) == ("a", 6, 64)
    tree = load_tree(a)
    assert str(tree.value_at[("run", "name")]) == f"{a}:2:13"
    assert str(tree.value_at[("stages", "train", "model", "depth")]) == f"{b}:4:20"
    assert str(tree.key_at[("stages", "train", "model", "dim")]) == f"{c}:4:32"
    assert str(tree.value_at[("stages", "train", "schedule", "steps")]) == f"{c}:6:23"


def test_errors_point_into_the_file_that_supplied_the_value(tmp_path: Path) -> None:
    c = write(tmp_path, "c.yaml", PARENT.replace("warmup: 10", "warmup: 500"))
    b = write(tmp_path, "sub/b.yaml", "extends: ../c.yaml\nstages:\n  train:\n    model: {heads: 6}\n")
    a = write(tmp_path, "a.yaml", "extends: sub/b.yaml\nrun: {name: a, output: runs/a, seed: -1}\n")
    issues = problems(a)
    assert {str(i) for i in issues} == {
        f"{a}:2:38: run.seed: input should be greater than or equal to 0 (got -1)",
        f"{b}:4:20: stages.train.model.heads: 6 does not divide dim=64; pick heads with dim % heads == 0",
        f"{c}:6:36: stages.train.schedule.warmup: warmup=500 exceeds steps=100; shorten warmup",
    }


def test_extends_a_list_of_parents_later_ones_win(tmp_path: Path) -> None:
    write(tmp_path, "p1.yaml", PARENT)
    write(
        tmp_path,
        "p2.yaml",
        "run: {name: p2, output: runs/p2}\nstages: {train: {model: {depth: 5}, schedule: {steps: 300}}}\n",
    )
    child = write(
        tmp_path, "child.yaml", "extends: [p1.yaml, p2.yaml]\nstages: {train: {schedule: {steps: 400}}}\n"
    )
    spec = load_spec(child)
    train = spec.stages["train"]
    assert spec.run.name == "p2" and train.model.depth == 5 and train.model.dim == 64
    assert train.schedule.steps == 400 and train.schedule.warmup == 10


def test_extends_a_diamond_is_not_a_cycle(tmp_path: Path) -> None:
    write(tmp_path, "root.yaml", PARENT)
    write(tmp_path, "left.yaml", "extends: root.yaml\nstages: {train: {model: {depth: 3}}}\n")
    write(tmp_path, "right.yaml", "extends: root.yaml\nstages: {train: {model: {heads: 8}}}\n")
    child = write(tmp_path, "child.yaml", "extends: [left.yaml, right.yaml]\n")
    model = load_spec(child).stages["train"].model
    assert (model.depth, model.heads) == (2, 8)  # right re-supplies root's depth after left's


def test_extends_cycle_names_the_chain(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "extends: b.yaml\n")
    b = write(tmp_path, "b.yaml", "extends: [a.yaml]\n")
    (issue,) = problems(a)
    assert issue.path == "extends" and str(issue.where) == f"{b}:1:11"
    assert "extends cycle" in issue.message and "a.yaml -> " in issue.message
    selfish = write(tmp_path, "self.yaml", "run: {name: s, output: o}\nextends: self.yaml\n")
    (issue,) = problems(selfish)
    assert str(issue.where) == f"{selfish}:2:10" and "extends cycle" in issue.message


def test_extends_missing_parents_are_all_reported(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", "extends:\n  - nope1.yaml\n  - nope2.yaml\n")
    issues = problems(child)
    assert [(str(i.where), i.path) for i in issues] == [
        (f"{child}:2:5", "extends"),
        (f"{child}:3:5", "extends"),
    ]
    assert all("cannot read" in i.message for i in issues)


def test_extends_paths_are_shown_normalised(tmp_path: Path) -> None:
    write(tmp_path, "x/parent.yaml", PARENT.replace("heads: 4", "heads: 6"))
    child = write(tmp_path, "y/child.yaml", "extends: ../x/parent.yaml\n")
    (issue,) = problems(child)
    assert issue.where.source == str(tmp_path / "x" / "parent.yaml")


def test_extends_empty_list_or_null_means_no_parent(tmp_path: Path) -> None:
    for value in ("[]", "null"):
        path = write(tmp_path, "spec.yaml", f"extends: {value}\n" + PARENT)
        assert load_spec(path).run.name == "parent"


def test_extends_must_name_files(tmp_path: Path) -> None:
    for value in ("5", "[a.yaml, 3]", "{a: 1}", "''"):
        path = write(tmp_path, "spec.yaml", f"extends: {value}\n")
        (issue,) = problems(path)
        assert issue.path == "extends" and "file name" in issue.message, value


def test_extending_a_specs_file_by_relative_path(tmp_path: Path) -> None:
    target = ROOT / "specs" / "sparse_parity.yaml"
    child = write(tmp_path, "child.yaml", f"extends: {os.path.relpath(target, tmp_path)}\n")
    assert load_spec(child, ["stages.train.schedule.steps=200"]).stages["train"].schedule.steps == 200


# ----------------------------------------------------------------------------- safe YAML


PAYLOADS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/apply:subprocess.check_call [[touch, '{marker}']]",
    "!!python/object/new:subprocess.Popen [[touch, '{marker}']]",
    "!!python/name:os.system ''",
    "!!python/object:argparse.Namespace {{a: 1}}",
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=["apply", "check_call", "new", "name", "object"])
def test_unsafe_tags_are_rejected_and_never_run(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "pwned"
    text = PARENT.replace("name: parent", "name: " + payload.format(marker=marker))
    path = write(tmp_path, "evil.yaml", text)
    (issue,) = problems(path)
    assert issue.path == "run.name" and "unsupported YAML tag '!!python/" in issue.message
    assert str(issue.where) == f"{path}:1:13"
    if payload == PAYLOADS[0]:  # and once through the command line
        r = validate(path)
        assert r.returncode == 2 and "unsupported YAML tag" in r.stdout and "Traceback" not in r.stderr
    assert not marker.exists(), "a YAML tag ran code"


def test_unsafe_tags_in_parents_and_overrides_are_rejected(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    write(tmp_path, "parent.yaml", PARENT + f"    init: !!python/object/apply:os.system ['touch {marker}']\n")
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\n")
    (issue,) = problems(child)
    assert issue.where.source.endswith("parent.yaml") and "unsupported YAML tag" in issue.message
    base = write(tmp_path, "base.yaml", PARENT)
    (issue,) = problems(base, [f"run.name=!!python/object/apply:os.system ['touch {marker}']"])
    assert issue.path == "run.name" and "unsupported YAML tag" in issue.message
    assert not marker.exists()


def test_other_non_plain_tags_are_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path, "tags.yaml", PARENT + "    logging: !!set {every}\n    checkpoint: !custom {every: 5}\n"
    )
    issues = problems(path)
    assert [(i.path, i.where.line) for i in issues] == [
        ("stages.train.logging", 9),
        ("stages.train.checkpoint", 10),
    ]
    assert all("unsupported YAML tag" in i.message for i in issues)


def test_merge_keys_let_explicit_keys_win_without_duplicate_errors(tmp_path: Path) -> None:
    text = PARENT.replace("  train:\n", "  first:\n", 1).replace("model: {kind", "model: &m {kind") + (
        "  second:\n"
        "    model: {<<: *m, depth: 4}\n"
        "    data: {kind: sparse_parity, k: 3}\n"
        "    schedule: {steps: 10}\n"
        "    batch: {global: 16}\n"
    )
    path = write(tmp_path, "merge.yaml", text)
    spec = load_spec(path)
    second = spec.stages["second"].model
    assert (second.depth, second.dim, second.ffn.activation) == (4, 64, "swiglu")
    tree = load_tree(path)
    assert tree.key_at[("stages", "second", "model", "depth")].line == 10  # the explicit key
    assert tree.key_at[("stages", "second", "model", "dim")].line == 4  # from the anchor


def test_a_merged_mapping_that_merges_keeps_its_own_keys_over_what_it_merged(tmp_path: Path) -> None:
    """YAML's rule through two levels: `b` merges `a` and sets depth 3; `c` merges `b` and gets b's depth
    (not a's), and its own dim over both."""
    text = PARENT.replace("  train:\n", "  first:\n", 1).replace("model: {kind", "model: &a {kind") + (
        "  second:\n"
        "    model: &b {<<: *a, depth: 3}\n"
        "    data: {kind: sparse_parity, k: 3}\n"
        "    schedule: {steps: 10}\n"
        "    batch: {global: 16}\n"
        "  third:\n"
        "    model: {<<: *b, dim: 32}\n"
        "    data: {kind: sparse_parity, k: 3}\n"
        "    schedule: {steps: 10}\n"
        "    batch: {global: 16}\n"
    )
    spec = load_spec(write(tmp_path, "nested.yaml", text))
    first, third = spec.stages["first"].model, spec.stages["third"].model
    assert (first.depth, third.depth, third.dim) == (2, 3, 32)


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.yaml", PARENT + "    batch: {global: 8}\n")
    (issue,) = problems(path)
    assert (issue.path, issue.where.line, issue.message) == ("stages.train.batch", 9, "duplicate key")


def test_recursive_alias_and_alias_bomb_are_errors_not_hangs(tmp_path: Path) -> None:
    loop = write(tmp_path, "loop.yaml", "run: &r {name: x, output: y, again: *r}\n")
    (issue,) = problems(loop)
    assert "recursive alias" in issue.message
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefgh"):
        prev = "abcdefgh"[i]
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    bomb = write(tmp_path, "bomb.yaml", "\n".join(levels) + "\n")
    t = time.perf_counter()
    (issue,) = problems(bomb)
    assert "runaway aliases" in issue.message
    assert time.perf_counter() - t < 5.0, "expanding aliases must stop early"


def test_yaml_syntax_error_has_its_position(tmp_path: Path) -> None:
    path = write(tmp_path, "syntax.yaml", "run: {name: x, output: y}\nstages:\n  train: [unclosed\n")
    (issue,) = problems(path)
    assert issue.where.source == path and issue.where.line == 4 and issue.path == ""
    assert issue.message.startswith("YAML syntax error: ") and "line 3, column 10" in issue.message


def test_unreadable_files_are_spec_errors(tmp_path: Path) -> None:
    (issue,) = problems(str(tmp_path / "missing.yaml"))
    assert "cannot read" in issue.message and "No such file" in issue.message
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81 run")
    (issue,) = problems(str(binary))
    assert "not UTF-8" in issue.message
    (issue,) = problems(str(tmp_path))
    assert "cannot read" in issue.message
    r = validate(str(binary), str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout.count("cannot read") == 2


def test_yaml_1_2_floats(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "floats.yaml",
        PARENT.replace("warmup: 10}", "warmup: 10}\n    optim: {kind: adamw, lr: 3e-4, eps: 1E-8}"),
    )
    optim = load_tree(path).data["stages"]["train"]["optim"]
    assert optim == {"kind": "adamw", "lr": 3e-4, "eps": 1e-8}
    assert isinstance(optim["lr"], float) and isinstance(optim["eps"], float)
    assert load_spec(path).stages["train"].optim.lr == 3e-4


def test_non_scalar_and_null_keys_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "keys.yaml", "run: {name: x, output: y}\n? [a, b]\n: 1\n~: 2\n")
    issues = problems(path)
    assert [(i.where.line, i.message) for i in issues] == [
        (2, "keys must be plain strings or numbers"),
        (4, "keys must be plain strings or numbers"),
    ]


# ----------------------------------------------------------------------------- errors


def test_stage_name_errors_point_at_the_key_even_with_dots(tmp_path: Path) -> None:
    body = PARENT.split("  train:\n", 1)[1]
    path = write(tmp_path, "names.yaml", PARENT.split("stages:\n")[0] + 'stages:\n  "my.stage":\n' + body)
    (issue,) = problems(path)
    assert (issue.path, issue.where.line, issue.where.col) == ("stages.my.stage", 3, 3)
    assert "must be letters, digits" in issue.message


def test_missing_keys_point_at_their_parent(tmp_path: Path) -> None:
    path = write(tmp_path, "missing.yaml", PARENT.replace("    schedule: {steps: 100, warmup: 10}\n", ""))
    (issue,) = problems(path)
    assert str(issue) == f"{path}:3:3: stages.train.schedule: missing required key"


def test_empty_file_reports_every_missing_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.yaml", "# nothing here\n")
    assert [str(i) for i in problems(path)] == [
        f"{path}:1:1: run: missing required key",
        f"{path}:1:1: stages: missing required key",
    ]


def test_spec_error_lists_issues_in_source_order(tmp_path: Path) -> None:
    path = write(
        tmp_path, "order.yaml", PARENT.replace("dim: 64", "dim: -1").replace("steps: 100", "steps: x")
    )
    err = pytest.raises(SpecError, load_spec, path).value
    assert [i.where.line for i in err.issues] == sorted(i.where.line for i in err.issues)
    assert len(err.issues) == 2 and str(err) == "\n".join(str(i) for i in err.issues)


def test_load_spec_returns_a_spec(base: str) -> None:
    assert isinstance(load_spec(base), Spec)


def test_a_rule_may_report_several_problems_at_once(base: str) -> None:
    """A validator raising one `spec` error with ctx["problems"] = [(field, message), ...] yields one issue each."""
    from pydantic import ValidationError, model_validator
    from pydantic_core import PydanticCustomError

    from schemas.base import Strict
    from schemas.loader import _issues

    class Rules(Strict):
        """Stands in for a spec model whose cross-field rule finds two problems."""

        run: dict[str, object]
        stages: dict[str, object]

        @model_validator(mode="after")
        def _check(self) -> Rules:
            problems = [
                ("stages.train.model.heads", "first problem"),
                ("stages.train.batch.global", "second problem"),
            ]
            raise PydanticCustomError("spec", "{count} problems", {"count": 2, "problems": problems})

    tree = load_tree(base)
    with pytest.raises(ValidationError) as info:
        Rules.model_validate({k: v for k, v in tree.data.items() if k in ("run", "stages")})
    issues = _issues(info.value, tree)
    assert [str(i) for i in issues] == [
        f"{base}:9:14: stages.train.model.heads: first problem",
        f"{base}:14:21: stages.train.batch.global: second problem",
    ]
