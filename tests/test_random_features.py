"""The random-features vs SGD components (docs/papers/random_features.md): the biased_parity generator, the mlp
model (trained or frozen first layer), the hinge objective, their plan and spec rules, and a short run that
learns."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import REPO, train_in_process

from engine.data.base import Examples
from engine.data.biased_parity import MINUS, PLUS, BiasedParity, signs
from engine.data.stream import counter_rng, eval_examples
from engine.objectives.hinge import Hinge
from engine.registry import build_model
from engine.runtime.trainer import build_optimizer
from schemas import SpecError, load_spec
from schemas.data import BiasedParity as BiasedParityConfig
from schemas.data.biased_parity import default_support

SPEC = str(REPO / "specs" / "random_features.yaml")


def spec_with(*overrides: str):
    """The example spec with overrides (validated)."""
    return load_spec(SPEC, list(overrides))


# ----------------------------------------------------------------------------- generator


@pytest.mark.parametrize(("n", "k", "p"), [(20, 2, 0.5), (30, 3, 0.75), (7, 7, 0.6), (5, 1, 0.2)])
def test_label_is_the_product_over_s_and_verify_reads_it(n: int, k: int, p: float) -> None:
    cfg = BiasedParityConfig(n=n, k=k, p=p)
    gen = BiasedParity(cfg)
    ex = gen.sample(counter_rng(1, 2), 300)
    assert ex.tokens.shape == (300, n + 4) and ex.tokens.dtype == np.int32
    x = signs(ex.tokens[:, 1 : n + 1]).astype(np.int64)
    y = x[:, list(cfg.support)].prod(axis=1)
    assert np.array_equal(ex.meta["label"], y)
    assert np.array_equal(ex.tokens[:, n + 2], np.where(y > 0, PLUS, MINUS))
    assert (ex.loss_mask.sum(1) == 1).all() and ex.loss_mask[:, n + 2].all()
    for i in range(20):
        one = ex[i]
        right = PLUS if y[i] > 0 else MINUS
        wrong = MINUS if right == PLUS else PLUS
        assert gen.verify(one, [right]) and not gen.verify(one, [wrong]) and not gen.verify(one, [])
        assert gen.answer(one, [right]) == right
    assert f"S={list(cfg.support)}" in gen.render(ex[0])


@pytest.mark.parametrize("p", [0.5, 0.6, 0.75, 0.1])
def test_bits_are_plus_one_with_probability_p(p: float) -> None:
    n, m = 50, 4000
    ex = BiasedParity(BiasedParityConfig(n=n, k=3, p=p)).sample(counter_rng(7), m)
    x = signs(ex.tokens[:, 1 : n + 1])
    freq = (x > 0).mean()
    sd = (p * (1 - p) / (n * m)) ** 0.5
    assert abs(freq - p) < 5 * sd, (freq, p)
    # independent bits: the label's mean is (2p - 1)^k
    assert abs(ex.meta["label"].mean() - (2 * p - 1) ** 3) < 5 / m**0.5


def test_draws_are_fixed_by_the_counter_key_and_the_eval_set_by_the_seed() -> None:
    gen = BiasedParity(BiasedParityConfig(n=20, k=2, p=0.6))
    a, b, c = (gen.sample(counter_rng(*key), 64) for key in [(3, 4), (3, 4), (3, 5)])
    assert np.array_equal(a.tokens, b.tokens) and not np.array_equal(a.tokens, c.tokens)
    e1, e2 = (
        eval_examples(gen, 0, "train", "eval", None, 128),
        eval_examples(gen, 0, "train", "eval", None, 256),
    )
    assert np.array_equal(e1.tokens, e2.tokens[:128]), "the first m of a larger eval set are the same"
    assert not np.array_equal(e1.tokens, eval_examples(gen, 1, "train", "eval", None, 128).tokens)
    assert not np.array_equal(e1.tokens, eval_examples(gen, 0, "train", "train", None, 128).tokens)


def test_subset_default_depends_on_n_and_k_only_and_an_explicit_one_wins() -> None:
    s = BiasedParityConfig(n=30, k=3).support
    assert s == BiasedParityConfig(n=30, k=3, p=0.75).support == default_support(30, 3)
    assert len(set(s)) == 3 and all(0 <= i < 30 for i in s)
    assert (
        spec_with("run.seed=5", "stages.train.data.n=30", "stages.train.data.k=3")
        .stages["train"]
        .data.support
        == s
    )
    cfg = BiasedParityConfig(n=10, k=2, subset=[7, 3])
    assert cfg.support == (3, 7)
    ex = BiasedParity(cfg).sample(counter_rng(0), 200)
    x = signs(ex.tokens[:, 1:11]).astype(np.int64)
    assert np.array_equal(ex.meta["label"], x[:, 3] * x[:, 7])


def test_unknown_split_and_wrong_length_are_refused() -> None:
    gen = BiasedParity(BiasedParityConfig(n=8, k=2))
    with pytest.raises(LookupError, match="biased_parity has train, eval"):
        gen.sample(counter_rng(0), 4, "test")
    with pytest.raises(ValueError, match="n=8"):
        gen.sample(counter_rng(0), 4, length=9)


# ----------------------------------------------------------------------------- model and objective


def built(*overrides: str):
    """(stage, objective) of the example spec with overrides, model seeded."""
    stage = spec_with(*overrides).stages["train"]
    torch.manual_seed(0)
    model = build_model(stage.model, stage.vocab_size)
    return stage, Hinge(stage.objective, {"model": model}, SimpleNamespace(stage=stage))


@pytest.mark.parametrize("train_first", [True, False])
def test_param_counts_equal_the_module_and_a_frozen_first_layer_never_moves(train_first: bool) -> None:
    stage, obj = built(
        f"stages.train.model.train_first_layer={str(train_first).lower()}", "stages.train.model.width=64"
    )
    model = obj.model
    counts = stage.model.param_count()
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert (counts.total, counts.frozen) == (trained, frozen)
    assert counts.largest_block == sum(p.numel() for p in model.blocks.parameters()) == 20 * 64 + 64
    optim = build_optimizer(stage.optim, obj.trainable())
    in_optim = {id(p) for g in optim.param_groups for p in g["params"]}
    assert in_optim == {id(p) for p in model.parameters() if p.requires_grad}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ex = BiasedParity(stage.data).sample(counter_rng(0), 32)
    loss, _ = obj(obj.collate(ex, torch.device("cpu")))
    loss.backward()
    optim.step()
    after = model.state_dict()
    first = ("blocks.0.weight", "blocks.0.bias")
    assert all(torch.equal(before[k], after[k]) != train_first for k in first)
    assert all(model.get_parameter(k).grad is None for k in first) != train_first
    assert not torch.equal(before["readout.weight"], after["readout.weight"])


def test_plan_counts_what_the_model_holds_and_flops_by_convention() -> None:
    from engine.plan import make_plan

    for frozen in (False, True):
        spec = spec_with(f"stages.train.model.train_first_layer={str(not frozen).lower()}")
        plan = make_plan(spec).stages["train"]
        first, readout = 20 * 512 + 512, 512 + 1
        assert (plan.params.total, plan.params.frozen) == (
            (readout, first) if frozen else (first + readout, 0)
        )
        six, two = (6 * readout * 32, 2 * first * 32) if frozen else (6 * (first + readout) * 32, 0)
        assert (plan.flops.six_nd_per_step, plan.flops.frozen_2nd_per_step) == (six, two)


def test_both_parametrizations_start_from_the_same_function_and_differ_in_the_readout_step() -> None:
    """standard = ntk with the readout's learning rate multiplied by the width."""
    _, ntk = built("stages.train.model.width=64", "stages.train.model.parametrization=ntk")
    _, std = built("stages.train.model.width=64", "stages.train.model.parametrization=standard")
    x = torch.where(torch.rand(16, 20) < 0.5, 1.0, -1.0)
    assert torch.allclose(ntk.model(x), std.model(x), atol=1e-5)
    for obj in (ntk, std):
        obj.model(x).sum().backward()
    grad_ntk, grad_std = ntk.model.readout.weight.grad, std.model.readout.weight.grad
    assert torch.allclose(grad_std, grad_ntk * 8.0, atol=1e-4)  # sqrt(64): the change of f is 64x ntk's


