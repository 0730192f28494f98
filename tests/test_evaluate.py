"""The `evaluate` stage and `engine evaluate`: finished weights scored without training, results files, reruns."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from helpers import engine

from engine import registry
from engine.runtime.checkpoint import load_final
from engine.runtime.distributed import Dist
from engine.runtime.rundir import RunDirConflict
from engine.runtime.trainer import run_spec
from schemas import load_spec
from schemas.objectives import NextToken
from schemas.spec import EvaluateStage

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = """
run: {{name: ev, output: {output}}}
resources: {{procs_per_node: 1}}
stages:
  long:
    model: {{kind: transformer, dim: 32, depth: 1, heads: 2, ffn: {{kind: dense, hidden: 64}}}}
    data: {{kind: copy, length: {{train: [2, 4], eval: [5, 6]}}}}
    optim: {{lr: 1.0e-2}}
    schedule: {{steps: 150, warmup: 10}}
    batch: {{global: 16}}
    logging: {{every: 20, tensorboard: false, console: false}}
    evals: [{{kind: exact_match, splits: [train, eval], every: 150, examples: 32}}]
  short:
    model: {{kind: transformer, dim: 32, depth: 1, heads: 2, ffn: {{kind: dense, hidden: 64}}}}
    data: {{kind: copy, length: {{train: [2, 4], eval: [5, 6]}}}}
    optim: {{lr: 1.0e-2}}
    schedule: {{steps: 10, warmup: 5}}
    batch: {{global: 16}}
    logging: {{every: 10, tensorboard: false, console: false}}
  compare:
    kind: evaluate
    models: {{long: {{stage: long}}, short: {{stage: short}}}}
    logging: {{tensorboard: false, console: false}}
    evals:
      - {{kind: exact_match, splits: [train], examples: 32}}
      - {{kind: sampling, n: 4, k: [1, 2], temperatures: [0.0, 1.0], examples: 8, max_new_tokens: 12}}
"""


def write_spec(tmp_path, output: str) -> str:
    """The spec above, writing to `output`, as a file."""
    path = tmp_path / "ev.yaml"
    path.write_text(textwrap.dedent(SPEC.format(output=output)))
    return str(path)


def test_an_evaluate_stage_scores_each_model_as_its_evaluators_would(tmp_path):
    out = tmp_path / "run"
    spec = load_spec(write_spec(tmp_path, str(out)))
    results = run_spec(spec, Dist())
    got = results["compare"]
    assert set(got) >= {"long/acc/train", "short/acc/train", "long/pass@2/eval/T1", "short/maj@1/eval/T0"}
    # the same evaluator, built by hand on the loaded final weights, gives the same numbers
    stage: EvaluateStage = spec.stages["compare"]
    data = spec.stages["long"].data
    gen = registry.build_data(data)
    for label in ("long", "short"):
        model = registry.build_model(spec.stages[label].model, spec.stages[label].vocab_size)
        model.load_state_dict(load_final(f"{out}/{label}/final"))
        model.eval()

        class Ctx:
            stage, vocab_size = spec.stages[label], spec.stages[label].vocab_size

        objective = registry.build_objective(NextToken(), {"model": model}, Ctx())
        ev = registry.build_eval(stage.evals[0], gen=gen, data_cfg=data, seed=0, stage="compare", dist=Dist())
        with torch.no_grad():
            assert ev(objective, 0) == {"acc/train": got[f"{label}/acc/train"]}
    # the longer-trained model is the better one, and the files say what was logged
    assert got["long/acc/train"] > got["short/acc/train"]
    record = json.loads((out / "compare" / "evals" / "exact_match.json").read_text())
    assert record["models"] == {k: {"acc/train": got[f"{k}/acc/train"]} for k in ("long", "short")}
    assert record["evaluator"]["kind"] == "exact_match"
    assert (out / "compare" / "evals" / "exact_match.md").read_text().startswith("| model | acc/train |")
    assert (out / "compare" / "evals" / "sampling.png").exists()
    # train stages write their evaluators' last results too
    long = json.loads((out / "long" / "evals" / "exact_match.json").read_text())
    done = json.loads((out / "long" / "final" / "done.json").read_text())
    assert long["models"] == {"long": done["metrics"]}
    # a rerun skips the finished evaluation; changed evaluators are a different evaluation: refused
    assert run_spec(spec, Dist())["compare"] == got
    changed = load_spec(write_spec(tmp_path, str(out)), ["stages.compare.evals.0.examples=16"])
    with pytest.raises(RunDirConflict, match="evals"):
        run_spec(changed, Dist())


@pytest.mark.slow
def test_engine_evaluate_reruns_a_finished_stages_evaluators(tmp_path):
    out = tmp_path / "run"
    path = write_spec(tmp_path, str(out))
    r = engine(path, "--stage", "long")
    assert r.returncode == 0, r.stderr
    done = json.loads((out / "long" / "final" / "done.json").read_text())
    (out / "long" / "evals" / "exact_match.json").unlink()
    r = engine("evaluate", path, "--stage", "long")
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "long" / "evals" / "exact_match.json").read_text())
    assert record["models"] == {"long": done["metrics"]}, "the same weights and prompts give the same numbers"
    r = engine("evaluate", path, "--stage", "short")
    assert r.returncode == 2 and "stage short has no evaluators" in r.stderr
    r = engine("evaluate", path, "--stage", "compare")  # its model `short` was never trained
    assert r.returncode == 2 and "stage short has not finished" in r.stderr, r.stderr
    r = engine("evaluate", path, "--stage", "nope")
    assert r.returncode == 2 and "'nope' is not a stage" in r.stderr
