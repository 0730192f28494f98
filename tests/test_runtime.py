"""The runtime in one process: schedule, checkpoints on fsspec URLs, accumulation, init, faults, learning."""

from __future__ import annotations

import json
import math

import fsspec
import pytest
import torch
from helpers import SPEC, TINY

from engine.objectives.next_token import NextToken
from engine.runtime.checkpoint import Checkpointer, load_final
from engine.runtime.distributed import Dist
from engine.runtime.metrics import read_metrics
from engine.runtime.trainer import NonFiniteLoss, lr_factor, run_spec
from schemas import load_spec
from schemas.training import Schedule


def spec_for(out: str, *overrides: str):
    """The tiny sparse-parity spec writing to `out`."""
    return load_spec(SPEC, [f"run.output={out}", *TINY, *overrides])


def test_lr_schedule_warmup_then_cosine_to_min():
    s = Schedule(steps=110, warmup=10, warmup_start=0.0, decay="cosine", min_lr=0.1)
    assert lr_factor(s, 0) == pytest.approx(0.1)
    assert lr_factor(s, 9) == pytest.approx(1.0)
    assert lr_factor(s, 10) == pytest.approx(1.0)
    assert lr_factor(s, 60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(s, 110) == pytest.approx(0.1)
    lin = Schedule(steps=20, warmup=0, decay="linear")
    assert [lr_factor(lin, i) for i in (0, 10, 20)] == pytest.approx([1.0, 0.5, 0.0])
    assert lr_factor(Schedule(steps=5, decay="constant"), 4) == 1.0


def _model_and_optim(seed: int):
    from engine.models.transformer import build
    from engine.runtime.trainer import build_optimizer
    from schemas.models import Transformer
    from schemas.training import AdamW

    torch.manual_seed(seed)
    model = build(Transformer(dim=16, depth=1, heads=2), 8)
    return model, build_optimizer(AdamW(), {"model": model})


@pytest.mark.parametrize("root", ["memory://ckpt-test", "file"])
def test_checkpointer_ignores_incomplete_and_prunes(tmp_path, root):
    url = f"{tmp_path}/ck" if root == "file" else f"{root}/{tmp_path.name}"
    ck = Checkpointer(url, keep_last=2, dist=Dist())
    model, optim = _model_and_optim(0)
    for step in (10, 20, 30):
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        ck.save(step, {"model": model}, optim, {"note": step})
    assert ck.complete() == [20, 30], "keep_last=2 keeps the two newest"
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(f"{path}/step-00000040", exist_ok=True)  # an interrupted save: shards but no train_state.json
    fs.pipe(f"{path}/step-00000040/__0_0.distcp", b"garbage")
    assert ck.complete() == [20, 30]
    fresh, fresh_optim = _model_and_optim(1)
    state = ck.restore({"model": fresh}, fresh_optim)
    assert state["step"] == 30 and state["note"] == 30
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_gradient_accumulation_matches_one_big_step(tmp_path):
    whole = spec_for(str(tmp_path / "a"), "stages.train.schedule.steps=6")
    accum = spec_for(str(tmp_path / "b"), "stages.train.schedule.steps=6", "stages.train.batch.micro=4")
    run_spec(whole, Dist())
    run_spec(accum, Dist())
    a, b = load_final(f"{tmp_path}/a/train/final"), load_final(f"{tmp_path}/b/train/final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_run_on_memory_filesystem_and_init_from_earlier_stage(tmp_path):
    spec = spec_for("memory://runs/two-stage", "stages.train.schedule.steps=5")
    data = spec.model_dump(by_alias=True)
    data["stages"]["tune"] = {**data["stages"]["train"], "init": {"stage": "train"}}
    data["stages"]["tune"]["optim"] = {**data["stages"]["tune"]["optim"], "lr": 1e-9}
    spec = type(spec).model_validate(data)
    run_spec(spec, Dist())
    fs = fsspec.filesystem("memory")
    assert fs.exists("/runs/two-stage/train/final/done.json")
    assert read_metrics("memory://runs/two-stage/tune")[-1]["step"] == 5
    first = load_final("memory://runs/two-stage/train/final")
    second = load_final("memory://runs/two-stage/tune/final")
    # lr 1e-9: the second stage starts from the first stage's weights and barely moves.
    for k in first:
        torch.testing.assert_close(second[k], first[k], atol=1e-6, rtol=0)
    done = json.loads(fs.cat("/runs/two-stage/tune/final/done.json"))
    assert done["step"] == 5 and done["tokens"] > 0


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step_and_keeps_checkpoint(tmp_path, monkeypatch):
    spec = spec_for(str(tmp_path), "stages.train.schedule.steps=20", "stages.train.checkpoint.every=5")
    real = NextToken.__call__
    calls = {"n": 0}

    def poisoned(self, batch):
        calls["n"] += 1
        loss, metrics = real(self, batch)
        return (loss * math.nan if calls["n"] == 8 else loss), metrics

    monkeypatch.setattr(NextToken, "__call__", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"at step 8; .*checkpoint \(step 5\) is kept"):
        run_spec(spec, Dist())
    assert (tmp_path / "train" / "checkpoints" / "step-00000005" / "train_state.json").exists()
    assert not (tmp_path / "train" / "final").exists()


@pytest.mark.slow
def test_tiny_sparse_parity_learns(tmp_path):
    """The quickstart spec, shortened: the loss falls below 0.2 and training-length accuracy exceeds 0.9."""
    spec = load_spec(
        SPEC,
        [
            f"run.output={tmp_path}",
            "stages.train.schedule.steps=300",
            "stages.train.evals.0.every=300",
            "stages.train.checkpoint.every=1000",
        ],
    )
    results = run_spec(spec, Dist())
    rows = read_metrics(str(tmp_path / "train"))
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[0] > 0.6, "starts at chance (ln 2 ~ 0.69)"
    assert losses[-1] < 0.2, losses
    assert results["train"]["acc/train"] > 0.9, results


@pytest.mark.slow
def test_activation_checkpointing_gives_the_same_training(tmp_path):
    """Recomputing each block in backward changes memory, not results (deterministic CPU kernels)."""
    plain = spec_for(str(tmp_path / "a"), "stages.train.schedule.steps=6")
    ac = spec_for(
        str(tmp_path / "b"),
        "stages.train.schedule.steps=6",
        "stages.train.distributed.activation_checkpointing=true",
    )
    run_spec(plain, Dist())
    run_spec(ac, Dist())
    a, b = load_final(f"{tmp_path}/a/train/final"), load_final(f"{tmp_path}/b/train/final")
    assert a.keys() == b.keys(), "checkpoint wrappers must not leak into the saved names"
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-6)


def test_weight_decay_ramp_is_a_cosine_from_start_to_end():
    from engine.runtime.trainer import weight_decay_at
    from schemas.training import AdamW

    s = Schedule(steps=100)
    cfg = AdamW(weight_decay=0.04, weight_decay_end=0.4)
    assert weight_decay_at(cfg, s, 0) == pytest.approx(0.04)
    assert weight_decay_at(cfg, s, 50) == pytest.approx(0.22)
    assert weight_decay_at(cfg, s, 100) == pytest.approx(0.4)
    assert weight_decay_at(AdamW(weight_decay=0.1), s, 70) == 0.1
