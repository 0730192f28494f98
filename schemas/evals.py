"""Evaluator configs, one class per `kind`; each runs every `every` steps and at the end of its stage."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from .base import Examples, Problems, Steps, Strict, Tokens, kinded, spec_error
from .data import Data, TokenData
from .models import ProbeBase, ViT

EVERY = "Run every this many steps (and always after the last step)."


class Evaluator(Strict):
    """What every evaluator has: its `kind` and how often it runs; `check` says whether it can evaluate its stage.

    Each subclass also declares `examples` (a fixed set, split over ranks) and `batch` (examples per forward
    pass on each rank), after its own fields: their defaults and meanings differ, and inherited fields would
    come first, changing the order of the JSON schema, of dumped specs and of problems reported together.
    """

    kind: str
    every: Steps = Field(500, gt=0, description=EVERY)

    def check(self, stage: Any, at: str, p: Problems) -> None:
        """Record at `at` (this evaluator's dotted path in the stage) what in `stage` it cannot evaluate."""
        raise NotImplementedError

    def check_tokens(self, data: TokenData, at: str, p: Problems) -> None:
        """Record at `at` what this evaluator asks of the token data of a transformer's stage that `data`
        cannot give (e.g. a split). Default: nothing."""

    def inference_tokens(self, data: Any) -> float:
        """Tokens one evaluation runs through one model (prefilled or generated), expected from the data's
        length model: what `plan` prices at 2·N_active per token. Default: none (not a token model)."""
        return 0.0


class AnswerEvaluator(Evaluator):
    """Evaluators of the answers of a token model: a train stage of a transformer on token data."""

    def check(self, stage: Any, at: str, p: Problems) -> None:
        """The stage trains a model on tokens, not a probe and not on video."""
        if isinstance(stage.final_model, ProbeBase):
            p.add(f"{at}.kind", f"a probe stage is evaluated by top1, not {self.kind}")
        elif not isinstance(stage.data, TokenData):
            p.add(f"{at}.kind", f"{self.kind} evaluates token answers, not video")


def mean_tokens(data: TokenData, split: str) -> float:
    """Expected tokens of one example of `split` (the data's longest where its length model has no such split)."""
    try:
        return data.length_stats(split)[0]
    except (ValueError, KeyError, AttributeError, NotImplementedError):
        return float(data.max_seq_len())


def _known_splits(splits: list[str], data: TokenData, at: str, p: Problems) -> None:
    """Every split evaluated is one of the data's."""
    unknown = [s for s in splits if s not in data.SPLITS]
    if unknown:
        p.add(f"{at}.splits", f"{data.kind} has no split {unknown}; its splits are {list(data.SPLITS)}")


class AccuracyByLength(AnswerEvaluator):
    """Exact-match accuracy of the answer (greedy), per input length, on fixed held-out examples."""

    kind: Literal["accuracy_by_length"] = Field(
        "accuracy_by_length", description="Exact-match accuracy per length."
    )
    lengths: list[int] | None = Field(
        None,
        description="Input lengths to evaluate; default: both ends of the train range and 4 lengths spread over the eval range.",
    )
    examples: Examples = Field(
        256, gt=0, description="Examples per length (split over ranks; a fixed set for the whole run)."
    )
    batch: Examples = Field(128, gt=0, description="Examples per forward pass on each rank.")

    def inference_tokens(self, data: Any) -> float:
        """Every example of every length, teacher-forced (the default lengths: six)."""
        return self.examples * len(self.lengths or range(6)) * mean_tokens(data, "eval")

    def check_tokens(self, data: TokenData, at: str, p: Problems) -> None:
        """The data has an input-length axis, and every length evaluated lies within what it can make."""
        bounds = data.length_bounds()
        if bounds is None:
            p.add(f"{at}.kind", f"{data.kind} has no input-length axis; evaluate it with exact_match")
            return
        lo, hi = bounds
        bad = [n for n in self.lengths or [] if not lo <= n <= hi]
        if bad:
            p.add(
                f"{at}.lengths", f"lengths {bad} lie outside [{lo}, {hi}], the lengths {data.kind} can make"
            )


# Held-out synthetic clips a top-1 needs: at 1024 clips the standard error of an accuracy is at most 1.6 points.
MIN_SYNTHETIC_EXAMPLES = 1024


class Top1(Evaluator):
    """Top-1 accuracy of a classifier (a probe stage's) on a fixed set of held-out examples, beside the top-1 of
    always answering the set's most frequent class (`majority`) and chance (1 / classes).

    The evaluation protocol (how many temporal segments and spatial views of a held-out video the probe sees,
    and how they are combined) is fixed here, on the evaluator, not on the data: it is how a probe is scored,
    not what its training clips are, and two evaluators of one stage could score it two ways. The data supplies
    the mechanism (`video_files` decodes a video's windows and crops); the protocol is V-JEPA 2's: each view's
    segments are encoded separately, their tokens concatenated for the probe, and the softmax averaged over the
    views (docs/papers/salt.md#probe-protocol).
    """

    kind: Literal["top1"] = Field("top1", description="Top-1 classification accuracy on the eval split.")
    every: Steps = Field(1000, gt=0, description=EVERY)
    segments: int = Field(
        1,
        ge=1,
        le=64,
        description="video_files: temporal windows per held-out video, spread evenly from its start to its end "
        "(1: the centred window); the probe reads their tokens concatenated.",
    )
    views: int = Field(
        1,
        ge=1,
        le=16,
        description="video_files: spatial crops per held-out video (1: the centred eval_crop; 3: left, centre and "
        "right crops, top, centre and bottom for portrait videos); the softmax is averaged over them.",
    )
    examples: Examples | None = Field(
        2048,
        gt=0,
        description="Held-out examples of the eval split (a fixed set for the whole run, split over ranks); "
        f"at least {MIN_SYNTHETIC_EXAMPLES} on synthetic video. null (video_files only): every video of the "
        "eval manifest once.",
    )
    batch: Examples = Field(
        32,
        gt=0,
        description="Clips per forward pass on each rank (with segments x views > 1, whole videos: "
        "batch // (segments x views) of them, at least one).",
    )

    @property
    def clips_per_example(self) -> int:
        """Clips the encoder sees of one held-out example: segments x views."""
        return self.segments * self.views

    def check(self, stage: Any, at: str, p: Problems) -> None:
        """The stage trains a probe; segments, views and the whole eval manifest need video files; on synthetic
        video (unlimited clips) the held-out set is large enough for its top-1 to tell encoders apart."""
        if not isinstance(stage.final_model, ProbeBase):
            p.add(f"{at}.kind", "top1 evaluates a probe; use it in a stage of kind probe")
            return
        if stage.data.kind == "video_files":
            return
        for name in ("segments", "views"):
            if getattr(self, name) > 1:
                p.add(
                    f"{at}.{name}",
                    f"{name}: {getattr(self, name)} applies to video_files (windows and crops of a held-out "
                    f"video); {stage.data.kind} clips are one window of one view: remove {name} or set it to 1",
                )
        if self.examples is None:
            p.add(
                f"{at}.examples",
                f"examples: null means every video of the eval manifest, which {stage.data.kind} does not "
                f"have; give a number of clips, at least {MIN_SYNTHETIC_EXAMPLES} (the default is 2048)",
            )
        elif stage.data.kind == "synthetic_video" and self.examples < MIN_SYNTHETIC_EXAMPLES:
            p.add(
                f"{at}.examples",
                f"{self.examples} held-out clips give a top-1 with a standard error up to "
                f"{50 / self.examples**0.5:.1f} points; synthetic clips are free, so evaluate at least "
                f"{MIN_SYNTHETIC_EXAMPLES} (the default is 2048)",
            )


class Representation(Evaluator):
    """Collapse diagnostics of a masked-video train stage's encoder on a fixed set of held-out clips with fixed
    masks: the effective rank of its output tokens and of its mean-pooled clip features, and its loss relative
    to predicting the batch's mean target."""

    kind: Literal["representation"] = Field(
        "representation",
        description="Effective rank of the encoder's features (rank/tokens, rank/pooled) and loss/relative.",
    )
    warn_below: float | None = Field(
        2.0,
        gt=0,
        description=(
            "Log a warning when rank/pooled falls below this (null: never). Below 2 the clips' pooled "
            "features lie along about one direction: a collapsed encoder. For reference, a randomly "
            "initialised encoder of salt_tiny's shape (96 wide) scores about 37 on 256 clips; values between "
            "are logged for you to judge, without a warning."
        ),
    )
    examples: Examples = Field(
        256,
        gt=0,
        description="Held-out clips (a fixed set with fixed masks for the whole run, split over ranks).",
    )
    batch: Examples = Field(
        32, gt=0, description="Clips per forward pass, which share one draw of masks (a mask group)."
    )

    def check(self, stage: Any, at: str, p: Problems) -> None:
        """The stage trains a video encoder with a masked-video objective (the only objectives of a vit)."""
        model = stage.final_model
        if isinstance(model, ProbeBase):
            p.add(
                f"{at}.kind",
                "representation measures the encoder a masked-video stage trains; a probe stage is evaluated "
                "by top1 (put representation in the encoder's own stage)",
            )
        elif not isinstance(model, ViT) or getattr(stage, "objective", None) is None:
            p.add(
                f"{at}.kind",
                "representation measures a video encoder trained on masked clips (a train stage of a vit "
                "with pixel_reconstruction, latent_prediction or ema_latent_prediction); this stage trains "
                f"{getattr(model, 'kind', 'no such encoder')}",
            )


class ExactMatch(AnswerEvaluator):
    """Exact-match accuracy of the answer (teacher-forced, equal to greedy) on fixed examples of some splits."""

    kind: Literal["exact_match"] = Field("exact_match", description="Exact-match accuracy per data split.")
    splits: list[str] = Field(
        default_factory=lambda: ["eval"],
        min_length=1,
        description="Data splits to evaluate, each logged as acc/<split> (e.g. eval, test, held_out).",
    )
    examples: Examples = Field(
        256, gt=0, description="Examples per split (split over ranks; a fixed set for the whole run)."
    )
    batch: Examples = Field(128, gt=0, description="Examples per forward pass on each rank.")

    def inference_tokens(self, data: Any) -> float:
        """Every example of every split, teacher-forced."""
        return self.examples * sum(mean_tokens(data, s) for s in self.splits)

    def check_tokens(self, data: TokenData, at: str, p: Problems) -> None:
        """Every split evaluated is one of the data's."""
        _known_splits(self.splits, data, at, p)


class Loss(AnswerEvaluator):
    """Held-out cross-entropy of a next-token model on a fixed set of a test data's split (`test_loss/<name>`):
    the loss-to-loss view of a model, its loss on its own data or on other data of its vocabulary."""

    kind: Literal["loss"] = Field(
        "loss", description="Mean cross-entropy per answer token on a test set, logged as test_loss/<name>."
    )
    data: Data | None = Field(
        None,
        description="The test data: a token generator of any kind with the model's vocabulary; "
        "default: the stage's own data.",
    )
    split: str = Field("eval", description="The test data's split whose examples are scored.")
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The metric's suffix (test_loss/<name>); default: the data's kind when `data` is given, "
        "else the split. Distinct per stage.",
    )
    examples: Examples = Field(
        512, gt=0, description="Examples scored (split over ranks; a fixed set for the whole run)."
    )
    batch: Examples = Field(64, gt=0, description="Examples per forward pass on each rank.")

    @property
    def metric_name(self) -> str:
        """The suffix of the logged metric: `name`, else the test data's kind, else the split."""
        if self.name is not None:
            return self.name
        return self.data.kind if self.data is not None else self.split

    def test_data(self, own: Any) -> Any:
        """The data scored: this evaluator's `data`, else the stage's own (`own`)."""
        return self.data if self.data is not None else own

    def inference_tokens(self, data: Any) -> float:
        """Every example of the set, teacher-forced once."""
        test = self.test_data(data)
        return self.examples * mean_tokens(test, self.split) if isinstance(test, TokenData) else 0.0

    def check(self, stage: Any, at: str, p: Problems) -> None:
        """A token model's stage; the test data makes tokens of the model's vocabulary size, in sequences its
        position table holds, and has the split; no other loss evaluator of the stage has the same name."""
        before = len(p.items)
        super().check(stage, at, p)
        if len(p.items) > before:
            return
        own, test, model = stage.data, self.test_data(stage.data), stage.final_model
        if not isinstance(test, TokenData):
            p.add(
                f"{at}.data.kind", f"loss scores a token model on token data; {test.kind!r} makes video clips"
            )
            return
        if self.split not in test.SPLITS:
            p.add(
                f"{at}.split", f"{test.kind} has no split {self.split!r}; its splits are {list(test.SPLITS)}"
            )
        if test.vocab_size != own.vocab_size:
            p.add(
                f"{at}.data",
                f"{test.kind} makes {test.vocab_size} token ids but the model reads the vocabulary of "
                f"{own.kind} ({own.vocab_size} ids): a loss over another vocabulary compares nothing; give "
                f"test data whose vocabulary is {own.kind}'s (e.g. {own.kind} with other settings)",
            )
        context = getattr(model, "context", None)
        if context is not None and test.max_seq_len() > context:
            p.add(
                f"{at}.data",
                f"{test.kind}'s longest example ({test.max_seq_len()} tokens) exceeds the model's {context} "
                f"positions (position.max_len); shorten the test data or raise max_len",
            )
        position = getattr(model, "position", None)
        if getattr(position, "kind", None) == "coupled":
            largest = getattr(test, "max_position_id", None)
            if largest is None:
                p.add(
                    f"{at}.data.kind",
                    f"the model takes coupled position ids, which {test.kind} emits none of; test it on data "
                    "that emits them (copy, reverse, variable_assignment)",
                )
            elif position.max_position < largest + 1:
                p.add(
                    f"{at}.data.max_position_id",
                    f"{test.kind}'s position ids 0..{largest} exceed the model's {position.max_position}; "
                    f"lower max_position_id below {position.max_position}",
                )
        same = [
            e
            for e in getattr(stage, "evals", ())
            if isinstance(e, Loss) and e.metric_name == self.metric_name
        ]
        if len(same) > 1 and same[0] is not self:
            p.add(
                f"{at}.name",
                f"another loss evaluator of this stage already logs test_loss/{self.metric_name}; give each "
                "loss evaluator a distinct `name`",
            )


