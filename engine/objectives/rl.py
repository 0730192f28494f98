"""RL post-training with verifiable rewards: per-token log-probabilities, KL estimators, advantages (group,
leave-one-out, GAE), the clipped policy loss, and the four algorithms as loss functions over a rollout.

Shapes: a rollout holds N sequences (prompt + completion, right-padded) of L tokens; everything per token lives
on the L-1 positions that predict the next token, and `act` [N, L-1] marks those that predict a completion
token (the actions). Sequences of one prompt are consecutive (`group` [N] numbers the prompt on its rank).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from schemas.rl import GRPO, KL, PPO, PolicyGradient

# ----------------------------------------------------------------------------- per-token quantities


def token_logprobs(
    logits: Tensor, targets: Tensor, temperature: float = 1.0, support: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """log pi(target) and the entropy of pi per position, in fp32, for pi = softmax(logits / temperature)
    restricted to `support` (bool [..., V]; the tokens sampling could draw, and the target) when given."""
    z = logits.float() / temperature
    if support is not None:  # the target always counts as inside: a sampled token is (up to rounding at the
        # nucleus's edge), and positions that are not actions (the prompt) must not give -inf
        inside = support.scatter(-1, targets.unsqueeze(-1), True)
        z = z.masked_fill(~inside, float("-inf"))
    logp_all = torch.log_softmax(z, dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    # -sum p log p over the support; tokens outside it (log p = -inf) add 0 with a zero gradient, not inf * 0
    inside = logp_all.masked_fill(~torch.isfinite(logp_all), 0.0)
    entropy = -(logp_all.exp() * inside).sum(-1)
    return logp, entropy


def kl_estimate(logp: Tensor, ref_logp: Tensor, estimator: str) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) at tokens sampled from pi, d = log pi - log pi_ref:
    k1 = d, k2 = d^2 / 2, k3 = exp(-d) + d - 1 (>= 0, low variance), k3+ = k3's value with k2's gradient.

    On-policy, E[grad k2] = grad KL(pi || pi_ref) while E[grad k3] = grad KL(pi_ref || pi): k3 as a loss pulls
    toward the reference along the other direction's gradient. k3+ keeps k3's value (what is logged and
    weighed) and takes k2's gradient (straight-through)."""
    d = logp - ref_logp
    if estimator == "k1":
        return d
    k2 = 0.5 * d * d
    if estimator == "k2":
        return k2
    k3 = torch.expm1(-d) + d
    if estimator == "k3":
        return k3
    if estimator == "k3+":
        return k3.detach() + (k2 - k2.detach())
    raise ValueError(f"unknown KL estimator {estimator!r}")


# ----------------------------------------------------------------------------- advantages


def group_advantages(rewards: Tensor, scale: str = "std", eps: float = 1e-4) -> Tensor:
    """GRPO: per prompt (rows of rewards [P, G]), r - mean, divided by the group's (unbiased) std + eps when
    scale is `std`. A group whose rewards are all equal gets zeros."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "std":
        centred = centred / (rewards.std(dim=1, keepdim=True) + eps)
    return centred


def baseline_advantages(rewards: Tensor, baseline: str) -> Tensor:
    """REINFORCE advantages of rewards [P, G]: r - b with b the mean of the prompt's OTHER samples (rloo), of
    all its samples (mean), or 0 (none)."""
    if baseline == "none":
        return rewards.clone()
    G = rewards.shape[1]
    total = rewards.sum(dim=1, keepdim=True)
    if baseline == "mean":
        return rewards - total / G
    return rewards - (total - rewards) / (G - 1)  # leave-one-out


def gae(rewards: Tensor, values: Tensor, act: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over each sequence's actions (act [N, T], contiguous per row):
    delta_t = r_t + gamma V_{t+1} - V_t (V after the last action = 0), A_t = delta_t + gamma lam A_{t+1}.
    Returns (advantages, returns = advantages + values), zero off the actions."""
    rewards, values = rewards * act, values * act
    N, T = rewards.shape
    adv = torch.zeros_like(rewards)
    next_value = torch.zeros(N, dtype=rewards.dtype, device=rewards.device)
    running = torch.zeros_like(next_value)
    for t in range(T - 1, -1, -1):
        on = act[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(on, delta + gamma * lam * running, torch.zeros_like(running))
        adv[:, t] = running
        next_value = torch.where(on, values[:, t], torch.zeros_like(next_value))
    return adv, (adv + values) * act


def clipped_objective(
    logp: Tensor, old_logp: Tensor, adv: Tensor, clip: tuple[float, float]
) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's per-token loss -min(r A, clip(r, low, high) A) with r = exp(logp - old_logp); also the ratio and
    whether the clipped term was the one taken (the clip fraction's numerator)."""
    ratio = torch.exp(logp - old_logp)
    plain = ratio * adv
    clipped = ratio.clamp(clip[0], clip[1]) * adv
    loss = -torch.minimum(plain, clipped)
    return loss, ratio.detach(), (clipped < plain).detach()


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip: float) -> Tensor:
    """PPO's per-token value loss 0.5 max((V - R)^2, (V_clipped - R)^2), V_clipped = V_old + clamp(V - V_old)."""
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2)


