"""The low-shot probe protocol: a fixed labelled set drawn once and walked in epochs, the linear probe's parallel
heads and their selection on a validation split, the kNN probe, what top1 and results.json report, and the
spec rules (docs/papers/salt.md, "Probe protocol")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import torchrun

from engine.data.pool import MissingClass, draw_labelled
from engine.data.stream import LABELLED, Stream, counter_rng, sample_chunks, stage_key
from engine.data.video import Clips, SyntheticVideo
from engine.evals.top1 import Top1
from engine.models.probe import KnnProbe
from engine.objectives.probe import ProbeObjective
from engine.runtime.context import BuildContext
from engine.runtime.distributed import Dist, LaunchError
from engine.runtime.trainer import build_optimizer
from schemas import SpecError, load_spec
from schemas.data import SyntheticVideo as SyntheticVideoConfig
from schemas.evals import Top1 as Top1Config
from schemas.models import KnnProbe as KnnConfig
from schemas.training import AdamW

VIDEO = "{kind: synthetic_video, frames: 4, resolution: 32, label: shape}"
SPEC = f"""
run: {{name: protocol, output: OUT, seed: 3}}
stages:
  base:
    model: {{kind: vit, dim: 32, depth: 1, heads: 2, mlp: 64, frames: 4, resolution: 32, patch: 16, tubelet: 2}}
    predictor: {{kind: predictor, dim: 32, depth: 1, heads: 2, mlp: 64}}
    data: {VIDEO}
    objective: {{kind: pixel_reconstruction}}
    schedule: {{steps: 1}}
    batch: {{global: 4}}
  linear:
    kind: probe
    encoder: {{random: base}}
    probe: {{kind: linear_probe, weight_decays: [0.0, 0.01, 1.0], val_fraction: 0.5}}
    labelled: 20
    data: {VIDEO}
    schedule: {{steps: 6}}
    batch: {{global: 4}}
    evals: [{{kind: top1, examples: 1024, batch: 256}}]
  knn:
    kind: probe
    encoder: {{random: base}}
    probe: {{kind: knn_probe, k: 5}}
    per_class: 4
    data: {VIDEO}
    batch: {{global: 4}}
    evals: [{{kind: top1, examples: 1024, batch: 256}}]
