"""The contracts that keep a new objective, evaluator or stage kind a one-file change: configs check themselves
against their stage, the build context resolves references, the objective base answers what the trainer and
the evaluators ask, and ranks share fixed evaluation sets."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from engine.data.sparse_parity import SparseParity
from engine.data.stream import eval_examples
from engine.evals.sets import rank_share
from engine.objectives.base import Objective
from engine.runtime.checkpoint import save_final
from engine.runtime.context import BuildContext
from engine.runtime.distributed import Dist
from schemas import SpecError, load_spec
from schemas.data import SparseParity as SparseParityConfig
from schemas.models import ViT
from schemas.objectives import NextToken
from schemas.training import CheckpointRef, RandomInit, StageRef

SALT, PARITY = "specs/salt_tiny.yaml", "specs/sparse_parity.yaml"


def problems(spec: str, *overrides: str) -> list[tuple[str, str]]:
    """(path, message) of every problem of a spec under overrides; the spec must be invalid."""
    with pytest.raises(SpecError) as info:
        load_spec(spec, list(overrides))
    return [(i.path, i.message) for i in info.value.issues]


@pytest.mark.parametrize(
    ("spec", "override", "path", "message"),
    [
        (
            SALT,
            "stages.teacher.evals=[{kind: exact_match}]",
            "stages.teacher.evals.0.kind",
            "exact_match evaluates token answers, not video",
        ),
        (
            PARITY,
            "stages.train.evals=[{kind: top1}]",
            "stages.train.evals.0.kind",
            "top1 evaluates a probe; use it in a stage of kind probe",
        ),
        (
            SALT,
            "stages.probe_ssv2.evals=[{kind: representation}]",
            "stages.probe_ssv2.evals.0.kind",
            "representation measures the encoder a masked-video stage trains; a probe stage is evaluated by "
            "top1 (put representation in the encoder's own stage)",
        ),
        (
            PARITY,
            "stages.train.evals=[{kind: representation}]",
            "stages.train.evals.0.kind",
            "representation measures a video encoder trained on masked clips (a train stage of a vit with "
            "pixel_reconstruction, latent_prediction or ema_latent_prediction); this stage trains transformer",
        ),
        (
            SALT,
            "stages.probe_ssv2.evals=[{kind: verified}]",
            "stages.probe_ssv2.evals.0.kind",
            "a probe stage is evaluated by top1, not verified",
        ),
        (
            PARITY,
            "stages.train.evals=[{kind: verified, splits: [eval, test]}]",
            "stages.train.evals.0.splits",
            "sparse_parity has no split ['test']; its splits are ['train', 'eval']",
        ),
        (
            SALT,
            "stages.teacher.objective={kind: next_token}",
            "stages.teacher.objective.kind",
            "a vit trains with pixel_reconstruction, latent_prediction or ema_latent_prediction",
        ),
        (
            PARITY,
            "stages.train.objective={kind: ema_latent_prediction}",
            "stages.train.objective.kind",
            "'ema_latent_prediction' trains a video encoder; a transformer trains with next_token",
        ),
        (
            SALT,
            "stages.teacher.predictor=null",
            "stages.teacher.predictor",
            "pixel_reconstruction needs a predictor; add `predictor: {kind: predictor}`",
        ),
        (
            SALT,
            "stages.teacher.predictor.mask_tokens=1",
            "stages.teacher.predictor.mask_tokens",
            "1 mask tokens for 2 mask generators; need one each",
        ),
        (
            SALT,
            "stages.student.objective.teacher.stage=probe_ssv2",
            "stages.student.objective.teacher.stage",
            "'probe_ssv2' is not an earlier stage (earlier stages: teacher)",
        ),
        (
            SALT,
            "stages.probe_k400_teacher.encoder={stage: probe_ssv2}",
            "stages.probe_k400_teacher.encoder.stage",
            "stage 'probe_ssv2' does not train a vit encoder",
        ),
    ],
)
def test_configs_check_themselves_against_their_stage(spec, override, path, message):
    assert (path, message) in problems(spec, override)


def test_masked_video_objectives_fix_their_mask_group_from_the_batch():
    """Unset, masks.group is the per-rank micro-batch the spec implies; a micro-batch must divide a set one."""
    spec = load_spec(SALT, ["stages.teacher.batch.micro=8"])
    assert spec.stages["teacher"].objective.masks.group == 8
    student, world = spec.stages["student"], spec.resources.world
    assert student.objective.masks.group == student.batch.global_ // world
    assert problems(SALT, "stages.teacher.batch.micro=4", "stages.teacher.objective.masks.group=6") == [
        (
            "stages.teacher.batch.micro",
            "4 clips per forward pass do not divide objective.masks.group=6 (a micro-batch holds clips of "
            "one mask group); pick a divisor of the group",
        )
    ]


def test_stages_answer_what_they_train_and_their_vocabulary():
    salt, parity = load_spec(SALT), load_spec(PARITY, ["stages.train.model.vocab_size=512"])
    assert salt.stages["teacher"].final_model is salt.stages["teacher"].model
    assert salt.stages["probe_ssv2"].final_model is salt.stages["probe_ssv2"].probe
    assert salt.stages["teacher"].vocab_size is None, "video makes no tokens"
    assert parity.stages["train"].vocab_size == 512
    default = load_spec(PARITY).stages["train"]
    assert default.vocab_size == default.data.vocab_size


def test_build_context_resolves_references_to_model_configs(tmp_path):
    spec = load_spec(SALT)
    ctx = BuildContext(spec, "probe_ssv2", spec.stages["probe_ssv2"], Dist())
    teacher = spec.stages["teacher"].model
    assert ctx.model_config(StageRef(stage="teacher"), ViT) is teacher
    assert ctx.model_config(RandomInit(random="student"), ViT) is spec.stages["student"].model
    final = str(tmp_path / "final")
    save_final(final, {"model": nn.Linear(2, 2)}, {"model": teacher.model_dump(mode="json")}, Dist())
    assert ctx.model_config(CheckpointRef(checkpoint=final), ViT) == teacher, (
        "from the checkpoint's done.json"
    )


def test_the_objective_base_answers_what_trainer_and_evaluators_ask():
    """An objective without images, results or predictions says so: nothing by default, a clear error when an
    evaluator asks it for what it cannot give."""

    class Plain(Objective):
        models: dict[str, nn.Module] = {}

    plain = Plain()
    assert plain.images(None) == {} and plain.results({"top1": 0.5}) is None
    for ask in (lambda: plain.predict(None), lambda: plain.decoder()):
        with pytest.raises(NotImplementedError, match="Plain predicts no tokens"):
            ask()
    with pytest.raises(NotImplementedError, match="Plain classifies nothing"):
        plain.logits(None)
    with pytest.raises(NotImplementedError, match="Plain encodes no clips"):
        plain.represent(None)


def test_masked_video_stages_get_representation_by_default_and_others_nothing():
    """A masked-video train stage without `evals` gets its objective's default (representation); `evals: []`
    keeps none; next_token adds nothing; a probe stage keeps its own default (top1)."""
    salt = load_spec(SALT)
    assert [e.kind for e in salt.stages["teacher"].evals] == ["representation"]
    assert [e.kind for e in salt.stages["student"].evals] == ["representation"]
    assert [e.kind for e in salt.stages["probe_ssv2"].evals] == ["top1"]
    assert load_spec(SALT, ["stages.teacher.evals=[]"]).stages["teacher"].evals == []
    assert NextToken().default_evals() == []


def test_ranks_share_one_fixed_set_and_count_only_its_members():
    """3 ranks, 10 examples: shares of 4, 4 and 4 whose concatenation is the set's first 12; 4 + 4 + 2 count."""
    gen = SparseParity(SparseParityConfig(k=2, length={"train": (4, 8), "eval": (9, 16)}))

    def draw(n: int):
        return eval_examples(gen, 0, "s", "eval", None, n)

    shares = [rank_share(draw, 10, Dist(rank=r, world=3)) for r in range(3)]
    assert [(len(ex), real) for ex, real in shares] == [(4, 4), (4, 4), (4, 2)]
    assert np.array_equal(np.concatenate([ex.tokens for ex, _ in shares]), draw(12).tokens)
    alone, real = rank_share(draw, 10, Dist())
    assert real == 10 and np.array_equal(alone.tokens, draw(10).tokens)