def _fits_context(new: int | None, stage: Any, at: str, p: Problems) -> None:
    """`new` generated tokens leave room for a prompt in the model's position table (learned positions)."""
    context = getattr(stage.final_model, "context", None)
    if new is not None and context is not None and new >= context:
        p.add(
            f"{at}.max_new_tokens",
            f"{new} new tokens leave no room for a prompt in the model's {context} positions "
            f"(position.max_len); lower it below {context} or raise max_len",
        )


# How sampling evaluators draw a completion (each declares the fields itself, where its field order wants them).
TOP_P: Any = Field(
    1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest set of tokens of this mass."
)
TOP_K: Any = Field(None, gt=0, description="Sample among the k most likely tokens only; null = all.")
MAX_NEW_TOKENS: Any = Field(
    None,
    gt=0,
    description="Tokens generated per completion at most; default: up to the data's longest example.",
)


class Sampled(AnswerEvaluator):
    """What evaluators that sample completions share: how a completion is drawn."""

    def check(self, stage: Any, at: str, p: Problems) -> None:
        """A token model's stage, and generation fits the model's position table."""
        super().check(stage, at, p)
        _fits_context(self.max_new_tokens, stage, at, p)


class Verified(Sampled):
    """Greedy decoding of the answer to fixed prompts, scored by the generator's own verifier."""

    kind: Literal["verified"] = Field(
        "verified", description="Fraction of greedy answers the data's verifier accepts, per split."
    )
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

    def inference_tokens(self, data: Any) -> float:
        """Every prompt of every split, prefilled, and its answer generated (about an example's length)."""
        return self.examples * sum(mean_tokens(data, s) for s in self.splits)

    def check_tokens(self, data: TokenData, at: str, p: Problems) -> None:
        """Every split evaluated is one of the data's."""
        _known_splits(self.splits, data, at, p)


