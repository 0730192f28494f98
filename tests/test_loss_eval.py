"""The loss evaluator (engine/evals/loss.py): the objective's own loss on its data, other data of the same
vocabulary, the spec's rules (vocabulary, split, names), the world-size-free reduction, and a real tiny run."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import SPEC, TINY, train_in_process

from engine import registry
from engine.objectives.base import Batch
from engine.runtime.context import BuildContext
from engine.runtime.distributed import Dist, LaunchError
from schemas import SpecError, load_spec

COPY4 = "{kind: copy, symbols: 4, length: {train: [1, 6], eval: [7, 10]}}"


def _spec(evals: str, data: str = COPY4, extra: tuple[str, ...] = (), output: str = "runs/unused"):
    """The sparse-parity spec made tiny, on `data`, with `evals` (YAML flow list)."""
    return load_spec(
        SPEC,
        [
            *TINY[:-2],
            f"run.output={output}",
            f"stages.train.data={data}",
            f"stages.train.evals={evals}",
            *extra,
        ],
    )


def _built(spec, dist: Dist | None = None):
    """The train stage's generator, objective (fresh seeded weights) and evaluators, on `dist` (one rank)."""
    dist = dist or Dist()
    stage = spec.stages["train"]
    gen = registry.build_data(stage.data)
    torch.manual_seed(0)
    objective = registry.build_stage_objective(stage, BuildContext(spec, "train", stage, dist))
    evals = [
        registry.build_eval(e, gen=gen, data_cfg=stage.data, seed=0, stage="train", dist=dist)
        for e in stage.evals
    ]
    return gen, objective, evals


def test_own_data_loss_equals_the_objectives_loss_on_the_same_examples() -> None:
    """Batched over several padded widths, the figure is the objective's training loss on the whole set."""
    spec = _spec("[{kind: loss, examples: 24, batch: 7}]")
    _, objective, (ev,) = _built(spec)
    with torch.no_grad():
        for p in objective.model.parameters():  # sharper, less uniform predictions than at init
            p.mul_(4)
        out = ev(objective, 0)
        loss, _ = objective(Batch.from_examples(ev.set, torch.device("cpu")))
    assert ev.real == 24 and list(out) == ["test_loss/eval"]
    assert out["test_loss/eval"] == pytest.approx(float(loss), abs=1e-5)
    # the prompt is not scored: the mean over every token would differ
    with torch.no_grad():
        batch = Batch.from_examples(ev.set, torch.device("cpu"))
        logits, _ = objective.model(batch.tokens[:, :-1], batch.positions[:, :-1])
        real = torch.arange(batch.tokens.shape[1] - 1) < torch.as_tensor(ev.set.lengths)[:, None] - 1
        every = torch.nn.functional.cross_entropy(logits[real], batch.tokens[:, 1:][real])
    assert abs(float(every) - out["test_loss/eval"]) > 0.05


def test_reduction_is_token_weighted_over_ranks_and_ignores_padding_copies(monkeypatch) -> None:
    """Two ranks' shares (23 examples: rank 1 pads with a copy) reduce to the one-rank figure."""
    spec = _spec("[{kind: loss, examples: 23, batch: 5}]")
    _, objective, (one,) = _built(spec)
    with torch.no_grad():
        whole = one(objective, 0)["test_loss/eval"]
    sent: list[torch.Tensor] = []

    def record(self, t: torch.Tensor, op=None) -> torch.Tensor:
        sent.append(t.clone())
        return t

    monkeypatch.setattr(Dist, "all_reduce", record)
    for rank in (0, 1):
        _, _, (ev,) = _built(spec, Dist(rank=rank, world=2))
        assert len(ev.set) == 12 and ev.real == (12 if rank == 0 else 11)
        with torch.no_grad():
            ev(objective, 0)
    total, tokens = (sent[0] + sent[1]).tolist()
    assert total / tokens == pytest.approx(whole, abs=1e-9)
    per_rank = [float(s[0] / s[1]) for s in sent]
    assert abs(sum(per_rank) / 2 - whole) > 1e-6  # a mean of the ranks' means would not be the figure


def test_other_data_of_the_same_vocabulary_gives_another_figure() -> None:
    """A copy model scored on reverse (the same tokens) and on its own data: two names, two figures."""
    reverse = "{kind: reverse, symbols: 4, length: {train: [1, 6], eval: [7, 10]}}"
    spec = _spec(f"[{{kind: loss, examples: 16}}, {{kind: loss, examples: 16, data: {reverse}}}]")
    _, objective, (own, other) = _built(spec)
    with torch.no_grad():
        a, b = own(objective, 0), other(objective, 0)
    assert list(a) == ["test_loss/eval"] and list(b) == ["test_loss/reverse"]
    assert abs(a["test_loss/eval"] - b["test_loss/reverse"]) > 1e-4


def test_a_vocabulary_of_another_size_is_a_spec_error() -> None:
    """copy over 6 symbols (10 ids) cannot test a model of copy over 4 (8 ids)."""
    other = "{kind: copy, symbols: 6, length: {train: [1, 6], eval: [7, 10]}}"
    with pytest.raises(SpecError) as info:
        _spec(f"[{{kind: loss, data: {other}}}]")
    text = str(info.value)
    assert "stages.train.evals.0.data" in text and "10 token ids" in text and "(8 ids)" in text


def test_same_size_but_other_tokens_fail_when_built_naming_both_kinds() -> None:
    """sparse_parity and copy over 4 symbols both have 8 ids but different tokens: an error, not a loss."""
    parity = "{kind: sparse_parity, k: 2, length: {train: [4, 8], eval: [9, 12]}}"
    spec = _spec(f"[{{kind: loss, data: {parity}}}]")  # the spec cannot see token strings
    with pytest.raises(
        LaunchError, match=r"\(sparse_parity\).*\(copy\): token id 3 is '=' in the test data but 'SEP'"
    ):
        _built(spec)


