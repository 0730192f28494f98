"""A run directory never silently holds the results of another spec: stage fingerprints, refusals that name the
changed fields, accepted extensions, spec.yaml and its history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import SPEC, TINY, engine

from engine.runtime.distributed import Dist
from engine.runtime.rundir import RunDirConflict
from engine.runtime.trainer import run_spec
from schemas import load_spec

pytestmark = pytest.mark.usefixtures("one_thread")

RUN = [
    *TINY,
    "stages.train.schedule.steps=20",
    "stages.train.checkpoint.every=10",
    "stages.train.evals.0.every=20",
]


def run(out: Path, *overrides: str, accept: bool = False, spec: str = SPEC) -> dict:
    """Run the tiny sparse-parity spec in this process; each stage's final metrics."""
    return run_spec(load_spec(spec, [f"run.output={out}", *RUN, *overrides]), Dist(), accept=accept)


def snapshot(out: Path) -> dict[str, int]:
    """Every file under the run directory with its size (to prove that nothing was written)."""
    return {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}


def history(out: Path) -> list[dict]:
    """The entries of spec_history.jsonl."""
    return [json.loads(line) for line in (out / "spec_history.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("stages.train.optim.lr=0.001", "stages.train.optim.lr: 0.003 -> 0.001"),
        ("stages.train.model.dim=48", "stages.train.model.dim: 32 -> 48"),
        ("stages.train.data.k=[1, 2]", "stages.train.data.k.1: 3 -> 2"),
        ("run.seed=1", "run.seed: 0 -> 1"),
    ],
)
def test_changed_spec_is_refused_with_the_fields_and_writes_nothing(tmp_path, override, field):
    run(tmp_path)
    before, spec_yaml = snapshot(tmp_path), (tmp_path / "spec.yaml").read_text()
    with pytest.raises(RunDirConflict) as e:
        run(tmp_path, override)
    message = str(e.value)
    assert field in message and "holds final weights" in message
    assert "run.output=<new path>" in message and "revert" in message
    assert snapshot(tmp_path) == before, "a refused run must not write anything"
    assert (tmp_path / "spec.yaml").read_text() == spec_yaml


@pytest.mark.slow
def test_half_finished_stage_with_another_dim_is_refused_not_a_size_mismatch(tmp_path):
    """A new model.dim on a stage with checkpoints used to end in a size-mismatch traceback after loading."""
    run(tmp_path)
    (tmp_path / "train" / "final" / "done.json").unlink()  # as if killed after its last checkpoint
    r = engine(SPEC, f"run.output={tmp_path}", *RUN, "stages.train.model.dim=48")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "holds a checkpoint at step 20" in r.stderr and "stages.train.model.dim: 32 -> 48" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) < 12


@pytest.mark.slow
def test_operational_changes_resume_freely_and_are_recorded(tmp_path, caplog):
    """Logging, evaluation and checkpoint settings do not change the weights: a finished stage is still
    skipped, and spec.yaml and its history follow the new spec."""
    run(tmp_path)
    assert len(history(tmp_path)) == 1
    weights = torch.load(tmp_path / "train" / "final" / "model.pt", weights_only=True)
    caplog.set_level("INFO", logger="engine")
    run(
        tmp_path,
        "stages.train.logging.every=5",
        "stages.train.evals.0.every=10",
        "stages.train.checkpoint.keep_last=3",
    )
    assert "every: 5" in (tmp_path / "spec.yaml").read_text()
    entries = history(tmp_path)
    assert len(entries) == 2 and "every: 5" in entries[1]["spec"] and entries[1]["accepted"] == {}
    assert "train: already complete" in caplog.text, "the finished stage is skipped, not retrained"
    after = torch.load(tmp_path / "train" / "final" / "model.pt", weights_only=True)
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    run(
        tmp_path,
        "stages.train.logging.every=5",
        "stages.train.evals.0.every=10",
        "stages.train.checkpoint.keep_last=3",
    )
    assert len(history(tmp_path)) == 2, "the same spec again adds no history entry"