"""


def spec_file(tmp_path: Path) -> str:
    """The protocol spec, writing to tmp_path/run."""
    path = tmp_path / "protocol.yaml"
    path.write_text(SPEC.replace("OUT", str(tmp_path / "run")))
    return str(path)


def problems(tmp_path: Path, *overrides: str) -> list[tuple[str, str]]:
    """(path, message) of every problem of the protocol spec under overrides; it must be invalid."""
    with pytest.raises(SpecError) as info:
        load_spec(spec_file(tmp_path), list(overrides))
    return [(i.path, i.message) for i in info.value.issues]


@pytest.fixture(scope="module")
def gen() -> SyntheticVideo:
    return SyntheticVideo(SyntheticVideoConfig(frames=4, resolution=32, label="shape"))


# ----------------------------------------------------------------------------- the labelled set


def test_labelled_set_is_drawn_once_from_seed_and_stage(gen: SyntheticVideo) -> None:
    """The same clips whenever it is drawn; a larger set extends a smaller one; another stage draws its own."""
    key = stage_key("probe")
    a, b = draw_labelled(gen, 0, key, 5, labelled=12), draw_labelled(gen, 0, key, 5, labelled=12)
    assert np.array_equal(a.video, b.video) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.meta["pool_index"], np.arange(12))
    larger = draw_labelled(gen, 0, key, 5, labelled=20)
    assert np.array_equal(larger.video[:12], a.video)
    assert not np.array_equal(draw_labelled(gen, 0, stage_key("other"), 5, labelled=12).video, a.video)


def test_per_class_keeps_the_first_k_of_every_class_in_draw_order(gen: SyntheticVideo) -> None:
    k, classes, key = 3, 5, stage_key("probe")
    pool = draw_labelled(gen, 1, key, classes, per_class=k)
    assert np.bincount(pool.labels, minlength=classes).tolist() == [k] * classes
    # the reference: the labelled key's chunks in order, of which the first k clips of each class are kept
    chunks = len(pool) * 20 // gen.chunk
    drawn = sample_chunks(gen, [counter_rng(1, key, LABELLED, c) for c in range(chunks)], gen.chunk, "train")
    first = [i for i, y in enumerate(drawn.labels) if (drawn.labels[:i] == y).sum() < k]
    assert np.array_equal(pool.video, drawn.video[first]) and np.array_equal(pool.labels, drawn.labels[first])


class TwoClasses:
    """A generator of 3 classes whose clips are only ever of classes 0 and 1."""

    def sample(self, rng: np.random.Generator, n: int, split: str = "train") -> Clips:
        return Clips(np.zeros((n, 1, 1, 1, 1), np.uint8), rng.integers(0, 2, n), {})


def test_per_class_stops_with_the_missing_class_when_one_never_shows() -> None:
    with pytest.raises(MissingClass) as info:
        draw_labelled(TwoClasses(), 0, 0, 3, per_class=2)
    assert str(info.value).startswith(
        "per_class=2: after 128 train clips, classes [2] have only [0] clips; the data rarely or never makes them"
    )


def test_a_class_the_data_never_makes_stops_the_stage_with_a_one_line_error(tmp_path: Path) -> None:
    o = objective(tmp_path, "stages.linear.labelled=null", "stages.linear.per_class=2")
    with pytest.raises(LaunchError) as info:
        o.stream(Stream(TwoClasses(), 0, "linear", 0, 4))
    assert str(info.value) == (
        "stages.linear.per_class=2: after 256 train clips, classes [2, 3, 4] have only [0, 0, 0] clips; the "
        "data rarely or never makes them. Lower per_class, use labelled: N instead, or change the data's label"
    )


def pool_of(n: int) -> Clips:
    """A labelled set of n one-pixel clips, clip i of pixel value i."""
    video = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1, 1)
    return Clips(video, np.arange(n) % 3, {"pool_index": np.arange(n)})


def pool_stream(train: int, per_rank: int, rank: int = 0, world: int = 1):
    from engine.data.pool import PoolStream

    stream = Stream(TwoClasses(), 7, "probe", rank, per_rank, world)
    return PoolStream(pool_of(train + 3), train, stream)


def test_epochs_visit_every_training_clip_once_and_resume_exactly() -> None:
    """Global positions s*B.. of concatenated seeded permutations of the training clips (the last 3, held out,
    never come); a new stream (a resumed run) and 2 ranks give the same global batches."""
    train, batch, steps = 10, 4, 10  # 40 positions: 4 epochs, batches straddling epoch ends
    one = pool_stream(train, batch)
    seen = np.concatenate([one.indices(s) for s in range(steps)])
    for e in range(4):
        assert sorted(seen[e * train : (e + 1) * train].tolist()) == list(range(train)), e
    assert seen[:train].tolist() != seen[train : 2 * train].tolist(), "every epoch has its own order"
    resumed = pool_stream(train, batch)
    assert [resumed.indices(s).tolist() for s in (7, 3)] == [seen[28:32].tolist(), seen[12:16].tolist()]
    two = [pool_stream(train, batch // 2, rank, 2) for rank in (0, 1)]
    for s in range(steps):
        both = np.concatenate([r.batch(s).video.ravel() for r in two])
        assert both.tolist() == seen[s * batch : (s + 1) * batch].tolist(), s


# ----------------------------------------------------------------------------- the linear probe


def objective(tmp_path: Path, *overrides: str) -> ProbeObjective:
    spec = load_spec(spec_file(tmp_path), list(overrides))
    torch.manual_seed(0)
    return ProbeObjective(spec.stages["linear"], BuildContext(spec, "linear", spec.stages["linear"], Dist()))


def test_linear_heads_trained_together_equal_each_trained_alone(tmp_path: Path) -> None:
    """Features are standardised with the training clips' statistics; the loss is the sum over heads of
    CE + wd ||W||^2 / 2, and under Adam each head follows its own."""
    decays = [0.0, 0.01, 1.0]
    together = objective(tmp_path)
    alone = [objective(tmp_path, f"stages.linear.probe.weight_decays=[{wd}]") for wd in decays]
    with torch.no_grad():
        for h, o in enumerate(alone):
            o.probe.weight.copy_(together.probe.weight[h : h + 1])
            o.probe.bias.copy_(together.probe.bias[h : h + 1])
    g = torch.Generator().manual_seed(0)
    seen = torch.randn(20, 32, generator=g) * torch.linspace(0.5, 4.0, 32) + torch.arange(32.0)
    for o in [together, *alone]:  # the training clips' features fix each feature's standardisation
        o.probe.observe(seen)
    z = (seen - together.probe.shift) / together.probe.scale
    torch.testing.assert_close(z.mean(0), torch.zeros(32), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(32), atol=1e-4, rtol=0)  # + norm_eps
    batches = [
        {"features": torch.randn(8, 32, generator=g), "labels": torch.randint(0, 5, (8,), generator=g)}
        for _ in range(5)
    ]
    loss, _ = together(batches[0])
    x = (batches[0]["features"] - seen.mean(0)) / (seen.std(0, unbiased=False) + 1e-5)
    w, b = together.probe.weight, together.probe.bias
    want = sum(
        F.cross_entropy(x @ w[h] + b[h], batches[0]["labels"]) + decays[h] * w[h].pow(2).sum() / 2
        for h in range(3)
    )
    torch.testing.assert_close(loss, want)
    adam = AdamW(lr=0.05, weight_decay=0.0, grad_clip=None)
    for o in [together, *alone]:
        opt = build_optimizer(adam, o.trainable())
        for batch in batches:
            o(batch)[0].backward()
            opt.step()
            opt.zero_grad()
    for h, o in enumerate(alone):
        torch.testing.assert_close(o.probe.weight[0], together.probe.weight[h], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(o.probe.bias[0], together.probe.bias[h], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(together.probe.weight[0], together.probe.weight[2]), "the decays differ"


def test_the_head_with_the_best_validation_top1_is_evaluated(tmp_path: Path) -> None:
    """Heads answering one class each: the validation split (the labelled set's last 10 clips) scores them;
    heads 1 and 2 tie and the larger weight decay (head 2) wins; `logits` then answers with head 2."""
    o = objective(tmp_path)
    o.pool = pool_of(20)
    o._features = torch.randn(20, 32)
    o._labels = torch.tensor([0] * 10 + [0] * 6 + [1] * 4)
    with torch.no_grad():
        o.probe.weight.zero_()
        o.probe.bias.copy_(torch.tensor([[0.0, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]]))
        o.probe.bias[2, 3] = 0.5  # head 2 differs from head 1 in its logits, not in its answers
    report = o.classifier_report()
    assert report == {
        "labelled": 20.0,
        "val_top1/0": pytest.approx(0.4),
        "val_top1/0.01": pytest.approx(0.6),
        "val_top1/1": pytest.approx(0.6),
        "weight_decay": 1.0,
    }
    assert o.logits({"features": torch.zeros(1, 32)})[0].tolist() == [1.0, 0.0, 0.0, 0.5, 0.0]


# ----------------------------------------------------------------------------- the kNN probe


def test_knn_weights_votes_by_similarity_and_breaks_ties_in_a_fixed_order() -> None:
    knn = KnnProbe(KnnConfig(k=3), 2, classes=2)
    keys = torch.tensor([[1.0, 0.0], [-1.0, 0.1], [-1.0, -0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 1])
    # the 3 nearest of (1, 0): key 0 (similarity 1, class 0), key 3 (0, class 1), and key 1 or 2 (-0.995, class
    # 1), tied: the earlier, key 1. Class 1 has the majority of votes, class 0 the larger weight.
    scores = knn(torch.tensor([[2.0, 0.0]]), (keys, labels))
    sim = -1 / 1.01**0.5
    torch.testing.assert_close(scores, torch.tensor([[1.0, 0.5 + (1 + sim) / 2]]))
    assert scores.argmax(-1).item() == 0
    one = KnnProbe(KnnConfig(k=1), 2, classes=2)
    tied = one(torch.tensor([[0.0, 1.0]]), (torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.tensor([1, 0])))
    assert tied.tolist() == [[0.0, 0.5]], "equally similar keys: the earlier one votes"


# ----------------------------------------------------------------------------- what top1 reports


class Labelled:
    """An eval split whose every chunk of 64 clips is labelled 0,0,1,2 repeated: majority 1/2."""

    def sample(self, rng: np.random.Generator, n: int, split: str = "train") -> Clips:
        labels = np.tile([0, 0, 1, 2], n // 4)
        return Clips(np.zeros((n, 1, 1, 1, 1), np.uint8), labels, {})


class SaysOne:
    """A classifier that answers class 1 whatever it sees."""

    def classifier_report(self) -> dict[str, float]:
        return {"labelled": 30.0}

    def collate(self, clips: Clips, device: torch.device) -> dict[str, torch.Tensor]:
        return {"labels": torch.from_numpy(clips.labels)}

    def logits(self, batch: dict[str, torch.Tensor], segments: int = 1) -> torch.Tensor:
        return F.one_hot(torch.ones_like(batch["labels"]), 3).float()


def test_top1_reports_the_majority_class_and_chance_of_its_held_out_set() -> None:
    data = SyntheticVideoConfig(label="rotation")  # 3 classes
    ev = Top1(Top1Config(examples=1030, batch=100), Labelled(), data, 0, "probe", Dist())
    # 1030 clips: 258 + 258 + 257 + 257 of classes 0, 0, 1, 2 in turn -> 516 of class 0, 257 of class 1
    assert ev(SaysOne(), 1) == {
        "top1": 257 / 1030,
        "majority": 516 / 1030,
        "chance": 1 / 3,
        "examples": 1030.0,
        "labelled": 30.0,
    }


# ----------------------------------------------------------------------------- spec rules


def test_spec_rules_of_the_protocol(tmp_path: Path) -> None:
    p = "stages.linear"
    assert problems(tmp_path, f"{p}.per_class=2") == [
        (f"{p}.per_class", "labelled=20 and per_class=2 both size the labelled set; keep one")
    ]
    fix = "set labelled: N (clips) or per_class: k"
    assert problems(tmp_path, f"{p}.labelled=null") == [
        (f"{p}.probe.kind", f"a linear_probe learns from a fixed labelled set; {fix}")
    ]
    assert problems(
        tmp_path, f"{p}.labelled=null", f"{p}.probe={{kind: knn_probe}}", f"{p}.schedule=null"
    ) == [(f"{p}.probe.kind", f"a knn_probe learns from a fixed labelled set; {fix}")]
    assert problems(tmp_path, f"{p}.probe={{kind: knn_probe}}") == [
        (f"{p}.schedule", "a knn_probe trains nothing; remove schedule")
    ]
    assert problems(tmp_path, f"{p}.evals.0.examples=1000") == [
        (
            f"{p}.evals.0.examples",
            "1000 held-out clips give a top-1 with a standard error up to 1.6 points; synthetic clips are free, "
            "so evaluate at least 1024 (the default is 2048)",
        )
    ]
    assert problems(tmp_path, f"{p}.optim={{lr: 0.001}}") == [
        (
            f"{p}.optim.grad_clip",
            "clipping the norm over all heads would couple the linear probe's heads; remove grad_clip",
        )
    ]
    assert problems(tmp_path, f"{p}.probe.val_fraction=0.01") == [
        (
            f"{p}.probe.val_fraction",
            "0.01 of 20 labelled clips holds out 0; the validation split and the training clips must both be "
            "non-empty: pick val_fraction in [0.025, 0.975) or label more clips",
        )
    ]


def test_plan_shows_the_epochs_of_the_labelled_set(tmp_path: Path) -> None:
    from engine.plan import make_plan

    plan = make_plan(load_spec(spec_file(tmp_path)))
    assert plan.stages["linear"].pool["epochs"] == 6 * 4 / 10
    assert "labelled     20 clips (10 train + 10 validation): 6 steps x 4 / 10 = 2.4 epochs" in plan.render()


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_random_encoder_linear_probe_writes_its_protocol_results(tmp_path: Path, one_thread: None) -> None:
    from engine.runtime.trainer import run_spec

    spec = load_spec(spec_file(tmp_path))
    run_spec(spec, Dist(), only="linear")
    res = json.loads((tmp_path / "run" / "linear" / "results.json").read_text())
    assert set(res) == {
        "encoder",
        "encoder_stage",
        "kind",
        "task",
        "top1",
        "majority",
        "chance",
        "examples",
        "labelled",
        "classes",
        "step",
        "weight_decay",
        "val_top1",
    }
    assert (res["encoder"], res["kind"], res["task"], res["examples"], res["labelled"], res["step"]) == (
        "random",
        "linear_probe",
        "shape",
        1024,
        20,
        6,
    )
    assert res["chance"] == 1 / 5 and res["classes"] == 5
    assert set(res["val_top1"]) == {"0", "0.01", "1"}
    assert all(v * 10 == round(v * 10) for v in res["val_top1"].values()), "top-1 of 10 validation clips"
    best = max(res["val_top1"].values())
    assert res["weight_decay"] == max(float(k) for k, v in res["val_top1"].items() if v == best)
    for share in (res["top1"], res["majority"]):
        assert share * 1024 == round(share * 1024), "a share of the 1024 held-out clips"


@pytest.mark.slow
def test_knn_probe_runs_without_steps_and_evaluates_again_alike(tmp_path: Path, one_thread: None) -> None:
    """No schedule: no optimizer, no step, top1 once at the end; `engine evaluate` rebuilds the labelled set's
    features and scores the same."""
    from engine.runtime.trainer import evaluate_stage, run_spec

    spec = load_spec(spec_file(tmp_path))
    ran = run_spec(spec, Dist(), only="knn")["knn"]
    res = json.loads((tmp_path / "run" / "knn" / "results.json").read_text())
    assert (res["kind"], res["step"], res["labelled"], res["top1"]) == ("knn_probe", 0, 20, ran["top1"])
    assert evaluate_stage(spec, Dist(), "knn")["top1"] == ran["top1"]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_sharded_ranks_probe_as_one_process(tmp_path: Path) -> None:
    """2 FSDP ranks (each encoding the whole labelled set into its own cache) train the linear probe to the
    weights one process reaches, choose the same head, and the kNN probe scores the same top-1."""
    from engine.runtime.checkpoint import load_final
    from engine.runtime.trainer import run_spec

    spec = spec_file(tmp_path)
    r = torchrun("-m", "engine", spec, f"run.output={tmp_path / 'two'}", "resources.procs_per_node=2")
    assert r.returncode == 0, r.stdout + r.stderr
    run_spec(load_spec(spec, [f"run.output={tmp_path / 'one'}"]), Dist())
    one, two = (tmp_path / "one", tmp_path / "two")
    for name, t in load_final(str(one / "linear" / "final"), "probe").items():
        torch.testing.assert_close(
            load_final(str(two / "linear" / "final"), "probe")[name], t, atol=1e-5, rtol=1e-4
        )
    results = [
        {s: json.loads((out / s / "results.json").read_text()) for s in ("linear", "knn")}
        for out in (one, two)
    ]
    assert results[0]["linear"]["val_top1"] == results[1]["linear"]["val_top1"]
    assert results[0]["linear"]["weight_decay"] == results[1]["linear"]["weight_decay"]
    assert results[0]["knn"]["top1"] == results[1]["knn"]["top1"]
    assert results[0]["knn"]["labelled"] == 20


@pytest.mark.slow
def test_a_resumed_linear_probe_ends_where_an_uninterrupted_one_does(
    tmp_path: Path, one_thread: None, caplog: pytest.LogCaptureFixture
) -> None:
    """3 steps, then extended to 6 from the step-3 checkpoint (the labelled set drawn and encoded again, the
    epochs continued), end with the weights of 6 steps in one go, bit for bit."""
    from engine.runtime.checkpoint import load_final
    from engine.runtime.trainer import run_spec

    path = spec_file(tmp_path)
    flat = [
        "stages.linear.schedule.decay=constant",
        "stages.linear.checkpoint.every=3",
    ]  # lr independent of steps
    whole, part = [f"run.output={tmp_path / 'whole'}", *flat], [f"run.output={tmp_path / 'part'}", *flat]
    run_spec(load_spec(path, whole), Dist(), only="linear")
    run_spec(load_spec(path, [*part, "stages.linear.schedule.steps=3"]), Dist(), only="linear")
    with caplog.at_level("INFO", logger="engine"):
        run_spec(load_spec(path, part), Dist(), only="linear", accept=True)
    assert "linear: resumed from step 3" in caplog.messages
    resumed = load_final(str(tmp_path / "part" / "linear" / "final"), "probe")
    for name, t in load_final(str(tmp_path / "whole" / "linear" / "final"), "probe").items():
        assert torch.equal(resumed[name], t), name


def test_stages_of_one_clip_set_learn_from_and_are_scored_on_the_same_clips(
    tmp_path: Path, one_thread: None
) -> None:
    """Two kNN probes of one encoder that differ only in their names score the same when they share a clip_set;
    a third on its own clips (the default: keyed by its name) scores otherwise. The run's probe table gathers
    them, one column per (task, kind), the later stage kept where two probe the same encoder on the same."""
    from engine.runtime.trainer import run_spec

    knn = "{kind: probe, encoder: {stage: base}, probe: {kind: knn_probe, k: 5}, labelled: 40, data: DATA, batch: {global: 4}, evals: [{kind: top1, examples: 1024, batch: 256}]}"
    text = SPEC.split("  linear:")[0].replace("OUT", str(tmp_path / "run"))
    for name, extra, label in (
        ("a", "clip_set: s, ", "shape"),
        ("b", "clip_set: s, ", "shape"),
        ("c", "", "shape"),
        ("d", "clip_set: s, ", "colour"),
    ):
        data = VIDEO.replace("label: shape", f"label: {label}")
        text += f"  {name}: {{{extra}{knn[1:].replace('DATA', data)}\n"
    (tmp_path / "s.yaml").write_text(text)
    run_spec(load_spec(str(tmp_path / "s.yaml")), Dist())
    top1 = {n: json.loads((tmp_path / "run" / n / "results.json").read_text())["top1"] for n in "abcd"}
    assert top1["a"] == top1["b"] != top1["c"]
    table = json.loads((tmp_path / "run" / "results.json").read_text())
    assert table["columns"] == ["shape knn_probe", "colour knn_probe"]
    assert table["top1"] == {"base": {"shape knn_probe": top1["c"], "colour knn_probe": top1["d"]}}
    assert table["chance"] == {"shape knn_probe": 1 / 5, "colour knn_probe": 1 / 8}
    md = (tmp_path / "run" / "results.md").read_text().splitlines()
    assert md[0] == "| encoder | shape knn_probe | colour knn_probe |"
    assert md[2] == f"| base | {top1['c']:.3f} | {top1['d']:.3f} |"
    assert md[4] == "| *chance* | 0.200 | 0.125 |"
    assert (tmp_path / "run" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