def test_a_split_the_test_data_lacks_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as info:
        _spec("[{kind: loss, split: held_out}]")
    text = str(info.value)
    assert (
        "stages.train.evals.0.split" in text and "no split 'held_out'" in text and "['train', 'eval']" in text
    )


def test_test_data_longer_than_the_position_table_is_a_spec_error() -> None:
    longer = "{kind: reverse, symbols: 4, length: {train: [1, 6], eval: [7, 30]}}"
    extra = ("stages.train.model.position={kind: learned, max_len: 24}",)
    with pytest.raises(SpecError, match=r"longest example \(63 tokens\) exceeds the model's 24 positions"):
        _spec(f"[{{kind: loss, data: {longer}}}]", extra=extra)


def test_two_loss_evaluators_of_one_name_are_a_spec_error() -> None:
    with pytest.raises(SpecError) as info:
        _spec("[{kind: loss}, {kind: loss, examples: 8}]")
    text = str(info.value)
    assert "stages.train.evals.1.name" in text and "test_loss/eval" in text and "distinct `name`" in text
    assert "evals.0" not in text
    spec = _spec("[{kind: loss}, {kind: loss, name: small, examples: 8}]")  # named apart: fine
    assert [e.metric_name for e in spec.stages["train"].evals] == ["eval", "small"]


def test_the_plan_prices_every_test_example() -> None:
    """inference_tokens: examples x the mean test example (copy over n in 7..10: 2n + 3 tokens)."""
    spec = _spec("[{kind: loss, examples: 10}]")
    stage = spec.stages["train"]
    assert stage.evals[0].inference_tokens(stage.data) == pytest.approx(10 * (2 * 8.5 + 3))


def test_runs_in_a_tiny_training_run_and_writes_its_results(tmp_path) -> None:
    reverse = "{kind: reverse, symbols: 4, length: {train: [1, 6], eval: [7, 10]}}"
    spec = _spec(
        f"[{{kind: loss, every: 2, examples: 8}}, {{kind: loss, every: 2, examples: 8, data: {reverse}}}]",
        extra=("stages.train.schedule={steps: 4, warmup: 1}", "stages.train.logging.every=2"),
        output=str(tmp_path),
    )
    results, rows = train_in_process(spec)
    for key in ("test_loss/eval", "test_loss/reverse"):
        assert [r["step"] for r in rows if key in r] == [2, 4]
    assert {"test_loss/eval", "test_loss/reverse"} <= set(results["train"])
    saved = [json.loads((tmp_path / "train" / "evals" / f"loss-{i}.json").read_text()) for i in (0, 1)]
    assert [set(s["models"]["train"]) for s in saved] == [{"test_loss/eval"}, {"test_loss/reverse"}]


EVALUATE = """
run: {{name: l2l, output: {output}, seed: 0}}
resources: {{procs_per_node: 1}}
stages:
  on_copy:
    model: {{kind: transformer, dim: 32, depth: 1, heads: 2, ffn: {{kind: dense, hidden: 64}}}}
    data: {copy}
    schedule: {{steps: 3, warmup: 1}}
    batch: {{global: 8}}
    logging: {{every: 3, tensorboard: false, console: false}}
    evals: []
  on_reverse:
    model: {{kind: transformer, dim: 32, depth: 1, heads: 2, ffn: {{kind: dense, hidden: 64}}}}
    data: {reverse}
    schedule: {{steps: 3, warmup: 1}}
    batch: {{global: 8}}
    logging: {{every: 3, tensorboard: false, console: false}}
    evals: []
  compare:
    kind: evaluate
    models: {{on_copy: {{stage: on_copy}}, on_reverse: {{stage: on_reverse}}}}
    logging: {{tensorboard: false, console: false}}
    evals: [{{kind: loss, data: {copy}, examples: 8}}, {{kind: loss, data: {reverse}, examples: 8}}]
"""


def test_an_evaluate_stage_gives_the_test_to_test_table(tmp_path) -> None:
    """Two models trained on copy and on reverse, each scored on both: four figures, one results file each."""
    from engine.plan import make_plan
    from engine.runtime.trainer import run_spec

    path = tmp_path / "l2l.yaml"
    reverse = COPY4.replace("copy", "reverse")
    path.write_text(EVALUATE.format(output=tmp_path / "run", copy=COPY4, reverse=reverse))
    spec = load_spec(str(path))
    # the plan prices each model's forward passes over both sets: 8 examples of 2n + 3 tokens, n in 7..10
    inference = make_plan(spec).to_dict()["stages"]["compare"]["inference"]
    assert [inference[m]["tokens"] for m in ("on_copy", "on_reverse")] == [2 * 8 * (2 * 8.5 + 3)] * 2
    got = run_spec(spec, Dist())["compare"]
    keys = {f"{m}/test_loss/{d}" for m in ("on_copy", "on_reverse") for d in ("copy", "reverse")}
    assert keys <= set(got) and len({got[k] for k in keys}) == 4
    saved = json.loads((tmp_path / "run" / "compare" / "evals" / "loss-1.json").read_text())
    assert (
        set(saved["models"]) == {"on_copy", "on_reverse"} and saved["evaluator"]["data"]["kind"] == "reverse"
    )
    path.write_text(
        path.read_text().replace("{kind: loss, data: {kind: reverse", "{kind: loss, data: {kind: copy")
    )
    with pytest.raises(SpecError, match=r"stages\.compare\.evals\.1\.name.*test_loss/copy"):
        load_spec(str(path))
