"""Evaluator configs, one class per `kind`; each runs every `every` steps and at the end of its stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Examples, Steps, Strict, Tokens, kinded


class AccuracyByLength(Strict):
    """Exact-match accuracy of the answer (greedy), per input length, on fixed held-out examples."""

    kind: Literal["accuracy_by_length"] = Field(
        "accuracy_by_length", description="Exact-match accuracy per length."
    )
    every: Steps = Field(500, gt=0, description="Run every this many steps (and always after the last step).")
    lengths: list[int] | None = Field(
        None,
        description="Input lengths to evaluate; default: both ends of the train range and 4 lengths spread over the eval range.",
    )
    examples: Examples = Field(
        256, gt=0, description="Examples per length (split over ranks; a fixed set for the whole run)."
    )
    batch: Examples = Field(128, gt=0, description="Examples per forward pass on each rank.")


class Top1(Strict):
    """Top-1 accuracy of a classifier (a probe stage's) on a fixed set of held-out examples."""

    kind: Literal["top1"] = Field("top1", description="Top-1 classification accuracy on the eval split.")
    every: Steps = Field(
        1000, gt=0, description="Run every this many steps (and always after the last step)."
    )
    examples: Examples = Field(
        512, gt=0, description="Held-out examples (a fixed set for the whole run, split over ranks)."
    )
    batch: Examples = Field(32, gt=0, description="Examples per forward pass on each rank.")


class ExactMatch(Strict):
    """Exact-match accuracy of the answer (teacher-forced, equal to greedy) on fixed examples of some splits."""

    kind: Literal["exact_match"] = Field("exact_match", description="Exact-match accuracy per data split.")
    every: Steps = Field(500, gt=0, description="Run every this many steps (and always after the last step).")
    splits: list[str] = Field(
        default_factory=lambda: ["eval"],
        min_length=1,
        description="Data splits to evaluate, each logged as acc/<split> (e.g. eval, test, held_out).",
    )
    examples: Examples = Field(
        256, gt=0, description="Examples per split (split over ranks; a fixed set for the whole run)."
    )
    batch: Examples = Field(128, gt=0, description="Examples per forward pass on each rank.")


class Verified(Strict):
    """Greedy decoding of the answer to fixed prompts, scored by the generator's own verifier."""

    kind: Literal["verified"] = Field(
        "verified", description="Fraction of greedy answers the data's verifier accepts, per split."
    )
    every: Steps = Field(500, gt=0, description="Run every this many steps (and always after the last step).")
    splits: list[str] = Field(
        default_factory=lambda: ["eval"],
        min_length=1,
        description="Data splits to evaluate, each logged as verified/<split> (and check/<key>/<split>).",
    )
    examples: Examples = Field(
        128, gt=0, description="Prompts per split (split over ranks; a fixed set for the whole run)."
    )
    batch: Examples = Field(64, gt=0, description="Prompts decoded together on each rank.")
    max_new_tokens: Tokens | None = Field(
        None,
        gt=0,
        description="Tokens generated per prompt at most; default: up to the data's longest example.",
    )


Eval = kinded(
    AccuracyByLength, ExactMatch, Top1, Verified, default=None, description="An evaluator, by `kind`."
)
