"""tools/frontier.py: Pareto frontier, FLOPs with dependency stages, running members, threshold table, errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("frontier_tool", REPO / "tools" / "frontier.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["frontier_tool"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


frontier = _load()


# ----------------------------------------------------------------------------- fake run directories


def write_stage(
    member: Path,
    stage: str,
    flops: float | None,
    rows: list[dict[str, Any]],
    done: bool = True,
    tail: str = "",
) -> None:
    """A stage's metrics.jsonl (plus a half-written `tail`) and, when done, its final/done.json."""
    d = member / stage
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    if done:
        (d / "final").mkdir(exist_ok=True)
        (d / "final" / "done.json").write_text(json.dumps({"stage": stage, "step": 10, "flops": flops}))


def write_spec(member: Path, stages: dict[str, Any]) -> None:
    """A member's resolved spec.yaml."""
    member.mkdir(parents=True, exist_ok=True)
    (member / "spec.yaml").write_text(
        yaml.safe_dump({"run": {"output": str(member)}, "stages": stages}, sort_keys=False)
    )


def write_sweep(root: Path, axes: dict[str, list], members: list[tuple[str, dict[str, Any]]]) -> None:
    """sweep.json per the contract."""
    root.mkdir(parents=True, exist_ok=True)
    doc = {
        "spec": "specs/x.yaml",
        "overrides": [],
        "output": str(root),
        "axes": axes,
        "members": [
            {"index": i, "name": n, "output": str(root / n), "values": v} for i, (n, v) in enumerate(members)
        ],
    }
    (root / "sweep.json").write_text(json.dumps(doc))


def lm_member(root: Path, name: str, flops: float, loss: float, done: bool = True, tail: str = "") -> None:
    """A one-stage training member whose loss falls to `loss` at `flops`."""
    write_spec(root / name, {"train": {"model": {"dim": 8}}})
    rows = [
        {"step": 5, "loss": loss + 1, "flops": flops / 2},
        {"step": 10, "loss": loss, "flops": flops},
        {"step": 10, "acc/eval": 0.5},
    ]
    write_stage(root / name, "train", flops, rows, done=done, tail=tail)


# ----------------------------------------------------------------------------- 1. Pareto


def test_pareto_minimize_maximize_and_ties() -> None:
    xy = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.0, 3.5), (5.0, 1.0)]
    # lower is better: (3,4) is beaten by (2,3); (2,3.5) ties (2,3) on FLOPs and is worse; (5,1) by (4,1)
    assert frontier.pareto(xy, maximize=False) == [True, True, False, True, False, False]
    # higher is better: only the cheapest point (1,5) and nothing beats 5 at more FLOPs
    assert frontier.pareto(xy, maximize=True) == [True, False, False, False, False, False]
    up = [(1.0, 0.2), (2.0, 0.5), (2.0, 0.4), (3.0, 0.45), (4.0, 0.9)]
    assert frontier.pareto(up, maximize=True) == [True, True, False, False, True]
    # exact duplicates dominate neither each other: both stay
    assert frontier.pareto([(1.0, 2.0), (1.0, 2.0), (2.0, 2.0)], maximize=False) == [True, True, False]


# ----------------------------------------------------------------------------- 2. FLOPs with dependencies


def salt_member(member: Path) -> None:
    """teacher (1e12) -> student (objective.teacher.stage, 3e12); vjepa (5e12); probes of each and a random."""
    probe = {"kind": "probe", "probe": {"kind": "linear_probe"}}
    write_spec(
        member,
        {
            "teacher": {"objective": {"kind": "pixel_reconstruction"}},
            "student": {"objective": {"kind": "latent_prediction", "teacher": {"stage": "teacher"}}},
            "vjepa": {"objective": {"kind": "ema_latent_prediction"}},
            "p_student": {**probe, "encoder": {"stage": "student"}},
            "p_vjepa": {**probe, "encoder": {"stage": "vjepa"}},
            "p_random": {**probe, "encoder": {"random": "student"}},
        },
    )
    for stage, flops in (("teacher", 1e12), ("student", 3e12), ("vjepa", 5e12)):
        write_stage(member, stage, flops, [{"step": 10, "loss": 0.1, "flops": flops}])
    for stage, enc, top1 in (
        ("p_student", "student", 0.8),
        ("p_vjepa", "vjepa", 0.6),
        ("p_random", None, 0.3),
    ):
        (member / stage).mkdir()
        res = {
            "encoder": enc or "random",
            "encoder_stage": enc or "student",
            "kind": "linear_probe",
            "task": "direction",
            "top1": top1,
        }
        (member / stage / "results.json").write_text(json.dumps(res))


