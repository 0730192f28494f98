"""RL post-training: the losses and advantages against hand-written references, the rollout's support, Expert
Iteration's filter, spec errors, and tiny SFT -> RL runs (reward rises, KL starts at 0, crash and resume)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, engine

from engine.generate import Sampling, choose, support
from engine.objectives.rl import (
    ExpertIterationAlgorithm,
    GRPOAlgorithm,
    ReinforceAlgorithm,
    Rollout,
    aggregation_weights,
    baseline_advantages,
    clipped_objective,
    clipped_value_loss,
    expert_keep,
    gae,
    group_advantages,
    kl_estimate,
    token_logprobs,
)
from schemas import SpecError, load_spec
from schemas.rl import GRPO, ExpertIteration, Reinforce

# ----------------------------------------------------------------------------- KL estimators


def test_kl_estimators_values_and_gradients():
    torch.manual_seed(0)
    logp = torch.randn(200, requires_grad=True)
    ref = torch.randn(200)
    d = logp.detach() - ref
    k3 = kl_estimate(logp, ref, "k3")
    assert (k3 >= 0).all()
    assert torch.allclose(k3, torch.exp(-d) + d - 1, atol=1e-6)
    assert torch.allclose(kl_estimate(logp, ref, "k1"), d)
    assert torch.allclose(kl_estimate(logp, ref, "k2"), 0.5 * d * d)
    # k3+: k3's value, k2's gradient (d per token); k3's own gradient is 1 - exp(-d)
    plus = kl_estimate(logp, ref, "k3+")
    assert torch.allclose(plus, k3, atol=1e-6)
    (g_plus,) = torch.autograd.grad(plus.sum(), logp)
    (g_k3,) = torch.autograd.grad(kl_estimate(logp, ref, "k3").sum(), logp)
    assert torch.allclose(g_plus, d, atol=1e-6)
    assert torch.allclose(g_k3, 1 - torch.exp(-d), atol=1e-6)
    same = kl_estimate(ref.clone(), ref, "k3")
    assert torch.equal(same, torch.zeros_like(ref))


def test_k2_gradient_is_the_kl_gradient_on_policy():
    """E_pi[grad k2] = grad KL(pi || ref) exactly when the expectation is a sum over the vocabulary."""
    torch.manual_seed(1)
    theta = torch.randn(6, requires_grad=True)
    ref = torch.log_softmax(torch.randn(6), -1)
    logp = torch.log_softmax(theta, -1)
    p = logp.exp().detach()
    k2 = kl_estimate(logp, ref, "k2")
    (g_est,) = torch.autograd.grad((p * k2).sum(), theta)
    logp = torch.log_softmax(theta, -1)
    kl = (logp.exp() * (logp - ref)).sum()
    (g_true,) = torch.autograd.grad(kl, theta)
    assert torch.allclose(g_est, g_true, atol=1e-6)


# ----------------------------------------------------------------------------- advantages


def test_group_advantages_uniform_groups_are_zero():
    r = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    a = group_advantages(r, "std")
    assert torch.equal(a[0], torch.zeros(4)) and torch.equal(a[2], torch.zeros(4))
    std = torch.tensor([0.0, 1.0, 0.0, 1.0]).std()
    assert torch.allclose(a[1], (torch.tensor([0.0, 1, 0, 1]) - 0.5) / (std + 1e-4))
    assert torch.allclose(group_advantages(r, "none")[1], torch.tensor([-0.5, 0.5, -0.5, 0.5]))


def test_rloo_baseline_excludes_the_sample_itself():
    r = torch.tensor([[1.0, 0.0, 0.0, 2.0]])
    a = baseline_advantages(r, "rloo")
    expect = [r[0, i] - (r[0].sum() - r[0, i]) / 3 for i in range(4)]
    assert torch.allclose(a[0], torch.stack(expect))
    assert torch.allclose(baseline_advantages(r, "mean")[0], r[0] - 0.75)
    assert torch.equal(baseline_advantages(r, "none"), r)


def test_gae_matches_a_reference_loop():
    torch.manual_seed(2)
    N, T = 5, 9
    act = torch.zeros(N, T, dtype=torch.bool)
    starts, lens = [0, 2, 3, 1, 4], [4, 7, 2, 8, 1]
    for i, (s, n) in enumerate(zip(starts, lens, strict=True)):
        act[i, s : s + n] = True
    rewards, values = torch.randn(N, T), torch.randn(N, T)
    gamma, lam = 0.9, 0.8
    adv, ret = gae(rewards, values, act, gamma, lam)
    for i, (s, n) in enumerate(zip(starts, lens, strict=True)):
        r, v = rewards[i, s : s + n].tolist(), values[i, s : s + n].tolist()
        expect, running = [0.0] * n, 0.0
        for t in reversed(range(n)):
            nxt = v[t + 1] if t + 1 < n else 0.0
            running = r[t] + gamma * nxt - v[t] + gamma * lam * running
            expect[t] = running
        assert torch.allclose(adv[i, s : s + n], torch.tensor(expect), atol=1e-5)
        assert torch.allclose(ret[i, s : s + n], torch.tensor(expect) + values[i, s : s + n], atol=1e-5)
    assert (adv[~act] == 0).all()


def test_value_loss_is_clipped():
    old, ret = torch.tensor([0.0, 0.0]), torch.tensor([1.0, -1.0])
    new = torch.tensor([0.5, 0.5])
    vl = clipped_value_loss(new, old, ret, clip=0.2)
    # row 0: unclipped (0.5-1)^2 = 0.25, clipped (0.2-1)^2 = 0.64 -> max 0.64; row 1: 2.25 vs 1.44 -> 2.25
    assert torch.allclose(vl, 0.5 * torch.tensor([0.64, 2.25]))


def test_clipped_objective_takes_the_pessimistic_term():
    logp = torch.log(torch.tensor([1.5, 0.5, 1.5, 0.5]))
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, ratio, clipped = clipped_objective(logp, torch.zeros(4), adv, (0.8, 1.2))
    assert torch.allclose(loss, torch.tensor([-1.2, -0.5, 1.5, 0.8]))
    assert clipped.tolist() == [True, False, False, True]


# ----------------------------------------------------------------------------- GRPO = REINFORCE at one update


def _tiny_model():
    from engine.models.transformer import Transformer
    from schemas.models import Transformer as Config

    torch.manual_seed(0)
    cfg = Config(
        kind="transformer",
        dim=16,
        depth=1,
        heads=2,
        position={"kind": "rope"},
        ffn={"kind": "dense", "hidden": 32},
    )
    return Transformer(cfg, 7)


def _rollout(P: int = 3, G: int = 4, L: int = 10) -> Rollout:
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(3, 7, (P * G, L), generator=g)
    act = torch.zeros(P * G, L - 1, dtype=torch.bool)
    for i in range(P * G):
        act[i, 3 : 3 + 2 + i % 5] = True
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0] * P)[: P * G]
    rewards[G : 2 * G] = 1.0  # a uniform group
    return Rollout(tokens, act, torch.arange(P).repeat_interleave(G), rewards)


def test_grpo_one_update_has_the_reinforce_gradient_with_group_advantages():
    model = _tiny_model()
    roll = _rollout()
    alg = GRPOAlgorithm(GRPO(), temperature=1.0, samples=4, max_new_tokens=8)
    alg.advantages(roll)
    keep = torch.ones(len(roll.tokens), dtype=torch.bool)
    tokens_total = float(roll.act.sum())
    w = aggregation_weights(roll.act, keep, "token_mean", len(keep), tokens_total, 8)
    logits, _ = model(roll.tokens[:, :-1])
    logp, ent = token_logprobs(logits, roll.targets)
    loss, stats = alg.loss(roll, slice(None), logp, ent, w, None)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    # by hand: -(1/#actions) sum_i A_i sum_t log pi(a_t), A = (r - group mean) / (group std + eps)
    r = roll.rewards.view(-1, 4)
    A = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).reshape(-1)
    logits2, _ = model(roll.tokens[:, :-1])
    lp = torch.log_softmax(logits2.float(), -1).gather(-1, roll.targets[..., None]).squeeze(-1)
    ref = -(A[:, None] * lp * roll.act).sum() / tokens_total
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    assert float(stats["clip_frac"]) == 0 and float(stats["ratio"]) == float(roll.act.sum())


def test_sequence_mean_and_constant_aggregation():
    act = torch.tensor([[True, True, False], [True, False, False]])
    keep = torch.tensor([True, True])
    w = aggregation_weights(act, keep, "sequence_mean", 2, 3, 5)
    assert torch.allclose(w, torch.tensor([[0.25, 0.25, 0], [0.5, 0, 0]]))
    w = aggregation_weights(act, keep, "constant", 2, 3, 5)
    assert torch.allclose(w, act.float() / 10)
    w = aggregation_weights(act, torch.tensor([True, False]), "token_mean", 1, 2, 5)
    assert torch.allclose(w, torch.tensor([[0.5, 0.5, 0], [0, 0, 0]]))


def test_reinforce_rloo_and_dropped_uniform_groups():
    roll = _rollout()
    ReinforceAlgorithm(Reinforce(), temperature=1.0, samples=4, max_new_tokens=8).advantages(roll)
    r = roll.rewards.view(-1, 4)
    loo = r - (r.sum(1, keepdim=True) - r) / 3
    assert torch.allclose(roll.adv[:, 3], loo.reshape(-1))  # every sequence acts at position 3
    roll = _rollout()
    GRPOAlgorithm(GRPO(drop_uniform_groups=True), temperature=1.0, samples=4, max_new_tokens=8).advantages(
        roll
    )
    assert roll.keep.tolist() == [True] * 4 + [False] * 4 + [True] * 4
    assert roll.stats["uniform_groups"] == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------- expert iteration


def test_expert_iteration_keeps_verified_distinct_completions():
    tokens = torch.tensor(
        [
            [1, 5, 6, 2, 0],  # prompt 0: correct
            [1, 5, 6, 2, 0],  # same completion: dropped
            [1, 6, 6, 2, 0],  # wrong
            [1, 5, 6, 2, 0],  # prompt 1: the same text, another prompt: kept
        ]
    )
    act = torch.zeros(4, 4, dtype=torch.bool)
    act[:, 0:3] = True
    group = torch.tensor([0, 0, 0, 1])
    correct = torch.tensor([True, True, False, True])
    assert expert_keep(tokens, act, group, correct, dedupe=True).tolist() == [True, False, False, True]
    assert expert_keep(tokens, act, group, correct, dedupe=False).tolist() == [True, True, False, True]
    roll = Rollout(tokens, act, group, correct.float(), correct=correct)
    alg = ExpertIterationAlgorithm(ExpertIteration(), temperature=1.0, samples=2, max_new_tokens=4)
    alg.advantages(roll)
    assert roll.stats["kept"] == 2.0


# ----------------------------------------------------------------------------- the support


def test_sampled_tokens_lie_in_the_support_and_logprobs_renormalise():
    torch.manual_seed(4)
    logits = torch.randn(64, 12)
    s = Sampling(temperature=0.7, top_p=0.8, top_k=5)
    mask = support(logits, s)
    assert mask.sum(-1).max() <= 5 and mask.sum(-1).min() >= 1
    for trial in range(20):
        u = torch.rand(64, generator=torch.Generator().manual_seed(trial))
        tok = choose(logits, s, u)
        assert mask.gather(1, tok[:, None]).all()
    tok = choose(logits, s, torch.full((64,), 0.5))
    logp, _ = token_logprobs(logits, tok, 0.7, mask)
    filtered = (logits / 0.7).masked_fill(~mask, float("-inf")).softmax(-1)
    assert torch.allclose(logp.exp(), filtered.gather(1, tok[:, None]).squeeze(1), atol=1e-6)
    assert support(logits, Sampling(temperature=1.0)) is None


# ----------------------------------------------------------------------------- spec errors

SPEC = """
run: {name: t, output: /tmp/x}
resources: {procs_per_node: 2}
stages:
  sft:
    model: {kind: transformer, dim: 32, depth: 1, heads: 2, position: {kind: rope}, ffn: {kind: dense, hidden: 64}}
    data: {kind: reverse, symbols: 4, length: {train: [2, 5], eval: [6, 7]}}
    schedule: {steps: 10}
    batch: {global: 32}
  grpo:
    kind: rl
    policy: {stage: sft}
    rollout: {samples: 8, max_new_tokens: 8}
    algorithm: {kind: grpo, kl: {coef: 0.001}}
    schedule: {steps: 5}
    batch: {global: 16}
