"""Configs of RL post-training with verifiable rewards: rollouts, the reward, the KL term and the algorithms
(`grpo`, `ppo`, `reinforce`, `expert_iteration`), each owning its rules."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from .base import Examples, Problems, Strict, Tokens, kinded, spec_error


class Rollout(Strict):
    """How completions are drawn from the policy at every RL step (KV-cached, counter-based sampling)."""

    samples: int = Field(
        8, ge=1, le=4096, description="Completions drawn per prompt (GRPO's group size G, EI's k)."
    )
    temperature: float = Field(
        1.0, gt=0, le=100, description="Sampling temperature; the policy's log-probabilities use it too."
    )
    top_p: float = Field(
        1.0, gt=0, le=1, description="Nucleus sampling: the smallest set of tokens of mass >= top_p; 1 = all."
    )
    top_k: int | None = Field(
        None, gt=0, description="Sample among the k most likely tokens only; null = all."
    )
    max_new_tokens: Tokens = Field(64, gt=0, description="Most tokens generated per completion.")
    batch: Examples = Field(
        256, gt=0, description="Sequences decoded together on one rank (a rollout's memory, not its result)."
    )


class Reward(Strict):
    """The reward of a completion: the data's verifier, plus optional shaping terms named here."""

    correct: float = Field(1.0, description="Reward of a completion the data's verifier accepts.")
    wrong: float = Field(0.0, description="Reward of a completion it rejects.")
    format: float = Field(
        0.0,
        description="Added when an answer can be read from the completion (the data's `answer` is not null), "
        "right or wrong.",
    )
    truncated: float = Field(
        0.0,
        description="Added when a completion reaches max_new_tokens without a stop token (negative: a penalty "
        "for running over).",
    )
    length: float = Field(
        0.0, description="Added per generated token (negative: a length penalty; 0 = none)."
    )

    @model_validator(mode="after")
    def _informative(self) -> Reward:
        if self.correct == self.wrong and not (self.format or self.truncated or self.length):
            raise spec_error(
                "correct",
                f"correct = wrong = {self.correct} and no shaping term: every completion gets the same reward "
                "and nothing is learnt; make correct larger than wrong",
            )
        return self


KL_ESTIMATORS = ("k1", "k2", "k3", "k3+")


class KL(Strict):
    """KL(policy || reference) on the sampled tokens, as a loss term or a reward penalty.

    Per token with log-ratio d = log pi - log pi_ref: k1 = d; k2 = d^2 / 2; k3 = exp(-d) + d - 1 (Schulman's
    low-variance, non-negative estimator). As a loss, k2's gradient is the KL's (on-policy samples) but k3's is
    the gradient of the reverse direction KL(ref || pi); `k3+` logs and weighs k3's value with k2's gradient.
    """

    coef: float = Field(0.0, ge=0, le=100, description="Weight beta of the KL term; 0 = none (still logged).")
    estimator: Literal["k1", "k2", "k3", "k3+"] = Field(
        "k3+",
        description="Per-token estimator: k1, k2, k3 (low-variance, as GRPO papers use it) or k3+ (k3's value, "
        "k2's gradient: the KL's true gradient; the default).",
    )
    apply: Literal["loss", "reward"] = Field(
        "loss",
        description="loss: beta * estimator added to the loss per token; reward: beta * k1 subtracted from the "
        "reward (per token for ppo, summed per sequence for the others).",
    )


class PolicyGradient(Strict):
    """What the policy-gradient algorithms share: updates per rollout, KL, entropy bonus, loss aggregation."""

    kind: str  # declared first, so that each algorithm's `kind` leads its fields

    CRITIC: ClassVar[bool] = False  # trains a value model beside the policy
    FINE_TUNES: ClassVar[bool] = False  # trains on log-probs at temperature 1 over the whole vocabulary
    epochs: int = Field(1, ge=1, le=1000, description="Passes over each rollout batch (updates reuse it).")
    minibatches: int = Field(
        1,
        ge=1,
        le=4096,
        description="Optimizer steps per pass: each rank's rollout is cut into this many parts.",
    )
    kl: KL = Field(default_factory=KL, description="KL to the reference model.")
    entropy: float = Field(0.0, ge=0, le=100, description="Entropy bonus coefficient (0 = none).")
    aggregate: Literal["token_mean", "sequence_mean", "constant"] = Field(
        "token_mean",
        description="How per-token losses become one: token_mean (every generated token weighs the same, so long "
        "completions are not under-weighted; the default, as DAPO), sequence_mean (mean per completion, then "
        "over completions: the original GRPO) or constant (sum over tokens / (completions * max_new_tokens): "
        "Dr. GRPO).",
    )

    @property
    def updates(self) -> int:
        """Optimizer steps per rollout batch."""
        return self.epochs * self.minibatches

    def check(self, stage: Any, world: int, p: Problems) -> None:
        """Rules against the stage (rollout sizes, the reference) at world size `world`."""
        if self.kl.coef > 0 and stage.reference is None:
            p.add("algorithm.kl.coef", f"{self.kl.coef} needs a reference model; set reference or kl.coef: 0")
        _minibatches(self.minibatches, stage, world, p)


def _clip(value: tuple[float, float], at: str) -> tuple[float, float]:
    lo, hi = value
    if not 0 <= lo < 1 < hi:
        raise spec_error(
            at,
            f"[{lo}, {hi}] must contain 1 strictly inside and start at >= 0 (the ratio is 1 before any update); "
            "e.g. [0.8, 1.2], or [0.8, 1.28] for DAPO's clip-higher",
        )
    return value


