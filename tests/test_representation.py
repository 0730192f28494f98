"""The representation evaluator (engine/evals/representation.py): effective rank by hand, collapse, the fixed
set, the warning, and the same values on 2 FSDP ranks as in one process."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from helpers import REPO, torchrun

from engine import registry
from engine.data.stream import EVAL, counter_rng, stage_key
from engine.data.video import Clips
from engine.evals.representation import MASKS, Moments, effective_rank, feature_rank
from engine.runtime.distributed import Dist
from engine.runtime.metrics import read_metrics
from engine.runtime.trainer import StageRunner, run_spec
from schemas import load_spec

SALT = str(REPO / "specs" / "salt_tiny.yaml")


def test_effective_rank_of_hand_computed_singular_values():
    """s = (3, 1): p = (3/4, 1/4), H = -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.5623, exp(H) = 1.7548; D equal values
    give D; zeros count for nothing; no spread at all gives 0."""
    assert effective_rank(torch.tensor([3.0, 1.0])) == pytest.approx(1.7548, abs=1e-4)
    assert effective_rank(torch.tensor([3.0, 1.0, 0.0])) == pytest.approx(1.7548, abs=1e-4)
    assert effective_rank(torch.full((7,), 2.5)) == pytest.approx(7.0)
    assert effective_rank(torch.zeros(4)) == 0.0


def test_collapsed_features_have_rank_one_and_spread_ones_rank_d():
    """Rows on one line (plus a shared offset, which centring removes) score 1; rows +-e_i score D; a diagonal
    matrix's centred rows score what their singular values give."""
    g = torch.Generator().manual_seed(0)
    d = 16
    direction, offset = torch.randn(d, generator=g), torch.randn(d, generator=g)
    collapsed = torch.randn(200, 1, generator=g) * direction + offset
    assert feature_rank(collapsed) == pytest.approx(1.0, abs=1e-6)
    eye = torch.eye(d)
    assert feature_rank(torch.cat([eye, -eye])) == pytest.approx(d, rel=1e-9)
    # rows (+-3, 0) and (0, +-1): centred singular values sqrt(18) and sqrt(2), i.e. in ratio 3 : 1
    diag = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert feature_rank(diag) == pytest.approx(1.7548, abs=1e-4)


def test_moments_of_parts_sum_to_the_moments_of_the_whole():
    """Rows added in two parts (two ranks' shares) give the singular values of all rows at once (numpy's SVD)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64) @ torch.randn(
        6, 6, generator=g, dtype=torch.float64
    )
    a, b = Moments(6, torch.device("cpu")), Moments(6, torch.device("cpu"))
    a.add(x[:20])
    b.add(x[20:])
    b.add(x[:5], weight=0.0)  # a padding forward adds nothing
    a.count, a.sum, a.gram = a.count + b.count, a.sum + b.sum, a.gram + b.gram
    expected = torch.linalg.svdvals(x - x.mean(0))
    torch.testing.assert_close(a.singular_values(), expected, rtol=1e-9, atol=1e-9)
    assert a.effective_rank() == pytest.approx(
        math.exp(float(-(p := expected / expected.sum()).mul(p.log()).sum()))
    )


def evaluator(tmp_path: Path, stage: str, *overrides: str):
    """A built stage of salt_tiny (fresh weights) and its representation evaluator."""
    spec = load_spec(SALT, [f"run.output={tmp_path}", *overrides])
    runner = StageRunner(spec, stage, spec.stages[stage], Dist())
    runner.build()
    (cfg,) = spec.stages[stage].evals
    ev = registry.build_eval(
        cfg, gen=runner.gen, data_cfg=spec.stages[stage].data, seed=0, stage=stage, dist=Dist()
    )
    for m in runner.models.values():
        m.eval()
    return runner, ev


def test_values_are_fixed_and_a_rank_below_warn_below_is_a_warning(tmp_path, one_thread, caplog):
    """Two evaluations of the same weights give the same values (fixed clips and masks); loss/relative is the
    loss over the mean predictor's; rank/pooled under warn_below logs a warning naming stage, step and value."""
    runner, ev = evaluator(
        tmp_path,
        "teacher",
        "stages.teacher.evals=[{kind: representation, examples: 24, batch: 8, warn_below: 1000}]",
    )
    with caplog.at_level(logging.WARNING, logger="engine"):
        first = ev(runner.objective, 7)
    assert first == ev(runner.objective, 7)
    d = runner.stage.model.dim
    assert 1.0 < first["rank/pooled"] < min(24, d) and 1.0 < first["rank/tokens"] <= d
    assert first["loss/relative"] > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per evaluation
    message = warnings[0]
    assert message.startswith(
        f"teacher step 7: rank/pooled {first['rank/pooled']:.2f} is below warn_below=1000"
    )
    assert "representation collapse" in message
    ev.cfg.warn_below = None
    ev(runner.objective, 8)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2  # null: never


def test_loss_relative_is_the_objective_loss_over_its_mean_baseline(tmp_path, one_thread):
    """One group of 8 clips: loss/relative is exactly the objective's loss divided by loss/mean_baseline on the
    clips and masks the evaluator holds."""
    runner, ev = evaluator(
        tmp_path, "teacher", "stages.teacher.evals=[{kind: representation, examples: 8, batch: 8}]"
    )
    ((g, clips, weight),) = ev.groups
    assert (g, len(clips), weight) == (0, 8, 1.0)
    masks = runner.objective.augment(counter_rng(0, stage_key("teacher"), EVAL, MASKS, 0), 8)
    batch = runner.objective.collate(Clips(clips.video, clips.labels, masks), torch.device("cpu"))
    with torch.no_grad():
        loss, metrics = runner.objective(batch)
    assert ev(runner.objective, 0)["loss/relative"] == pytest.approx(
        float(loss / metrics["loss/mean_baseline"])
    )


@pytest.mark.slow
@pytest.mark.distributed
def test_two_fsdp_ranks_train_and_evaluate_like_one_process(tmp_path):
    """salt_tiny's teacher, 2 steps of 8 clips, evaluated on 20 clips in groups of 8 (3 groups: rank 1 pads
    with a repeat): on 2 FSDP ranks (one encoder call per step with a list of keeps) the losses and the
    representation values equal one process's (fp32; reductions in another order)."""
    overrides = [
        "stages.teacher.schedule.steps=2",
        "stages.teacher.schedule.warmup=1",
        "stages.teacher.batch.global=8",
        "stages.teacher.logging.every=1",
        "stages.teacher.checkpoint.every=2",
        "stages.teacher.evals=[{kind: representation, examples: 20, batch: 8}]",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    spec = load_spec(SALT, [f"run.output={one}", *overrides])
    run_spec(spec, Dist(), only="teacher")
    r = torchrun("-m", "engine", SALT, f"run.output={two}", *overrides, "--stage", "teacher")
    assert r.returncode == 0, r.stdout + r.stderr

    def rows(out: Path) -> dict[int, dict[str, float]]:
        by_step: dict[int, dict[str, float]] = {}
        for row in read_metrics(str(out / "teacher")):
            by_step.setdefault(row["step"], {}).update(row)
        return by_step

    a, b = rows(one), rows(two)
    for step in (1, 2):
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-5), step
    for key in ("rank/tokens", "rank/pooled", "loss/relative"):
        assert b[2][key] == pytest.approx(a[2][key], rel=1e-5), key
    results = json.loads((two / "teacher" / "evals" / "representation.json").read_text())
    assert results["models"]["teacher"]["rank/pooled"] == pytest.approx(a[2]["rank/pooled"], rel=1e-5)