"""


def _errors(tmp_path: Path, *overrides: str) -> str:
    f = tmp_path / "s.yaml"
    f.write_text(SPEC)
    with pytest.raises(SpecError) as e:
        load_spec(str(f), list(overrides))
    return str(e.value)


@pytest.mark.parametrize(
    ("overrides", "expect"),
    [
        (["stages.grpo.policy.stage=later"], "stages.grpo.policy.stage: 'later' is not an earlier stage"),
        (["stages.grpo.rollout.samples=1"], "stages.grpo.rollout.samples: GRPO compares each sample"),
        (["stages.grpo.algorithm.clip=[1.0, 1.2]"], "stages.grpo.algorithm.clip: [1.0, 1.2] must contain 1"),
        (["stages.grpo.algorithm.kl.estimator=k5"], "'k5' is not one of k1, k2, k3, k3+"),
        (["stages.grpo.reference=null"], "stages.grpo.algorithm.kl.coef: 0.001 needs a reference model"),
        (["stages.grpo.data={kind: synthetic_video}"], "which have no verifier to reward"),
        (["stages.grpo.split=test"], "stages.grpo.split: reverse has no split 'test'"),
        (["stages.grpo.algorithm.minibatches=100"], "100 minibatches but each rank holds 64 sequences"),
        (["stages.grpo.reward.correct=0"], "every completion gets the same reward"),
        (
            [
                "stages.sft.model.position={kind: learned, max_len: 20}",
                "stages.grpo.rollout.max_new_tokens=12",
            ],
            "stages.grpo.rollout.max_new_tokens: prompts of up to 17 tokens + 12 new tokens exceed the policy's 20",
        ),
        (["stages.grpo.algorithm={kind: reinforce, epochs: 2}"], "REINFORCE is on-policy"),
    ],
)
def test_bad_rl_specs_are_spec_errors(tmp_path, overrides, expect):
    assert expect in _errors(tmp_path, *overrides)


# ----------------------------------------------------------------------------- tiny runs

# specs/reverse_rl.yaml (SFT on short reversals, 30 GRPO steps, pass@k of both models) writing to OUT
TINY = (REPO / "specs" / "reverse_rl.yaml").read_text().replace("output: runs/reverse_rl", "output: OUT")


def _rows(out: Path, stage: str = "rl") -> list[dict]:
    return [json.loads(line) for line in (out / stage / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """SFT on short reversals, 30 GRPO steps, then pass@k of both models on 128 fixed prompts (about 10 s)."""
    d = tmp_path_factory.mktemp("rl")
    out = d / "run"
    spec = d / "tiny.yaml"
    spec.write_text(TINY.replace("OUT", str(out)))
    r = engine(str(spec))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_grpo_raises_pass_at_1_and_starts_at_zero_kl(tiny_run):
    rows = [r for r in _rows(tiny_run) if "reward" in r]
    assert len(rows) == 30
    first = rows[0]
    assert first["kl"] == 0.0  # the reference is the policy's start
    assert first["first_ratio"] == pytest.approx(1.0, abs=1e-6)  # recomputed log-probs of the same model
    for key in (
        "pass_rate",
        "entropy",
        "clip_frac",
        "completion_len",
        "adv_std",
        "rollout_s",
        "update_s",
        "flops",
    ):
        assert key in first
    assert rows[-1]["flops"] > rows[0]["flops"] > 0
    models = json.loads((tiny_run / "compare" / "evals" / "sampling.json").read_text())["models"]
    before, after = models["before"], models["after"]
    # measured: pass@1 at T = 1 from 0.176 to 0.290 (greedy 0.344 -> 0.320, pass@16 0.539 -> 0.438: RL-Wall's
    # temperature distillation without more coverage)
    assert after["pass@1/train/T1"] > before["pass@1/train/T1"] + 0.05, (before, after)


def test_rl_resumes_to_the_same_weights(tiny_run, tmp_path):
    """A crash after step 10's checkpoint: the rerun resumes there and ends bit for bit where the run ended."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY.replace("OUT", str(out)))
    rl = out / "rl"
    shutil.rmtree(rl / "final")
    for step in (20, 30):
        shutil.rmtree(rl / "checkpoints" / f"step-{step:08d}")
    r = engine(str(spec), "--stage", "rl")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from step 10" in r.stderr + r.stdout
    a = torch.load(tiny_run / "rl" / "final" / "model.pt", weights_only=True)
    b = torch.load(rl / "final" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_target_outside_the_support_gives_finite_logprobs_and_gradients():
    """Prompt positions (and a sampled token at the nucleus's edge) may fall outside the recomputed support."""
    logits = torch.tensor([[4.0, 3.0, -2.0, -3.0]], requires_grad=True)
    s = Sampling(temperature=1.0, top_p=0.5)
    mask = support(logits.detach(), s)
    assert mask.tolist() == [[True, False, False, False]]
    logp, ent = token_logprobs(logits, torch.tensor([2]), 1.0, mask)
    (logp.sum() + ent.sum()).backward()
    assert torch.isfinite(logp).all() and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    ("algorithm", "key"),
    [
        ("{kind: ppo, epochs: 2, kl: {coef: 0.001, apply: reward}}", "value_loss"),
        ("{kind: reinforce, baseline: rloo}", "pg_loss"),
        ("{kind: expert_iteration, epochs: 2}", "kept"),
        (
            "{kind: grpo, drop_uniform_groups: true, aggregate: sequence_mean, minibatches: 2}",
            "uniform_groups",
        ),
    ],
)
def test_every_algorithm_runs_with_top_p(tiny_run, tmp_path, algorithm, key):
    """Each algorithm post-trains the tiny SFT model for 8 steps with nucleus sampling (a truncated support)."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    shutil.rmtree(out / "rl")
    shutil.rmtree(out / "compare")  # it scored the old rl stage: the run directory would refuse the change
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY.replace("OUT", str(out)))
    r = engine(
        str(spec),
        "--stage",
        "rl",
        f"stages.rl.algorithm={algorithm}",
        "stages.rl.rollout.top_p=0.9",
        "stages.rl.schedule.steps=8",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [row for row in _rows(out) if "reward" in row]
    assert len(rows) == 8 and all(np.isfinite(row["loss"]) for row in rows)
    assert key in rows[-1], rows[-1]
    assert (out / "rl" / "final" / "done.json").exists()


@pytest.mark.distributed
@pytest.mark.parametrize(
    "algorithm", ["{kind: grpo, epochs: 2, kl: {coef: 0.001}}", "{kind: ppo, epochs: 2}"]
)
def test_two_sharded_ranks_match_one_process(tiny_run, tmp_path, algorithm):
    """5 RL steps on 2 FSDP2 ranks (each sampling half the prompts) and in one process: the same rewards at every
    step and the same final weights up to float reduction order."""
    from helpers import torchrun

    runs = {}
    for name, launch in (("one", "engine"), ("two", "torchrun")):
        out = tmp_path / name
        shutil.copytree(tiny_run, out)
        shutil.rmtree(out / "rl")
        shutil.rmtree(out / "compare")
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(TINY.replace("OUT", str(out)))
        args = [str(spec), "--stage", "rl", f"stages.rl.algorithm={algorithm}", "stages.rl.schedule.steps=5"]
        r = engine(*args) if launch == "engine" else torchrun("-m", "engine", *args)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        runs[name] = out
    rewards = {n: [row["reward"] for row in _rows(out) if "reward" in row] for n, out in runs.items()}
    assert rewards["one"] == rewards["two"] and len(rewards["one"]) == 5
    for key in ("model", "critic") if "ppo" in algorithm else ("model",):
        a = torch.load(runs["one"] / "rl" / "final" / f"{key}.pt", weights_only=True)
        b = torch.load(runs["two"] / "rl" / "final" / f"{key}.pt", weights_only=True)
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (key, k, (a[k] - b[k]).abs().max())
