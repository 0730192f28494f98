"""Sweeps: grid x zip x budgets expand into members that are ordinary runs; plan, sbatch, --member, sweep.json.

The broken-spec corpus (tests/broken/sweep_*.yaml) covers the sweep block's mistakes at their line and column.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from engine.cli import main
from engine.sweep import load, stage_cost
from schemas import SpecError, load_spec
from schemas.sweep import load_sweep

BASE = {
    "run": {"name": "sw", "output": "OUT", "seed": 0},
    "resources": {"nodes": 1, "procs_per_node": 1, "device": "cpu"},
    "stages": {
        "train": {
            "model": {
                "kind": "transformer",
                "dim": 32,
                "depth": 1,
                "heads": 2,
                "position": {"kind": "rope"},
                "ffn": {"kind": "dense", "hidden": 64},
            },
            "data": {"kind": "sparse_parity", "k": 2, "length": {"train": [4, 6], "eval": [7, 8]}},
            "objective": {"kind": "next_token"},
            "optim": {"kind": "adamw", "lr": 3.0e-3},
            "schedule": {"steps": 20, "warmup": 2},
            "batch": {"global": 8},
            "checkpoint": {"every": 1000},
            "logging": {"every": 5},
            "evals": [],
        }
    },
}


def write(tmp_path: Path, sweep: dict, name: str = "sweep.yaml") -> str:
    """A spec file: the tiny base with this sweep block, writing under tmp_path/out."""
    spec = json.loads(json.dumps(BASE))
    spec["run"]["output"] = str(tmp_path / "out")
    spec["sweep"] = sweep
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return str(path)


def test_grid_zip_and_budget_cross_in_order_with_names_and_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "grid": {
                "stages.train.model.dim": [32, 64],
                "stages.train.data": {
                    "easy": {"kind": "sparse_parity", "k": 2, "length": {"train": [4, 6], "eval": [7, 8]}},
                    "hard": {"kind": "sparse_parity", "k": 3, "length": {"train": [4, 6], "eval": [7, 8]}},
                },
            },
            "zip": {"run.seed": [0, 1], "stages.train.optim.lr": [1e-3, 2e-3]},
            "budget": {"stage": "train", "flops": [1e9, 4e9], "warmup": 0.25},
            "name": "{data}-d{dim}-s{seed}-{budget}",
        },
    )
    sweep = load(path)
    assert sweep is not None
    assert len(sweep.members) == 2 * 2 * 2 * 2
    first, last = sweep.members[0], sweep.members[-1]
    assert first.name == "easy-d32-s0-1e9" and last.name == "hard-d64-s1-4e9"
    # the last axis varies fastest: budget, then the zip rows, then the grid in the order written
    assert [m.name for m in sweep.members[:4]] == [
        "easy-d32-s0-1e9",
        "easy-d32-s0-4e9",
        "easy-d32-s1-1e9",
        "easy-d32-s1-4e9",
    ]
    assert last.values == {
        "stages.train.model.dim": 64,
        "stages.train.data": "hard",
        "run.seed": 1,
        "stages.train.optim.lr": 2e-3,
        "budget": 4e9,
    }
    spec = last.spec
    assert spec.stages["train"].model.dim == 64 and spec.stages["train"].data.k == 3
    assert spec.run.seed == 1 and spec.stages["train"].optim.lr == 2e-3
    assert spec.run.output == f"{tmp_path}/out/hard-d64-s1-4e9" and spec.run.name == "sw-hard-d64-s1-4e9"
    assert spec.sweep is None  # a member is an ordinary run
    # steps from the budget at the member's own FLOPs per step; warmup a fraction of them
    per_step, _ = stage_cost(spec, "train")
    steps = spec.stages["train"].schedule.steps
    assert steps == round(4e9 / per_step) and steps > 1
    assert spec.stages["train"].schedule.warmup == round(0.25 * steps)
    small = sweep.member("easy-d32-s0-4e9").spec
    assert small.stages["train"].schedule.steps > steps  # a smaller model takes more steps for one budget
    # replaying a member's recorded overrides on the base spec gives the same spec
    base_file = tmp_path / "base.yaml"
    data = yaml.safe_load(Path(path).read_text())
    del data["sweep"]
    base_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_spec(str(base_file), last.overrides) == spec


def test_match_gives_a_stage_the_flops_of_others(tmp_path: Path) -> None:
    spec = json.loads(json.dumps(BASE))
    spec["stages"]["other"] = json.loads(json.dumps(spec["stages"]["train"]))
    spec["stages"]["other"]["model"]["dim"] = 64
    spec["run"]["output"] = str(tmp_path / "out")
    spec["sweep"] = {
        "grid": {"stages.train.schedule.steps": [10, 40]},
        "budget": {"stage": "other", "match": ["train"]},
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    for m in load(str(path)).members:
        _, train = stage_cost(m.spec, "train")
        per_step, other = stage_cost(m.spec, "other")
        assert abs(other - train) <= per_step / 2  # matched to within half a step


def test_member_errors_name_the_member_and_collapse_repeats(tmp_path: Path) -> None:
    path = write(tmp_path, {"grid": {"stages.train.model.heads": [2, 3], "run.seed": [0, 1, 2]}})
    with pytest.raises(SpecError) as e:
        load(path)
    (issue,) = e.value.issues  # one line for the three members with heads=3
    assert issue.path == "stages.train.model.heads" and issue.where.line > 0
    assert (
        "in member 3 'heads3-seed0' (stages.train.model.heads=3, run.seed=0) (and 2 more members)"
        in issue.message
    )
    assert "3 does not divide dim=32" in issue.message


def test_a_budget_needs_the_plan_and_a_sweep_needs_axes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs `cost`"):
        load_sweep(write(tmp_path, {"budget": {"stage": "train", "flops": [1e9]}}))
    with pytest.raises(SpecError, match="no axes"):
        load(write(tmp_path, {"name": "x"}, "empty.yaml"))
    with pytest.raises(SpecError, match="either `flops`"):
        load(write(tmp_path, {"budget": {"stage": "train"}}, "neither.yaml"))
    with pytest.raises(SpecError, match="'nope' is no stage"):
        load(write(tmp_path, {"budget": {"stage": "nope", "flops": [1e9]}}, "nostage.yaml"))


def test_plan_sbatch_and_validate_describe_the_members(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(
        tmp_path,
        {"grid": {"stages.train.model.dim": [32, 64]}, "budget": {"stage": "train", "flops": [1e9, 2e9]}},
    )
    assert main(["validate", path]) == 0
    assert "sweep of 4 members" in capsys.readouterr().out
    assert main(["plan", path]) == 0
    out = capsys.readouterr().out
    assert "4 members" in out and "dim64-budget2e9" in out and "total   6.0" in out
    assert main(["plan", path, "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in described["members"]][:2] == ["dim32-budget1e9", "dim32-budget2e9"]
    assert described["axes"] == {"stages.train.model.dim": [32, 64], "budget": [1e9, 2e9]}
    assert all(abs(m["flops"] / (1e9 * (1 + m["index"] % 2)) - 1) < 0.05 for m in described["members"])
    assert main(["plan", path, "--member", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan sw-dim64-budget2e9") and "--member dim64-budget2e9" in out
    assert main(["sbatch", path, "--parallel", "2"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-3%2\n" in script and "#SBATCH --output=sw-%A_%a.out" in script
    # tasks pick their member by name (the script runs what it lists); one node: --standalone (tasks may share it)
    assert "MEMBERS=(dim32-budget1e9 dim32-budget2e9 dim64-budget1e9 dim64-budget2e9)" in script
    assert script.rstrip().endswith(
        "--standalone --nproc_per_node=1 -m engine " + path + ' --member "${MEMBERS[$SLURM_ARRAY_TASK_ID]}"'
    )
    directives = [i for i, line in enumerate(script.splitlines()) if line.startswith("#SBATCH")]
    assert directives == list(range(1, len(directives) + 1))  # before any other line
    assert main(["plan", path, "--member", "dim99"]) == 2
    assert "no member 'dim99'" in capsys.readouterr().err
    plain = write(tmp_path, {"grid": {"run.seed": [0]}}, "plain.yaml")
    data = yaml.safe_load(Path(plain).read_text())
    del data["sweep"]
    Path(plain).write_text(yaml.safe_dump(data))
    assert main(["plan", plain, "--member", "0"]) == 2
    assert "has no sweep block" in capsys.readouterr().err


@pytest.mark.slow
def test_members_run_in_turn_skip_when_finished_and_run_alone(tmp_path: Path, one_thread: None) -> None:
    path = write(tmp_path, {"grid": {"stages.train.model.dim": [16, 32]}, "name": "d{dim}"})
    out = tmp_path / "out"
    assert main([path, "--member", "d32"]) == 0
    assert not (out / "d16").exists() and (out / "d32/train/final/done.json").exists()
    done = (out / "d32/train/final/done.json").stat().st_mtime_ns
    assert main([path]) == 0  # both members: d16 trains, d32 is finished and skipped
    assert (out / "d32/train/final/done.json").stat().st_mtime_ns == done
    described = json.loads((out / "sweep.json").read_text())
    assert [m["name"] for m in described["members"]] == ["d16", "d32"]
    assert described["members"][0]["output"] == str(out / "d16")
    for m in described["members"]:
        member = out / m["name"]
        recorded = yaml.safe_load((member / "spec.yaml").read_text())
        assert recorded["stages"]["train"]["model"]["dim"] == m["values"]["stages.train.model.dim"]
        assert recorded["sweep"] is None
        plan = json.loads((member / "plan.json").read_text())
        assert plan["stages"]["train"]["params"]["total"] == m["params"]["train"]
        assert "--member" in plan["launch"]["torchrun"]
        lines = [json.loads(x) for x in (member / "train/metrics.jsonl").read_text().splitlines()]
        assert lines[-1]["step"] == 20
    assert os.path.getsize(out / "d16/train/final/done.json") > 0


@pytest.mark.slow
def test_a_member_with_a_non_finite_loss_does_not_stop_the_others(
    tmp_path: Path, one_thread: None, capsys: pytest.CaptureFixture
) -> None:
    path = write(tmp_path, {"grid": {"stages.train.optim.lr": {"huge": 1.0e30, "fine": 1.0e-3}}})
    assert main([path]) == 3  # the exit status says a member failed ...
    out = tmp_path / "out"
    assert not (out / "huge/train/final").exists()
    assert (out / "fine/train/final/done.json").exists()  # ... after the next member ran
    assert "1 member(s) stopped on a non-finite loss: member 0/2 huge" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        (  # one axis inside another: the later would overwrite the earlier's value
            {"grid": {"stages.train.optim.lr": [1e-3, 3e-3]}, "zip": {"stages.train.optim": [{"lr": 0.1}]}},
            "overlaps the swept key stages.train.optim.lr",
        ),
        (  # the budget derives the steps: sweeping them too would make identical members
            {
                "grid": {"stages.train.schedule.steps": [100, 200]},
                "budget": {"stage": "train", "flops": [1e9]},
            },
            "sets stages.train.schedule.steps, which the budget derives",
        ),
        ({"grid": {"run.seed": {"small": 1, "big": 2}}, "name": "s{seed:.0e}"}, "cannot format 'small'"),
        ({"grid": {"run.seed": [3, 2]}, "name": "{seed}"}, "not be all digits"),
        ({"grid": {"run.seed": {"..": 0, "ok": 1}}}, "cannot be a directory name"),
        ({"budget": {"stage": "train", "match": ["other", "other"]}}, "names a stage twice"),
    ],
    ids=["nested-keys", "budgeted-steps", "bad-format", "digit-names", "dot-names", "match-twice"],
)
def test_sweep_mistakes_are_spec_errors(tmp_path: Path, sweep: dict, message: str) -> None:
    path = write(tmp_path, sweep)
    if "match" in json.dumps(sweep):
        data = yaml.safe_load(Path(path).read_text())
        data["stages"]["other"] = data["stages"]["train"]
        Path(path).write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(SpecError, match=re.escape(message)):
        load(path)


def test_overrides_of_swept_keys_are_refused_and_one_member_is_priced_alone(tmp_path: Path) -> None:
    path = write(
        tmp_path, {"grid": {"stages.train.model.dim": [32, 64]}, "budget": {"stage": "train", "flops": [1e9]}}
    )
    with pytest.raises(SpecError, match="sets stages.train.model.dim, which the sweep sets for every member"):
        load(path, ["stages.train.model.dim=128"])
    with pytest.raises(SpecError, match="sets stages.train.schedule.steps"):
        load(path, ["stages.train.schedule.steps=5"])
    one = load(path, only="1")
    assert [m.name for m in one.members] == ["dim64-budget1e9"] and one.total == 2
    assert load(path, only="dim32-budget1e9").members[0].index == 0
    with pytest.raises(ValueError, match="no member 'dim99'"):
        load(path, only="dim99")
    # a sweep of derived steps alone: one member, the stage matched to another's FLOPs
    spec = yaml.safe_load(Path(path).read_text())
    spec["stages"]["other"] = spec["stages"]["train"]
    spec["sweep"] = {"budget": {"stage": "other", "match": ["train"]}}
    Path(path).write_text(yaml.safe_dump(spec), encoding="utf-8")
    (m,) = load(path).members
    assert m.name == "member0"