class Sampling(Sampled):
    """n sampled completions per prompt at each temperature, scored by the data's verifier: pass@k, maj@k,
    best-of-n, mean completion length and the data's own checks, per split and temperature."""

    kind: Literal["sampling"] = Field(
        "sampling",
        description="pass@k, maj@k and best-of-n of sampled completions, per split and temperature.",
    )
    n: Examples = Field(
        64, gt=0, description="Samples per prompt at each temperature above 0 (one at T = 0)."
    )
    k: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [1, 8, 64],
        min_length=1,
        description="The k of pass@k and maj@k (each at most n); logged as pass@<k>/<split>/T<temperature>.",
    )
    temperatures: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [0.0, 0.7, 1.0],
        min_length=1,
        description="Sampling temperatures; 0 is greedy decoding (one completion per prompt).",
    )
    top_p: float = TOP_P
    top_k: int | None = TOP_K
    max_new_tokens: Tokens | None = MAX_NEW_TOKENS
    splits: list[str] = Field(
        default_factory=lambda: ["eval"], min_length=1, description="Data splits whose prompts are sampled."
    )
    examples: Examples = Field(
        128, gt=0, description="Prompts per split (split over ranks; a fixed set for the whole run)."
    )
    batch: Examples = Field(64, gt=0, description="Sequences decoded together on each rank.")

    @model_validator(mode="after")
    def _k_at_most_n(self) -> Sampling:
        big = [k for k in self.k if k > self.n]
        if big:
            raise spec_error("k", f"k={big} exceed n={self.n} samples per prompt; raise n or lower k")
        return self

    def inference_tokens(self, data: Any) -> float:
        """n samples of every prompt at each temperature above 0, one at 0, each about an example long."""
        per_prompt = sum(1 if t == 0 else self.n for t in self.temperatures)
        return self.examples * per_prompt * sum(mean_tokens(data, s) for s in self.splits)

    def check_tokens(self, data: TokenData, at: str, p: Problems) -> None:
        """Every split evaluated is one of the data's."""
        _known_splits(self.splits, data, at, p)