def test_encoder_flops_include_dependency_stages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    salt_member(tmp_path / "run")
    stages = yaml.safe_load((tmp_path / "run" / "spec.yaml").read_text())["stages"]
    assert frontier.dependencies(stages, "p_student") == ["teacher", "student", "p_student"]
    assert frontier.dependencies(stages, "p_random") == ["p_random"]  # {random: X} loads no weights

    out = tmp_path / "out"
    assert frontier.main([str(tmp_path / "run"), "--metric", "top1", "-o", str(out)]) == 0
    doc = json.loads((out / "frontier.json").read_text())
    x = {p["series"]: p["flops"] for p in doc["points"]}
    assert x == {"student": 4e12, "vjepa": 5e12, "random": 0.0}
    assert doc["direction"] == "maximize"
    on = {p["series"]: p["frontier_all"] for p in doc["points"]}
    assert on == {"student": True, "vjepa": False, "random": True}  # vjepa costs more and probes worse
    assert "| direction / linear_probe | student | run | p_student | 4e+12 | 0.8 | series, all |" in (
        capsys.readouterr().out
    )


# ----------------------------------------------------------------------------- 3. a member still running


def test_running_member_skipped_rest_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "sweep"
    values = [("a-d8", 8, 1e9, 2.0), ("a-d16", 16, 4e9, 1.5), ("a-d32", 32, 1.6e10, 1.6)]
    write_sweep(
        sweep,
        {"stages.train.model.dim": [8, 16, 32, 64]},
        [(n, {"stages.train.model.dim": d}) for n, d, _, _ in values]
        + [("a-d64", {"stages.train.model.dim": 64})],
    )
    for name, _, flops, loss in values:
        lm_member(sweep, name, flops, loss)
    lm_member(sweep, "a-d64", 6.4e10, 1.0, done=False, tail='{"step": 15, "loss": 0.9, "fl')

    assert frontier.main([str(sweep), "--label", "dim"]) == 0
    out, err = capsys.readouterr()
    assert "skipped a-d64: stage(s) train not finished" in err
    assert "a-d64" not in out
    doc = json.loads((sweep / "frontier" / "frontier.json").read_text())
    assert doc["direction"] == "minimize"
    assert {p["member"]: p["frontier"] for p in doc["points"]} == {
        "a-d8": True,
        "a-d16": True,
        "a-d32": False,
    }
    assert (sweep / "frontier" / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        "| - | a-d16 | 16 | train | 4e+09 | 1.5 | series, all |"
        in (sweep / "frontier" / "frontier.md").read_text()
    )

    # --partial draws it at the FLOPs of its last complete line, marked partial
    assert frontier.main([str(sweep), "--partial", "-o", str(tmp_path / "p")]) == 0
    doc = json.loads((tmp_path / "p" / "frontier.json").read_text())
    running = [p for p in doc["points"] if p["member"] == "a-d64"]
    assert running and running[0]["partial"] and running[0]["flops"] == 6.4e10


# ----------------------------------------------------------------------------- 4. threshold table


def test_smallest_width_per_group(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "rf"
    axes = {
        "stages.train.model.width": [16, 64, 256],
        "stages.train.data.n": [4, 8],
        "mode": ["frozen", "trained"],
    }
    # accuracy per (n, mode) and width; (8, frozen) never reaches 0.99
    acc = {
        (4, "frozen"): {16: 0.90, 64: 0.995, 256: 1.0},
        (4, "trained"): {16: 0.991, 64: 1.0, 256: 1.0},
        (8, "frozen"): {16: 0.6, 64: 0.8, 256: 0.97},
        (8, "trained"): {16: 0.7, 64: 0.98, 256: 0.999},
    }
    members = []
    for (n, mode), by_width in acc.items():
        for w, a in by_width.items():
            name = f"n{n}-{mode}-w{w}"
            members.append((name, {"stages.train.model.width": w, "stages.train.data.n": n, "mode": mode}))
            write_spec(sweep / name, {"train": {"model": {"width": w}}})
            write_stage(
                sweep / name, "train", w * 1e6, [{"step": 1, "loss": 1.0, "flops": w * 1e6, "acc": a}]
            )
    write_sweep(sweep, axes, members)

    argv = [str(sweep), "--metric", "acc", "--smallest", "width", "--reach", "0.99", "--by", "n,mode"]
    assert frontier.main(argv) == 0
    out = capsys.readouterr().out
    rows = json.loads((sweep / "frontier" / "smallest.json").read_text())["rows"]
    got = {(r["stages.train.data.n"], r["mode"]): r["smallest"] for r in rows}
    assert got == {(4, "frozen"): 64, (4, "trained"): 16, (8, "frozen"): None, (8, "trained"): 256}
    assert "none reached (best 0.97 at width=256)" in out
    assert "none reached (best 0.97 at width=256)" in (sweep / "frontier" / "smallest.md").read_text()


# ----------------------------------------------------------------------------- 5. errors


def test_errors_name_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert frontier.main([str(empty)]) == 2
    assert f"no members in {empty}" in capsys.readouterr().err

    sweep = tmp_path / "sweep"
    write_sweep(sweep, {"stages.train.model.dim": [8], "stages.train.data": ["copy"]}, [("m", {})])
    lm_member(sweep, "m", 1e9, 1.0)
    assert frontier.main([str(sweep), "--series", "width"]) == 2
    err = capsys.readouterr().err
    assert "unknown axis 'width'; the axes are: stages.train.model.dim, stages.train.data" in err

    assert frontier.main([str(sweep), "--metric", "bleu"]) == 2
    err = capsys.readouterr().err
    assert "no member logs 'bleu'" in err and "acc/eval, flops, loss, step" in err