def aggregation_weights(
    act: Tensor, keep: Tensor, how: str, sequences: float, tokens: float, max_new_tokens: int
) -> Tensor:
    """Per-token weights [N, T] that turn a per-token loss into the minibatch's loss by a weighted sum:
    token_mean 1 / tokens; sequence_mean 1 / (the sequence's actions * sequences); constant 1 / (sequences *
    max_new_tokens). `sequences` and `tokens` are the kept totals of the minibatch over all ranks."""
    mask = (act & keep[:, None]).float()
    if how == "token_mean":
        return mask / max(tokens, 1.0)
    if how == "sequence_mean":
        per_seq = mask.sum(1, keepdim=True).clamp(min=1.0)
        return mask / per_seq / max(sequences, 1.0)
    if how == "constant":
        return mask / (max(sequences, 1.0) * max_new_tokens)
    raise ValueError(f"unknown aggregation {how!r}")


# ----------------------------------------------------------------------------- the rollout and its losses


@dataclass
class Rollout:
    """One rank's rollout on the device: sequences, actions, rewards, and what the updates need."""

    tokens: Tensor  # [N, L] long, prompt + completion, right-padded
    act: Tensor  # [N, L-1] bool: position predicts a completion token
    group: Tensor  # [N] long: the prompt on this rank
    rewards: Tensor  # [N] float
    lengths: Tensor | None = None  # [N] long: prompt + completion tokens
    correct: Tensor | None = None  # [N] bool: the verifier accepted the completion
    support: Tensor | None = None  # [N, L-1, V] bool: the tokens sampling could draw (top-k / top-p)
    old_logp: Tensor | None = None  # [N, L-1] the policy's at rollout time (when updates reuse the batch)
    ref_logp: Tensor | None = None  # [N, L-1] the reference's
    values: Tensor | None = None  # [N, L-1] the critic's at rollout time (PPO)
    adv: Tensor | None = None  # [N, L-1]
    returns: Tensor | None = None  # [N, L-1] (PPO)
    keep: Tensor | None = None  # [N] bool: sequences in the loss
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def targets(self) -> Tensor:
        """The token each position predicts [N, L-1]."""
        return self.tokens[:, 1:]