def _minibatches(minibatches: int, stage: Any, world: int, p: Problems) -> None:
    """Each rank's rollout holds at least one sequence per minibatch."""
    per_rank_prompts = stage.batch.global_ // world
    sequences = per_rank_prompts * stage.rollout.samples
    if sequences and minibatches > sequences:
        p.add(
            "algorithm.minibatches",
            f"{minibatches} minibatches but each rank holds {sequences} sequences per rollout; use at most "
            f"{sequences}",
        )


class GRPO(PolicyGradient):
    """Group Relative Policy Optimisation: G samples per prompt, advantages normalised within the group."""

    kind: Literal["grpo"] = Field(
        "grpo", description="GRPO (DeepSeekMath), with DAPO's and Dr. GRPO's options."
    )
    scale: Literal["std", "none"] = Field(
        "std",
        description="Advantage = (r - group mean) / group std (std, GRPO) or r - group mean (none, Dr. GRPO).",
    )
    clip: tuple[float, float] = Field(
        (0.8, 1.2),
        description="Range [low, high] of the importance ratio (PPO clip eps 0.2 = [0.8, 1.2]; DAPO clip-higher "
        "[0.8, 1.28]).",
    )
    drop_uniform_groups: bool = Field(
        False,
        description="Leave out of the loss the groups whose rewards are all equal (DAPO's dynamic sampling; "
        "the batch is not refilled).",
    )

    @model_validator(mode="after")
    def _ranges(self) -> GRPO:
        _clip(self.clip, "clip")
        return self

    def check(self, stage: Any, world: int, p: Problems) -> None:
        """G >= 2: one sample has no group to be compared with."""
        super().check(stage, world, p)
        if stage.rollout.samples < 2:
            p.add(
                "rollout.samples",
                f"GRPO compares each sample with its group, which needs >= 2 samples per prompt, not "
                f"{stage.rollout.samples}",
            )


class PPO(PolicyGradient):
    """PPO with a critic initialised from the policy (its trunk plus a value head), GAE and a clipped value loss."""

    CRITIC: ClassVar[bool] = True

    kind: Literal["ppo"] = Field("ppo", description="PPO with a learned critic and GAE.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount of GAE.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE's lambda.")
    clip: tuple[float, float] = Field((0.8, 1.2), description="Range [low, high] of the importance ratio.")
    value_clip: float = Field(
        0.2,
        gt=0,
        description="The new value stays within this of the rollout's value in the clipped value loss.",
    )
    value_coef: float = Field(0.5, gt=0, description="Weight of the value loss.")
    critic_lr: float | None = Field(None, gt=0, description="Learning rate of the critic; default optim.lr.")

    @model_validator(mode="after")
    def _ranges(self) -> PPO:
        _clip(self.clip, "clip")
        return self


class Reinforce(PolicyGradient):
    """REINFORCE with a baseline (one on-policy update per rollout batch)."""

    kind: Literal["reinforce"] = Field(
        "reinforce", description="REINFORCE with a baseline (RLOO by default)."
    )
    baseline: Literal["rloo", "mean", "none"] = Field(
        "rloo",
        description="rloo: the mean reward of the prompt's other samples (leave-one-out); mean: of all its "
        "samples; none: no baseline.",
    )

    @model_validator(mode="after")
    def _on_policy(self) -> Reinforce:
        if self.epochs != 1:
            raise spec_error(
                "epochs",
                f"REINFORCE is on-policy: one pass per rollout, not {self.epochs}; use grpo or ppo to reuse it",
            )
        return self

    def check(self, stage: Any, world: int, p: Problems) -> None:
        """A group baseline needs >= 2 samples per prompt."""
        super().check(stage, world, p)
        if self.baseline != "none" and stage.rollout.samples < 2:
            p.add(
                "rollout.samples",
                f"the {self.baseline} baseline needs >= 2 samples per prompt, not {stage.rollout.samples}",
            )


class ExpertIteration(Strict):
    """Expert Iteration: sample, keep the verified and distinct completions, fine-tune on them; every RL step is a
    round."""

    CRITIC: ClassVar[bool] = False
    FINE_TUNES: ClassVar[bool] = True

    kind: Literal["expert_iteration"] = Field(
        "expert_iteration", description="Expert iteration (rejection-sampling fine-tuning)."
    )
    epochs: int = Field(
        2, ge=1, le=1000, description="Fine-tuning passes over each round's kept completions."
    )
    minibatches: int = Field(
        1,
        ge=1,
        le=4096,
        description="Optimizer steps per pass: each rank's kept completions are cut in this many.",
    )
    dedupe: bool = Field(True, description="Keep one copy of completions repeated within a prompt's samples.")

    @property
    def updates(self) -> int:
        """Optimizer steps per round."""
        return self.epochs * self.minibatches

    def check(self, stage: Any, world: int, p: Problems) -> None:
        """Each rank holds at least one sequence per minibatch."""
        _minibatches(self.minibatches, stage, world, p)


Algorithm = kinded(
    GRPO,
    PPO,
    Reinforce,
    ExpertIteration,
    default="grpo",
    description="The RL algorithm: grpo | ppo | reinforce | expert_iteration (default grpo).",
)