class TestTimeScaling(Sampled):
    """Accuracy against inference compute as the number of samples N grows: maj@N, best-of-N (and any@N for
    tasks with a certificate) with the inference tokens and FLOPs (2·N_active per token) they cost; writes a
    table (JSON, Markdown) and a plot, one curve per evaluated model."""

    kind: Literal["test_time_scaling"] = Field(
        "test_time_scaling", description="Accuracy vs inference FLOPs as the number of samples N grows."
    )
    samples: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32],
        min_length=1,
        description="The numbers of samples N per prompt to score (the largest is drawn; smaller N use blocks of it).",
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (Let Me Think samples at 1).")
    top_p: float = TOP_P
    top_k: int | None = TOP_K
    max_new_tokens: Tokens | None = MAX_NEW_TOKENS
    split: str = Field("eval", description="The data split whose prompts are sampled.")
    examples: Examples = Field(
        128, gt=0, description="Prompts (split over ranks; a fixed set for the whole run)."
    )
    batch: Examples = Field(64, gt=0, description="Sequences decoded together on each rank.")

    def inference_tokens(self, data: Any) -> float:
        """The largest N samples of every prompt, each about an example long."""
        return self.examples * max(self.samples) * mean_tokens(data, self.split)

    def check_tokens(self, data: TokenData, at: str, p: Problems) -> None:
        """The split is one of the data's."""
        if self.split not in data.SPLITS:
            p.add(
                f"{at}.split", f"{data.kind} has no split {self.split!r}; its splits are {list(data.SPLITS)}"
            )


Eval = kinded(
    AccuracyByLength,
    ExactMatch,
    Top1,
    Representation,
    Verified,
    Sampling,
    TestTimeScaling,
    Loss,
    default=None,
    description="An evaluator, by `kind`.",
)