def test_hinge_loss_and_accuracy_on_a_hand_computed_case() -> None:
    # n=2, M=1: f(x) = a ReLU(w·x + b) / sqrt(1) + c with w = (1, 0), b = 0, a = 1, c = 0.5
    stage, obj = built("stages.train.data.n=2", "stages.train.data.k=2", "stages.train.model.width=1")
    with torch.no_grad():
        obj.model.blocks[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        obj.model.blocks[0].bias.zero_()
        obj.model.readout.weight.fill_(1.0)
        obj.model.readout.bias.fill_(0.5)
    rows = [[+1, -1], [-1, +1], [+1, +1], [-1, -1]]  # f: 1.5, 0.5, 1.5, 0.5; y = x1 x2: -1, -1, +1, +1
    tokens = np.array(
        [[1, *(PLUS if v > 0 else MINUS for v in r), 3, PLUS if r[0] * r[1] > 0 else MINUS, 2] for r in rows],
        dtype=np.int32,
    )
    mask = np.zeros_like(tokens, dtype=bool)
    mask[:, 4] = True
    batch = obj.collate(Examples(tokens, mask, np.full(4, 6)), torch.device("cpu"))
    loss, metrics = obj(batch)
    # hinge: max(0, 1 + 1.5) = 2.5, max(0, 1 + 0.5) = 1.5, max(0, 1 - 1.5) = 0, max(0, 1 - 0.5) = 0.5
    assert loss.item() == pytest.approx((2.5 + 1.5 + 0.0 + 0.5) / 4)
    assert metrics["acc"].item() == pytest.approx(0.5)
    logits, targets, answer_mask, _ = obj.predict(batch)
    assert ((logits.argmax(-1) == targets).float().mean()).item() == pytest.approx(0.5), (
        "predict agrees with acc"
    )
    assert answer_mask.sum().item() == 4


# ----------------------------------------------------------------------------- a run and the spec rules


def test_a_short_run_reaches_99_percent_held_out(tmp_path: Path, one_thread: None) -> None:
    spec = spec_with(
        f"run.output={tmp_path}",
        "stages.train.data.n=10",
        "stages.train.model.width=256",
        "stages.train.schedule.steps=300",
        "stages.train.evals.0.every=150",
        "stages.train.evals.0.examples=1024",
        "stages.train.logging.every=50",
    )
    results, rows = train_in_process(spec)
    accs = [r["acc/eval"] for r in rows if "acc/eval" in r]
    assert accs[-1] >= 0.99 and accs[0] < accs[-1], accs
    assert results["train"]["acc/eval"] == accs[-1]


@pytest.mark.parametrize(
    ("overrides", "path", "words"),
    [
        (["stages.train.data.k=21"], "stages.train.data.k", "exceeds n=20"),
        (["stages.train.data.p=1.0"], "stages.train.data.p", "less than 1"),
        (["stages.train.data.p=0"], "stages.train.data.p", "greater than 0"),
        (["stages.train.data.subset=[1,1]"], "stages.train.data.subset", "repeats"),
        (["stages.train.data.subset=[3,20]"], "stages.train.data.subset", "outside 0..19"),
        (["stages.train.model.inputs=30"], "stages.train.model.inputs", "set inputs: 20"),
        (
            ["stages.train.objective.kind=next_token"],
            "stages.train.objective.kind",
            "an mlp trains with hinge",
        ),
        (
            ["stages.train.data={kind: sparse_parity}"],
            "stages.train.data.kind",
            "use data kind biased_parity",
        ),
        (["stages.train.model={kind: transformer}"], "stages.train.objective.kind", "trains with next_token"),
    ],
)
def test_spec_errors_say_what_to_fix(overrides: list[str], path: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_with(*overrides)
    assert any(i.path == path and words in i.message for i in info.value.issues), str(info.value)


def test_inputs_are_filled_from_the_data_and_a_transformer_reads_the_tokens() -> None:
    assert spec_with("stages.train.data.n=30").stages["train"].model.inputs == 30
    spec_with("stages.train.model={kind: transformer}", "stages.train.objective.kind=next_token")