@pytest.mark.slow
def test_extending_a_finished_stage_needs_acceptance_then_resumes_from_its_last_step(tmp_path, caplog):
    run(tmp_path)
    with pytest.raises(RunDirConflict, match="stages.train.schedule.steps: 20 -> 30") as e:
        run(tmp_path, "stages.train.schedule.steps=30")
    assert "--accept-changes" in str(e.value)
    caplog.set_level("INFO", logger="engine")
    run(tmp_path, "stages.train.schedule.steps=30", accept=True)
    assert "resumed from step 20" in caplog.text
    assert [p.name.split("-")[0] for p in (tmp_path / "train").glob("final.superseded-*")] == [
        "final.superseded"
    ]
    assert json.loads((tmp_path / "train" / "final" / "done.json").read_text())["step"] == 30
    entries = history(tmp_path)
    assert entries[-1]["accepted"] == {"train": [["stages.train.schedule.steps", 20, 30]]}
    recorded = json.loads((tmp_path / "train" / "fingerprint.json").read_text())
    assert recorded["fields"]["stages.train.schedule.steps"] == 30
    run(tmp_path, "stages.train.schedule.steps=30")  # now recorded: no acceptance needed, stage skipped


@pytest.mark.slow
def test_accepting_cannot_shorten_a_stage_or_hide_other_changes(tmp_path):
    run(tmp_path)
    with pytest.raises(RunDirConflict, match="cannot be shortened"):
        run(tmp_path, "stages.train.schedule.steps=15", accept=True)
    with pytest.raises(RunDirConflict, match="optim.lr"):
        run(tmp_path, "stages.train.schedule.steps=30", "stages.train.optim.lr=0.001", accept=True)
    assert not list((tmp_path / "train").glob("final.superseded-*"))


TWO_STAGES = """\
extends: {base}
stages:
  train: {{}}
  sft:
    init: {{stage: train}}
    model: {{kind: transformer, dim: 32, depth: 1, heads: 2, ffn: {{hidden: 64}}}}
    data: {{kind: sparse_parity, k: [1, 3], length: {{train: [8, 32], eval: [33, 128]}}}}
    schedule: {{steps: 10, warmup: 2}}
    batch: {{global: 16}}
    checkpoint: {{every: 10}}
    logging: {{every: 10}}
"""


@pytest.mark.slow
def test_a_stage_trained_from_a_changed_stage_is_refused(tmp_path):
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_STAGES.format(base=SPEC))
    out = tmp_path / "out"
    run(out, spec=str(spec))
    with pytest.raises(RunDirConflict) as e:
        run(out, "stages.train.schedule.steps=30", spec=str(spec), accept=True)
    message = str(e.value)
    assert "stage sft" in message and "init (stage 'train' as trained)" in message
    assert f"move {out / 'sft'} aside" in message
    assert not list((out / "train").glob("final.superseded-*")), "nothing is applied when any stage refuses"


@pytest.mark.slow
def test_directory_without_fingerprints_is_checked_against_its_spec_yaml(tmp_path):
    """Run directories written before fingerprints existed are compared with the spec.yaml they hold."""
    run(tmp_path)
    (tmp_path / "train" / "fingerprint.json").unlink()
    with pytest.raises(RunDirConflict, match="optim.lr: 0.003 -> 0.001"):
        run(tmp_path, "stages.train.optim.lr=0.001")
    run(tmp_path)  # unchanged: skipped as before


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("memory://run", "is lost when the run exits"),
        ("{file}/run", "is not writable (Not a directory)"),
    ],
)
def test_output_the_run_cannot_keep_is_refused_before_any_compute(tmp_path, output, message):
    (tmp_path / "file").write_text("a file, not a directory")
    output = output.format(file=tmp_path / "file")
    r = engine(SPEC, f"run.output={output}", *RUN)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert "starting" not in r.stdout, "nothing may run"
