"""The `rl` stage: at every step, sample completions of a batch of prompts from the policy (KV-cached,
counter-based), reward them with the data's verifier, score them (old, reference and critic forwards), and update
the policy by the stage's algorithm over epochs x minibatches of the rollout.

The loop, checkpoints, resumption, logging and evaluation are the training stage's (`StageRunner.run`); this
runner builds the stage's models and replaces one optimizer step by one RL step. Each rank samples its share of
the step's prompts (all samples of a prompt on the rank that holds it, so group statistics stay local); the
loss of a minibatch is a weighted sum whose weights use the minibatch's totals over all ranks, so the gradient
is the same for every world size.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule

from engine import registry
from engine.data.stream import Stream
from engine.generate import Sampling, gathered, generate, max_positions, sample_keys, stop_tokens, support
from engine.objectives.rl import Critic, Rollout, aggregation_weights, kl_estimate, token_logprobs
from schemas.models import Transformer
from schemas.objectives import NextToken
from schemas.spec import RLStage, Spec

from .context import BuildContext
from .distributed import Dist, LaunchError
from .parallel import autocast
from .signals import Preemption
from .trainer import NonFiniteLoss, StageRunner, StepStats, build_optimizer, stage_seed

log = logging.getLogger("engine")


class RLRunner(StageRunner):
    """Runs one `rl` stage on this rank: the training stage's loop with an RL step."""

    def __init__(self, spec: Spec, name: str, stage: RLStage, dist: Dist):
        self._place(spec, name, stage, dist, unit="prompts")
        self.sequences = self.per_rank * stage.rollout.samples
        self.micro = stage.batch.micro or self.sequences

    # ------------------------------------------------------------------------- building

    def build(self) -> None:
        """Prompts, policy (+ frozen reference, + critic), the algorithm, optimizer, evaluators, checkpoints."""
        st, dist = self.stage, self.dist
        ctx = BuildContext(self.spec, self.name, st, dist)
        cfg = ctx.model_config(st.policy, Transformer)
        data = st.prompts
        if data is None:  # the validator asks for it; a checkpoint's done.json cannot give data
            raise LaunchError(f"stage {self.name}: give `data` (the policy is a checkpoint)")
        vocab = st.vocab_size or cfg.vocab_size or data.vocab_size
        st._model, st._vocab = cfg, vocab  # a checkpoint policy's config, from its done.json
        self.gen = registry.build_data(data)
        torch.manual_seed(stage_seed(self.spec.run.seed, self.name))
        self.sharded = dist.distributed and st.distributed.fsdp

        def load(ref: Any, frozen: bool = False) -> nn.Module:
            model = registry.build_model(cfg, vocab)
            model.load_state_dict(ctx.weights(ref))
            return ctx.shard(model, frozen=frozen)

        policy = load(st.policy)
        self.reference = None
        if st.reference_needed:
            self.reference = load(st.policy if st.reference == "policy" else st.reference, frozen=True)
        self.algorithm = registry.build_algorithm(
            st.algorithm,
            temperature=st.rollout.temperature,
            samples=st.rollout.samples,
            max_new_tokens=st.rollout.max_new_tokens,
        )
        self.models: dict[str, nn.Module] = {"model": policy}
        self.critic = None
        if st.algorithm.CRITIC:
            trunk = registry.build_model(cfg, vocab)
            trunk.load_state_dict(ctx.weights(st.policy))
            self.critic = ctx.shard(Critic(trunk))
            self.models["critic"] = self.critic
        # evaluators call a next-token objective over the policy (decoder, teacher-forced predictions)
        self.objective = registry.build_objective(NextToken(), {"model": policy}, ctx)
        self.objective.models = self.models
        self.policy = policy
        self.optim = build_optimizer(st.optim, {"model": policy})
        for g in self.optim.param_groups:
            g["lr_scale"] = 1.0
        if self.critic is not None:
            critic_opt = build_optimizer(st.optim, {"critic": self.critic})
            scale = (st.algorithm.critic_lr or st.optim.lr) / st.optim.lr
            for g in critic_opt.param_groups:
                g["lr_scale"] = scale
                self.optim.add_param_group({k: v for k, v in g.items() if k not in ("initial_lr",)})
        self.params = [p for m in self.models.values() for p in m.parameters() if p.requires_grad]
        self._attach(
            data,
            Stream(
                self.gen,
                self.spec.run.seed,
                self.name,
                dist.rank,
                self.per_rank,
                dist.world,
                split=st.prompt_split,
            ),
        )
        r = st.rollout
        self.sampling = Sampling(r.temperature, r.top_k, r.top_p, r.max_new_tokens)
        self.train_sampling = None if st.algorithm.FINE_TUNES else self.sampling
        self.vocab = vocab

    # ------------------------------------------------------------------------- one RL step

    def _step(self, step: int, preemption: Preemption) -> tuple[StepStats, dict[str, torch.Tensor], float]:
        """Rollout, reward, score, advantages, then epochs x minibatches optimizer steps."""
        dist = self.dist
        for g in self.optim.param_groups:  # the loop set the schedule's lr; the critic's is scaled
            g["lr"] *= g["lr_scale"]
        t0 = time.perf_counter()
        roll, judged = self._rollout(step)
        t1 = time.perf_counter()
        self._score(roll)
        self.algorithm.advantages(roll)
        t2 = time.perf_counter()
        upd, gnorm = self._update(roll, step)
        t3 = time.perf_counter()

        lengths = judged["lengths"]  # the plan's formula over the real sequences
        f = self.stage.step_flops(self.vocab, float(lengths.sum()), float((lengths * (lengths + 1)).sum()))
        flops, attention = f.total, f.attention

        sums = {
            "reward": float(roll.rewards.sum()),
            "pass_rate": float(judged["correct"].sum()),
            "completion_len": float(judged["new"].sum()),
            "truncated": float(judged["truncated"].sum()),
            **{f"check/{k}": float(v.sum()) for k, v in judged["checks"].items()},
            **{k: v for k, v in upd.items()},
        }
        adv = roll.adv[roll.act & roll.keep[:, None]] if roll.keep is not None else roll.adv[roll.act]
        sums.update(
            {"adv_sum": float(adv.sum()), "adv_sq": float((adv * adv).sum()), "adv_n": float(adv.numel())}
        )
        if roll.ref_logp is not None:
            k3 = kl_estimate(roll.old_logp, roll.ref_logp, "k3")
            sums["kl"] = float((k3 * roll.act).sum())
        for k, v in roll.stats.items():
            sums[f"stat/{k}"] = float(v)
        keys = sorted(sums)
        local = [
            float(upd.get("loss", 0.0)),
            1.0,
            float(preemption.requested != 0),
            float(len(roll.rewards)),
            float(lengths.sum()),
            flops,
            attention,
            float(bool(preemption.abort)),
            *[sums[k] for k in keys],
        ]
        total = dist.all_reduce(torch.tensor(local, dtype=torch.float64)).tolist()
        g = dict(zip(keys, total[8:], strict=True))
        stats = StepStats(total[0], total[2] > 0, *total[3:7], abort=total[7] > 0)
        if not math.isfinite(stats.loss):
            raise NonFiniteLoss(self._nonfinite("loss", stats.loss, step))
        seqs, actions = max(total[3], 1.0), max(g.get("actions", 0.0), 1.0)
        mets = {
            "reward": g["reward"] / seqs,
            "pass_rate": g["pass_rate"] / seqs,
            "completion_len": g["completion_len"] / seqs,
            "truncated": g["truncated"] / seqs,
            "entropy": g.get("entropy", 0.0) / actions,
            "adv_mean": g["adv_sum"] / max(g["adv_n"], 1.0),
            "adv_std": math.sqrt(
                max(g["adv_sq"] / max(g["adv_n"], 1.0) - (g["adv_sum"] / max(g["adv_n"], 1.0)) ** 2, 0)
            ),
            "rollout_s": t1 - t0,
            "score_s": t2 - t1,
            "update_s": t3 - t2,
        }
        if "clip_frac" in g:
            mets["clip_frac"] = g["clip_frac"] / actions
            mets["ratio"] = g["ratio"] / actions
            mets["first_ratio"] = g["first_ratio"] / max(g["first_actions"], 1.0)
        if "kl" in g:  # k3 (non-negative, low variance) of the policy at rollout time against the reference
            mets["kl"] = g["kl"] / max(g["stat/rollout_actions"], 1.0)
        for k in ("pg_loss", "value_loss"):
            if k in g:
                mets[k] = g[k] / self.algorithm.updates
        for k, v in g.items():
            if k.startswith("check/"):
                mets[k] = v / seqs
            elif k.startswith("stat/") and k != "stat/rollout_actions":
                name = k.removeprefix("stat/")
                mets[name] = v / (dist.world if name == "uniform_groups" else 1.0)
        return stats, {k: torch.tensor(v) for k, v in mets.items()}, gnorm

    @torch.no_grad()
    def _rollout(self, step: int) -> tuple[Rollout, dict[str, Any]]:
        """Sample `samples` completions of each of this rank's prompts of `step`, judge and reward them."""
        st, dist, gen = self.stage, self.dist, self.gen
        G = st.rollout.samples
        examples = self.stream.batch(step)
        exs = [examples[i] for i in range(len(examples))]
        first = step * st.batch.global_ + dist.rank * self.per_rank  # global prompt index of the first
        rows = [(i, j) for i in range(len(exs)) for j in range(G)]  # prompt-major
        table = max_positions(self.policy)
        policy = self.policy
        policy.eval()
        completions: list[list[int]] = []
        with gathered(policy), autocast(st.distributed, dist, self.sharded):
            for lo in range(0, len(rows), st.rollout.batch):
                part = rows[lo : lo + st.rollout.batch]
                prompts = [exs[i].prompt for i, _ in part]
                new = self.sampling.max_new_tokens
                if table is not None:
                    new = min(new, table - max(len(p) for p in prompts))
                keys = sample_keys(
                    self.spec.run.seed,
                    self.name,
                    "rollout",
                    np.array([first + i for i, _ in part]),
                    np.array([j for _, j in part]),
                )
                done = generate(
                    policy,
                    prompts,
                    Sampling(self.sampling.temperature, self.sampling.top_k, self.sampling.top_p, new),
                    stop=stop_tokens(gen),
                    pad=gen.vocab.pad,
                    device=dist.device,
                    keys=keys,
                    any_live=dist.any,
                )
                completions.extend(done.tokens)
        policy.train()

        rw = st.reward
        stops = set(stop_tokens(gen))
        N = len(rows)
        correct = np.zeros(N, dtype=bool)
        truncated = np.zeros(N, dtype=bool)
        rewards = np.zeros(N, dtype=np.float64)
        checks: dict[str, np.ndarray] = {}
        check = getattr(gen, "check", None)
        seqs = []
        for n, ((i, _), c) in enumerate(zip(rows, completions, strict=True)):
            ex = exs[i]
            ok = bool(gen.verify(ex, c))
            correct[n] = ok
            truncated[n] = not c or c[-1] not in stops
            r = rw.correct if ok else rw.wrong
            if rw.format and gen.answer(ex, c) is not None:
                r += rw.format
            if truncated[n]:
                r += rw.truncated
            rewards[n] = r + rw.length * len(c)
            for key, value in (check(ex, c) if check else {}).items():
                checks.setdefault(key, np.zeros(N, dtype=bool))[n] = bool(value)
            seqs.append((ex.prompt, c))
        L = max(len(p) + len(c) for p, c in seqs)
        tokens = np.full((N, L), gen.vocab.pad, dtype=np.int64)
        act = np.zeros((N, L - 1), dtype=bool)
        for n, (p, c) in enumerate(seqs):
            tokens[n, : len(p)] = p
            tokens[n, len(p) : len(p) + len(c)] = c
            act[n, len(p) - 1 : len(p) - 1 + len(c)] = True
        dev = dist.device
        roll = Rollout(
            lengths=torch.tensor([len(p) + len(c) for p, c in seqs], device=dev),
            tokens=torch.from_numpy(tokens).to(dev),
            act=torch.from_numpy(act).to(dev),
            group=torch.from_numpy(np.repeat(np.arange(len(exs)), G)).to(dev),
            rewards=torch.from_numpy(rewards).float().to(dev),
        )
        roll.correct = torch.from_numpy(correct).to(dev)
        lengths = np.array([len(p) + len(c) for p, c in seqs], dtype=np.float64)
        new_tokens = np.array([len(c) for _, c in seqs], dtype=np.float64)
        return roll, {
            "correct": correct,
            "truncated": truncated,
            "checks": checks,
            "lengths": lengths,
            "new": new_tokens,
        }

    def _forward_logp(self, model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor, supp):
        """Per-token log-probs and entropies of `model` at the training temperature and support, and the logits."""
        logits, aux = model(tokens[:, :-1])
        T = 1.0 if self.train_sampling is None else self.train_sampling.temperature
        logp, ent = token_logprobs(logits, targets, T, supp)
        return logp, ent, logits, aux

    @torch.no_grad()
    def _score(self, roll: Rollout) -> None:
        """The rollout's support (top-k / top-p), the policy's log-probs at rollout time (when updates reuse the
        batch, or for the KL), the reference's, and the critic's values: micro-batch by micro-batch."""
        st = self.stage
        if not st.scores_old:
            roll.stats["rollout_actions"] = float(roll.act.sum())
            return
        old, ref, values, supports = [], [], [], []
        full = roll.tokens.shape[1] - 1

        def pad(x: torch.Tensor, value: float | bool = 0) -> torch.Tensor:
            """Per-position entries of a micro-batch trimmed to its longest sequence, padded back to [n, L-1]."""
            extra = full - x.shape[1]
            if not extra:
                return x
            shape = (x.shape[0], extra, *x.shape[2:])
            return torch.cat([x, torch.full(shape, value, dtype=x.dtype, device=x.device)], dim=1)

        with autocast(st.distributed, self.dist, self.sharded):
            for lo in range(0, len(roll.tokens), self.micro):
                width = int(roll.lengths[lo : lo + self.micro].max())
                tok = roll.tokens[lo : lo + self.micro, :width]
                tgt = tok[:, 1:]
                logits, _ = self.policy(tok[:, :-1])
                supp = support(logits, self.train_sampling) if self.train_sampling is not None else None
                T = 1.0 if self.train_sampling is None else self.train_sampling.temperature
                old.append(pad(token_logprobs(logits, tgt, T, supp)[0]))
                if supp is not None:
                    supports.append(pad(supp, True))
                if self.reference is not None:
                    ref_logits, _ = self.reference(tok[:, :-1])
                    ref.append(pad(token_logprobs(ref_logits, tgt, T, supp)[0]))
                if self.critic is not None:
                    values.append(pad(self.critic(tok)[:, :-1]))
        roll.old_logp = torch.cat(old)
        roll.support = torch.cat(supports) if supports else None
        roll.ref_logp = torch.cat(ref) if ref else None
        roll.values = torch.cat(values) if values else None
        roll.stats["rollout_actions"] = float(roll.act.sum())

    def _update(self, roll: Rollout, step: int) -> tuple[dict[str, float], float]:
        """epochs x minibatches optimizer steps over the rollout; returns summed metrics and the last grad norm."""
        st, dist, alg = self.stage, self.dist, self.algorithm
        N = len(roll.tokens)
        M = alg.cfg.minibatches
        bounds = np.linspace(0, N, M + 1).round().astype(int)
        parts = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        # each minibatch's kept sequences and actions over all ranks: the loss's denominators
        kept = roll.keep if roll.keep is not None else torch.ones(N, dtype=torch.bool, device=roll.act.device)
        local = []
        for sl in parts:
            local += [float(kept[sl].sum()), float((roll.act[sl] & kept[sl, None]).sum())]
        totals = dist.all_reduce(torch.tensor(local, dtype=torch.float64)).tolist()
        sums: dict[str, float] = {}
        gnorm = 0.0
        loss_total = 0.0
        for epoch in range(alg.cfg.epochs):
            for m, sl in enumerate(parts):
                seqs, toks = totals[2 * m], totals[2 * m + 1]
                micros = list(range(sl.start, sl.stop, self.micro)) or [sl.start]
                for j, lo in enumerate(micros):
                    hi = min(lo + self.micro, sl.stop)
                    rows = slice(lo, hi)
                    width = int(roll.lengths[rows].max())  # these rows' longest sequence: no padding beyond
                    at = (rows, slice(0, width - 1))  # their per-position entries
                    if self.sharded:
                        for mod in self.models.values():
                            if isinstance(mod, FSDPModule):
                                mod.set_requires_gradient_sync(j == len(micros) - 1)
                    with autocast(st.distributed, dist, self.sharded):
                        tok = roll.tokens[rows, :width]
                        supp = roll.support[at] if roll.support is not None else None
                        logp, ent, _, aux = self._forward_logp(self.policy, tok, tok[:, 1:], supp)
                        values = self.critic(tok)[:, :-1] if self.critic is not None else None
                        weights = aggregation_weights(
                            roll.act[at], kept[rows], alg.aggregate, seqs, toks, alg.max_new
                        )
                        loss, mstats = alg.loss(roll, at, logp, ent, weights, values)
                        # MoE balance terms: once per minibatch over all ranks (the rows' share of the minibatch;
                        # the ranks' gradients are summed)
                        share = (hi - lo) / max(1, sl.stop - sl.start) / dist.world
                        loss = loss + aux["aux_loss"] * share
                    loss.backward()
                    loss_total += float(loss.detach())
                    for k, v in mstats.items():  # entropy and actions: of the first pass
                        if epoch == 0 or k not in ("entropy", "actions"):
                            sums[k] = sums.get(k, 0.0) + float(v)
                    if epoch == 0 and m == 0 and "ratio" in mstats:  # 1 up to rounding: the same model
                        sums["first_ratio"] = sums.get("first_ratio", 0.0) + float(mstats["ratio"])
                        sums["first_actions"] = sums.get("first_actions", 0.0) + float(mstats["actions"])
                self._normalise_gradients(1.0)
                clip = st.optim.grad_clip if st.optim.grad_clip is not None else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip, foreach=True)
                gnorm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
                if not math.isfinite(gnorm):
                    raise NonFiniteLoss(self._nonfinite("gradient norm", gnorm, step))
                self.optim.step()
                self.optim.zero_grad(set_to_none=True)
        if "clip_frac" in sums:  # clip fraction and ratio: over every pass's actions
            sums["clip_frac"] /= alg.cfg.epochs
            sums["ratio"] /= alg.cfg.epochs
        sums["loss"] = loss_total / alg.updates
        return sums, gnorm