class Algorithm:
    """What the RL runner asks of an algorithm: which forwards it needs, advantages, and the loss of a micro-batch.

    `loss` returns the micro-batch's contribution to the minibatch's loss (a weighted sum with `weights`, so
    micro-batches and ranks add up) and summed metrics with their counts.
    """

    def __init__(self, cfg, *, temperature: float, samples: int, max_new_tokens: int):
        self.cfg, self.temperature, self.samples, self.max_new = cfg, temperature, samples, max_new_tokens

    @property
    def aggregate(self) -> str:
        return self.cfg.aggregate

    @property
    def updates(self) -> int:
        return self.cfg.updates

    def reward_penalty(self, roll: Rollout) -> Tensor | None:
        """Per-token KL penalty beta * k1 when the KL is applied to the reward (None otherwise)."""
        kl: KL = self.cfg.kl
        if kl.apply != "reward" or kl.coef == 0 or roll.ref_logp is None:
            return None
        return kl.coef * (roll.old_logp - roll.ref_logp) * roll.act

    def advantages(self, roll: Rollout) -> None:
        """Fill roll.adv (and keep, returns)."""
        raise NotImplementedError

    def loss(
        self,
        roll: Rollout,
        rows: slice,
        logp: Tensor,
        entropy: Tensor,
        weights: Tensor,
        values: Tensor | None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted loss of rows `rows` of the rollout, given the policy's new log-probs and entropies."""
        raise NotImplementedError


class PolicyGradientAlgorithm(Algorithm):
    """GRPO, REINFORCE and PPO's policy: -min(r A, clip(r) A) per action, plus the KL term and entropy bonus."""

    clip: tuple[float, float] = (0.0, float("inf"))

    def sequence_rewards(self, roll: Rollout) -> Tensor:
        """Rewards [N] with a reward-side KL penalty summed over each sequence."""
        pen = self.reward_penalty(roll)
        return roll.rewards if pen is None else roll.rewards - pen.sum(1)

    def loss(self, roll, rows, logp, entropy, weights, values):
        cfg: PolicyGradient = self.cfg
        act = roll.act[rows]
        old = roll.old_logp[rows] if roll.old_logp is not None else logp.detach()
        pg, ratio, clipped = clipped_objective(logp, old, roll.adv[rows], self.clip)
        per_token = pg
        stats = {
            "pg_loss": (pg * weights).sum().detach(),
            "clip_frac": (clipped & act).float().sum(),
            "ratio": (ratio * act).sum(),
            "entropy": (entropy.detach() * act).sum(),
            "actions": act.float().sum(),
        }
        if cfg.kl.coef > 0 and cfg.kl.apply == "loss":
            kl = kl_estimate(logp, roll.ref_logp[rows], cfg.kl.estimator)
            per_token = per_token + cfg.kl.coef * kl
        if cfg.entropy:
            per_token = per_token - cfg.entropy * entropy
        loss = (per_token * weights).sum()
        if values is not None:  # PPO: the critic's clipped value loss on the same weights
            vl = clipped_value_loss(values, roll.values[rows], roll.returns[rows], self.cfg.value_clip)
            vloss = (vl * weights).sum()
            loss = loss + self.cfg.value_coef * vloss
            stats["value_loss"] = vloss.detach()
        return loss, stats


class GRPOAlgorithm(PolicyGradientAlgorithm):
    """Group-normalised advantages, shared by every token of a completion."""

    def __init__(self, cfg: GRPO, **rollout):
        super().__init__(cfg, **rollout)
        self.clip = cfg.clip

    def advantages(self, roll: Rollout) -> None:
        r = self.sequence_rewards(roll).view(-1, self.samples)  # [P, G]
        adv = group_advantages(r, self.cfg.scale).reshape(-1)
        roll.adv = adv[:, None] * roll.act
        uniform = (r.max(dim=1).values == r.min(dim=1).values).repeat_interleave(self.samples)
        roll.keep = ~uniform if self.cfg.drop_uniform_groups else torch.ones_like(uniform)
        roll.stats["uniform_groups"] = float(uniform.float().mean()) if len(uniform) else 0.0


class ReinforceAlgorithm(PolicyGradientAlgorithm):
    """A baseline per prompt (leave-one-out by default); on-policy, so the ratio is 1 and never clipped."""

    def advantages(self, roll: Rollout) -> None:
        r = self.sequence_rewards(roll).view(-1, self.samples)
        adv = baseline_advantages(r, self.cfg.baseline).reshape(-1)
        roll.adv = adv[:, None] * roll.act
        roll.keep = torch.ones(len(adv), dtype=torch.bool, device=adv.device)


class PPOAlgorithm(PolicyGradientAlgorithm):
    """Token-level advantages by GAE on the critic's values; the sequence's reward at its last action."""

    def __init__(self, cfg: PPO, **rollout):
        super().__init__(cfg, **rollout)
        self.clip = cfg.clip

    def advantages(self, roll: Rollout) -> None:
        act = roll.act
        last = act.cumsum(1) == act.sum(1, keepdim=True)  # at and after the last action
        last &= act
        tok_rewards = roll.rewards[:, None] * last.float()
        pen = self.reward_penalty(roll)
        if pen is not None:
            tok_rewards = tok_rewards - pen
        adv, roll.returns = gae(tok_rewards, roll.values, act, self.cfg.gamma, self.cfg.lam)
        roll.adv = adv
        roll.keep = torch.ones(len(act), dtype=torch.bool, device=act.device)


class ExpertIterationAlgorithm(Algorithm):
    """Fine-tune on the verified completions (one copy of each distinct one per prompt): NLL at temperature 1."""

    @property
    def aggregate(self) -> str:
        return "token_mean"

    def advantages(self, roll: Rollout) -> None:
        roll.keep = expert_keep(roll.tokens, roll.act, roll.group, roll.correct, self.cfg.dedupe)
        roll.adv = roll.act.float()
        roll.stats["kept"] = float(roll.keep.float().sum())

    def loss(self, roll, rows, logp, entropy, weights, values):
        act = roll.act[rows]
        loss = -(logp * weights).sum()
        stats = {"entropy": (entropy.detach() * act).sum(), "actions": act.float().sum()}
        return loss, stats


def expert_keep(tokens: Tensor, act: Tensor, group: Tensor, correct: Tensor, dedupe: bool) -> Tensor:
    """Which sequences Expert Iteration trains on: verified ones, the first of each distinct completion per
    prompt when `dedupe`."""
    keep = correct.clone()
    if not dedupe:
        return keep
    seen: set[tuple[int, tuple[int, ...]]] = set()
    rows = tokens.tolist()
    acts = act.tolist()
    for i, ok in enumerate(correct.tolist()):
        if not ok:
            continue
        completion = tuple(t for t, a in zip(rows[i][1:], acts[i], strict=True) if a)
        key = (int(group[i]), completion)
        if key in seen:
            keep[i] = False
        seen.add(key)
    return keep


# ----------------------------------------------------------------------------- the critic


class Critic(nn.Module):
    """PPO's value model: a copy of the policy's transformer (its weights to start) and a value head on its final
    hidden states, zero-initialised so that values start at 0."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.cfg.dim, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def blocks(self) -> nn.ModuleList:
        """The trunk's blocks (FSDP2 shards per block, as for the policy)."""
        return self.trunk.blocks

    def forward(self, tokens: Tensor) -> Tensor:
        """Values [B, L] of every prefix."""
        hidden, _ = self.trunk(tokens, head=False)
        return self.head(hidden).squeeze(-1).float()


def numpy_groups(n_prompts: int, samples: int) -> np.ndarray:
    """The prompt index of each of n_prompts * samples sequences (prompt-major)."""
    return np.repeat(np.arange(n_prompts), samples)
