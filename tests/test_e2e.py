"""End to end through the CLI: torchrun with 2 CPU ranks, the single-process run, plan and sample."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import REPO, SPEC, TINY, engine, env, torchrun

from engine.models.transformer import build
from engine.plan import make_plan
from engine.runtime.metrics import read_metrics
from schemas import load_spec


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_ranks_runs_the_spec(tmp_path):
    args = [
        SPEC,
        f"run.output={tmp_path}",
        *TINY,
        "stages.train.schedule.steps=30",
        "stages.train.checkpoint.every=10",
    ]
    r = torchrun("-m", "engine", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    stage = tmp_path / "train"
    done = json.loads((stage / "final" / "done.json").read_text())
    assert done["step"] == 30 and set(done["metrics"]) >= {"acc/train", "acc/eval"}
    rows = read_metrics(str(stage))
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [10, 20, 30]
    for key in ("loss", "lr", "grad_norm", "tokens", "flops", "examples_per_s", "tokens_per_s", "ce"):
        assert key in logged[-1], key
    assert logged[-1]["examples"] == 30 * 16, "both ranks' examples are counted"
    assert list((stage / "tb").glob("events.out.tfevents.*")), "TensorBoard events on rank 0"
    assert (tmp_path / "spec.yaml").exists() and (tmp_path / "plan.json").exists()
    # `tensorboard --logdir runs` works after the README's install, and reads what the run wrote
    tb = subprocess.run(
        [sys.executable, "-m", "tensorboard.main", "--inspect", "--logdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tb.returncode == 0, tb.stderr
    scalars = tb.stdout.split("scalars", 1)[1].split("tensor", 1)[0].split()
    assert {"loss", "lr", "acc/eval"} <= set(scalars), tb.stdout
    assert "step 30/30" in r.stdout and "[rank 1]" not in r.stdout, (
        "one progress line per log step, from rank 0"
    )
    weights = torch.load(stage / "final" / "model.pt", weights_only=True)
    assert all(not hasattr(t, "placements") for t in weights.values()), (
        "final/ holds full tensors, not shards"
    )


def test_plan_matches_the_built_model():
    """Parameter counts in the plan (pure Python) equal the torch model's, total and MoE-active."""
    moe = load_spec(SPEC.replace("sparse_parity.yaml", "sparse_parity_moe.yaml")).stages["train"]
    dense = load_spec(SPEC).stages["train"]
    for stage in (dense, moe):
        model = build(stage.model, stage.data.vocab_size)
        counted = stage.model.param_count(stage.data.vocab_size)
        assert counted.total == sum(p.numel() for p in model.parameters())
    ffn = moe.model.ffn
    counted = moe.model.param_count(moe.data.vocab_size)
    expert_params = 2 * moe.model.dim * ffn.hidden
    assert counted.total - counted.active == moe.model.depth * (ffn.experts - ffn.top_k) * expert_params


def test_plan_cli_and_json_agree():
    r = engine("plan", SPEC, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    expected = make_plan(load_spec(SPEC), SPEC).to_dict()
    assert data["stages"]["train"]["params"] == expected["stages"]["train"]["params"]
    assert data["launch"]["torchrun"].startswith("torchrun --standalone --nproc_per_node=2 -m engine")
    mixed = engine("plan", SPEC, "--json", "stages.train.model.depth=4")  # flags and overrides in any order
    assert mixed.returncode == 0, mixed.stderr
    assert (
        json.loads(mixed.stdout)["stages"]["train"]["params"]["total"]
        > data["stages"]["train"]["params"]["total"]
    )
    text = engine("plan", SPEC, "stages.train.model.depth=4").stdout
    assert "FLOPs/step" in text and "memory/rank" in text and "stages.train.model.depth=4" in text


def test_sample_prints_examples_with_answers():
    r = engine("sample", SPEC, "-n", "3", "--split", "eval")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("BOS") and "-> " in line for line in lines)
    assert all(33 <= int(line.split("L=")[1].rstrip(")")) <= 128 for line in lines)


def test_sample_into_a_pipe_that_closes_early_is_not_an_error():
    """`engine sample SPEC -n 2000 | head -1`: the reader leaves early; no BrokenPipeError traceback."""
    p = subprocess.Popen(
        [sys.executable, "-m", "engine", "sample", SPEC, "-n", "2000"],
        cwd=REPO,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().startswith("BOS")
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=60) == 0 and "Traceback" not in err, err


def test_unknown_stage_and_bad_spec_exit_2_without_traceback(tmp_path):
    r = engine(SPEC, f"run.output={tmp_path}", "--stage", "nope")
    assert r.returncode == 2 and "not a stage" in r.stderr and "Traceback" not in r.stderr
    r = engine(SPEC, "stages.train.model.heads=5")
    assert r.returncode == 2 and "stages.train.model.heads: 5 does not divide dim=64" in r.stderr


@pytest.mark.slow
def test_moe_spec_runs_and_logs_expert_load(tmp_path):
    from engine.runtime.distributed import Dist
    from engine.runtime.trainer import run_spec

    moe = SPEC.replace("sparse_parity.yaml", "sparse_parity_moe.yaml")
    spec = load_spec(moe, [f"run.output={tmp_path}", *TINY, "stages.train.schedule.steps=10"])
    run_spec(spec, Dist())
    row = read_metrics(str(tmp_path / "train"))[0]
    loads = [row[f"moe/load/{i}"] for i in range(8)]
    assert sum(loads) == pytest.approx(1.0, abs=1e-4)
    assert row["moe/load/max_over_mean"] >= 1.0
    assert row["moe/lb_loss"] >= 1.0 - 1e-4, "the Switch loss is at least 1 (its uniform-router minimum)"
    assert row["moe/z_loss"] > 0


def test_missing_video_manifest_is_a_clear_error_not_a_traceback(tmp_path):
    vitg = SPEC.replace("sparse_parity.yaml", "salt_vitg.yaml")
    for args in (["sample", vitg], [vitg, f"run.output={tmp_path}", "resources.device=cpu"]):
        r = engine(*args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "manifest V-3.6M/train.txt does not exist" in r.stderr and "by override" in r.stderr
        assert "Traceback" not in r.stdout + r.stderr
