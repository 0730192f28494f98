"""The top of the spec: run, resources and the ordered stages, with the rules that span them."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from .base import Examples, Nodes, Problems, ProcsPerNode, Strict, kinded, spec_error
from .data import Data, TokenData
from .evals import Eval, Top1
from .models import (
    MLP,
    AttentiveProbe,
    Model,
    Predictor,
    Probe,
    ProbeBase,
    StepFlops,
    Transformer,
    ViT,
)
from .objectives import NextToken, Objective
from .rl import Algorithm, Reward, Rollout
from .training import (
    AdamW,
    Batch,
    Checkpointing,
    CheckpointRef,
    Distributed,
    EncoderRef,
    Logging,
    Optim,
    RandomInit,
    Schedule,
    StageRef,
    WeightsRef,
)


class Run(Strict):
    """Identity of the run: its name, where it writes, and the seed everything derives from."""

    name: str = Field(description="Run name (used in logs and the sbatch job name).")
    output: str = Field(description="Run directory: a local path or any fsspec URL (memory://, s3://, ...).")
    seed: int = Field(0, ge=0, description="Seed of model init and of the counter-based data streams.")


class Slurm(Strict):
    """Fields of the generated sbatch script."""

    partition: str | None = Field(None, description="Slurm partition (#SBATCH --partition).")
    account: str | None = Field(None, description="Slurm account (#SBATCH --account).")
    time: str = Field("24:00:00", description="Wall-clock limit (#SBATCH --time).")
    cpus_per_task: int = Field(16, gt=0, description="CPU cores per node's task.")


# Memory of one device of known accelerators: the nominal capacity, read as GiB (a program can allocate a
# little less).
# `resources.device_memory` takes one of these names or a number of GiB.
ACCELERATOR_MEMORY_GIB: dict[str, float] = {
    "t4": 16,
    "v100-16gb": 16,
    "v100-32gb": 32,
    "a10g": 24,
    "l4": 24,
    "rtx-4090": 24,
    "l40s": 48,
    "a100-40gb": 40,
    "a100-80gb": 80,
    "h100-80gb": 80,
    "h100-94gb": 94,
    "h200": 141,
    "mi300x": 192,
}
Accelerator = Literal[tuple(ACCELERATOR_MEMORY_GIB)]  # type: ignore[valid-type]


class Resources(Strict):
    """Where the job runs: the world size is nodes * procs_per_node."""

    nodes: Nodes = Field(1, gt=0, description="Number of nodes.")
    procs_per_node: ProcsPerNode = Field(
        1, gt=0, description="Processes (ranks) per node, one per GPU on CUDA."
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="cpu (gloo) or cuda (nccl).")
    device_memory: Annotated[float, Field(gt=0, le=65536)] | Accelerator | None = Field(
        None,
        description="Memory one rank may use: GiB, or a known accelerator (h100-80gb, a100-40gb, ...); "
        "`engine plan` warns when a stage's estimate per rank exceeds it.",
    )
    slurm: Slurm = Field(default_factory=Slurm, description="sbatch settings for `engine plan`.")

    @field_validator("device_memory", mode="before")
    @classmethod
    def _known_device(cls, value: object) -> object:
        if isinstance(value, str) and value not in ACCELERATOR_MEMORY_GIB:
            names = list(ACCELERATOR_MEMORY_GIB)
            close = [n for n in names if n.startswith(value.lower())] or difflib.get_close_matches(
                value.lower(), names, n=2
            )
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise spec_error(
                "", f"unknown accelerator {value!r}; {hint}known: {', '.join(names)}; or give GiB as a number"
            )
        if isinstance(value, int | float) and not isinstance(value, bool) and not 0 < value <= 65536:
            raise spec_error("", f"{value} GiB per rank cannot be meant; give a number in (0, 65536]")
        return value

    @property
    def world(self) -> int:
        """Total number of ranks."""
        return self.nodes * self.procs_per_node

    @property
    def device_memory_bytes(self) -> int | None:
        """Bytes one rank may use, from `device_memory` (a number of GiB or an accelerator's name)."""
        gib = self.device_memory
        if isinstance(gib, str):
            gib = ACCELERATOR_MEMORY_GIB[gib]
        return None if gib is None else int(gib * 2**30)


class StageRules(Strict):
    """What every stage kind answers: which model it trains (`final_model`, recorded in final/done.json),
    and whether its evaluators can evaluate it (each checks itself).

    The fields that every stage kind has (optim, schedule, batch, distributed, checkpoint, logging, evals)
    are declared by each kind after its own: pydantic orders inherited fields first, and the order of fields
    is the order of the JSON schema, of a dumped spec and of the problems reported at one position.
    """

    # Fields that do not change what the stage computes (engine/runtime/rundir.py leaves them out of its
    # fingerprint, so they may change when a run resumes): metrics, evaluations, checkpoints, sharding.
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"logging", "evals", "checkpoint", "distributed"})

    def clip_key(self, name: str) -> str:
        """The name that keys the stage's data draws (training stream, fixed sets, evaluation sets): by default
        the stage's own `name`, so two stages never draw the same examples unless they ask to."""
        return name

    @property
    def final_model(self) -> Strict:
        """The config of the model this stage trains: what final/ holds and done.json records."""
        raise NotImplementedError

    def _check_evals(self, p: Problems) -> None:
        """Each evaluator checks that it can evaluate this stage."""
        for i, ev in enumerate(self.evals):
            ev.check(self, f"evals.{i}", p)


class TrainStage(StageRules):
    """A training stage: a model trained on a data generator with an objective, evaluated periodically."""

    kind: Literal["train"] = Field("train", description="Stage kind.")
    model: Model = Field(description="The model trained in this stage (the encoder / student for video).")
    init: WeightsRef | None = Field(None, description="Start from these weights instead of a fresh init.")
    predictor: Predictor | None = Field(
        None, description="The predictor of masked-video objectives (context tokens -> target tokens)."
    )
    data: Data = Field(description="The data generator.")
    objective: Objective = Field(default_factory=NextToken, description="The training objective.")
    optim: Optim = Field(default_factory=AdamW, description="The optimizer.")
    schedule: Schedule = Field(description="Steps and learning-rate schedule.")
    batch: Batch = Field(description="Global and micro batch sizes.")
    distributed: Distributed = Field(default_factory=Distributed, description="Sharding, precision, compile.")
    checkpoint: Checkpointing = Field(
        default_factory=Checkpointing, description="Checkpoint period and retention."
    )
    logging: Logging = Field(default_factory=Logging, description="Metric logging.")
    evals: list[Eval] = Field(
        default_factory=list,
        description="Evaluations run periodically and at the end; when not given, the objective's defaults "
        "(masked video: representation); [] for none.",
    )

    @property
    def final_model(self) -> Model:
        """The stage's model."""
        return self.model

    @model_validator(mode="after")
    def _default_evals(self) -> TrainStage:
        """A stage whose spec gives no `evals` gets its objective's default evaluators."""
        if "evals" not in self.model_fields_set:
            self.evals = self.objective.default_evals()
        return self

    @property
    def vocab_size(self) -> int | None:
        """The vocabulary the stage's model is built with: the model's `vocab_size` if set, else the data's;
        None when the data makes no tokens."""
        if not isinstance(self.data, TokenData):
            return None
        return self.model.vocab_size or self.data.vocab_size

    @model_validator(mode="after")
    def _model_fits_data(self) -> TrainStage:
        p = Problems()
        m, d = self.model, self.data
        if isinstance(m, MLP):
            m.check(self, p)
            if isinstance(d, TokenData):
                for i, ev in enumerate(self.evals):
                    ev.check_tokens(d, f"evals.{i}", p)
        elif isinstance(m, Transformer):
            if not isinstance(d, TokenData):
                p.add(
                    "data.kind",
                    f"a transformer reads tokens but {d.kind!r} makes video clips; use model kind vit",
                )
            else:
                _token_rules(m, d, p)
                for i, ev in enumerate(self.evals):
                    ev.check_tokens(d, f"evals.{i}", p)
        elif isinstance(d, TokenData):
            p.add(
                "data.kind",
                f"a vit reads video clips but {d.kind!r} makes tokens; use synthetic_video or video_files",
            )
        elif tuple(d.clip_shape) != (m.channels, m.frames, m.resolution, m.resolution):
            p.add(
                "data",
                f"clips are {'x'.join(map(str, d.clip_shape))} (CxTxHxW) but the model reads "
                f"{m.channels}x{m.frames}x{m.resolution}x{m.resolution}; make data frames/resolution match the model",
            )
        self.objective.check(self, p)
        self._check_evals(p)
        p.check()
        return self


def _token_rules(m: Transformer, d: TokenData, p: Problems) -> None:
    """Rules between a transformer and token data: vocabulary, context length, position ids."""
    if m.vocab_size is not None and m.vocab_size < d.vocab_size:
        p.add(
            "model.vocab_size",
            f"{m.vocab_size} is smaller than the data's vocabulary ({d.vocab_size}); raise it or leave it unset",
        )
    need = d.max_seq_len()
    if m.context is not None and m.context < need:
        p.add(
            "model.position.max_len",
            f"{m.context} positions cannot hold the data's longest example ({need} tokens); set max_len >= {need}",
        )
    if m.position.kind == "coupled":
        largest = getattr(
            d, "max_position_id", None
        )  # data kinds that emit coupled ids declare their largest
        if largest is None:
            p.add(
                "model.position.kind",
                f"coupled positions come from the data, and {d.kind} emits none; use copy, reverse or "
                "variable_assignment, or another position kind",
            )
        elif m.position.max_position < largest + 1:
            p.add(
                "model.position.max_position",
                f"{m.position.max_position} cannot hold the data's position ids 0..{largest}; "
                f"set max_position >= {largest + 1}",
            )


def _probe_optim(fields: dict) -> AdamW:
    """A probe stage's default optimizer: its probe's `OPTIM` (the probe is validated before `optim`)."""
    return AdamW(**getattr(fields.get("probe"), "OPTIM", ProbeBase.OPTIM))


class ProbeStage(StageRules):
    """A frozen encoder with a probe on top (attentive, linear or k-nearest-neighbour): what a representation
    is worth. With `labelled` or `per_class` the probe learns from a fixed labelled set drawn once, walked in
    epochs; without, every step draws fresh labelled clips."""

    kind: Literal["probe"] = Field("probe", description="Stage kind: a probe on a frozen encoder.")
    encoder: EncoderRef
    probe: Probe = Field(default_factory=AttentiveProbe, description="The probe.")
    labelled: Examples | None = Field(
        None,
        gt=1,
        description="A fixed labelled set of this many train-split clips, drawn once from (run.seed, clip_set); "
        "training walks it in epochs. Default: fresh clips every step (unlimited labels).",
    )
    per_class: Examples | None = Field(
        None,
        gt=0,
        description="A fixed labelled set of this many clips of every class (the first drawn of each); "
        "exclusive with `labelled`.",
    )
    clip_set: str | None = Field(
        None,
        description="Name that keys the clips this stage draws (the labelled set, the training stream and the "
        "held-out set of its evaluators): probe stages with the same clip_set and data learn from and are scored "
        "on the same clips, whatever their label task, so encoders are compared on equal examples. Default: "
        "the stage's name (its own clips).",
    )
    data: Data = Field(description="Labelled video clips (the probe's classes are the data's).")
    optim: Optim = Field(
        default_factory=_probe_optim,
        description="The probe's optimizer; default AdamW at lr 1e-3 with weight decay 0.01, or for a linear "
        "probe without weight decay and gradient clipping (its heads carry their own L2 terms).",
    )
    schedule: Schedule | None = Field(
        None,
        description="Steps and learning-rate schedule of the probe (required by probes that train; "
        "a knn_probe has none).",
    )
    batch: Batch = Field(
        description="Global and micro batch sizes (a fixed labelled set is also encoded in micro batches)."
    )
    distributed: Distributed = Field(default_factory=Distributed, description="Sharding, precision, compile.")
    checkpoint: Checkpointing = Field(
        default_factory=Checkpointing, description="Checkpoint period and retention."
    )
    logging: Logging = Field(default_factory=Logging, description="Metric logging.")
    evals: list[Eval] = Field(
        default_factory=lambda: [Top1()],
        description="Evaluations; top1 writes {output}/{stage}/results.json.",
    )

    @property
    def final_model(self) -> ProbeBase:
        """The probe (the encoder stays frozen and is not written)."""
        return self.probe

    @property
    def steps(self) -> int:
        """Optimizer steps: the schedule's, 0 without one (a knn probe)."""
        return self.schedule.steps if self.schedule is not None else 0

    def clip_key(self, name: str) -> str:
        """`clip_set`, else the stage's name."""
        return self.clip_set or name

    @property
    def labelled_size(self) -> int | None:
        """Clips in the fixed labelled set (`labelled`, or `per_class` times the data's classes); None without."""
        if self.per_class is not None and not isinstance(self.data, TokenData):
            return self.per_class * self.data.num_classes
        return self.labelled

    @property
    def training_clips(self) -> int | None:
        """Clips of the labelled set the probe trains on (a linear probe holds its validation split out)."""
        n = self.labelled_size
        return None if n is None else n - self.probe.validation(n)

    @model_validator(mode="after")
    def _labelled_video(self) -> ProbeStage:
        p = Problems()
        kind = self.probe.kind
        if isinstance(self.data, TokenData):
            p.add("data.kind", f"a probe reads labelled video clips; {self.data.kind!r} makes tokens")
        elif self.probe.classes is not None and self.probe.classes != self.data.num_classes:
            p.add(
                "probe.classes",
                f"{self.probe.classes} classes but the data has {self.data.num_classes}; remove it or make them equal",
            )
        if self.labelled is not None and self.per_class is not None:
            p.add(
                "per_class",
                f"labelled={self.labelled} and per_class={self.per_class} both size the labelled set; keep one",
            )
        elif self.probe.needs_labelled and self.labelled_size is None:
            p.add(
                "probe.kind",
                f"a {kind} learns from a fixed labelled set; set labelled: N (clips) or per_class: k",
            )
        if self.probe.trains and self.schedule is None:
            p.add("schedule", f"a {kind} trains; give schedule: {{steps: N}}")
        elif not self.probe.trains and self.schedule is not None:
            p.add("schedule", f"a {kind} trains nothing; remove schedule")
        self.probe.check(self, p)
        self._check_evals(p)
        p.check()
        return self


def _weights_load(p: Problems, field: str, stage: TrainStage, ref: str, source: StageRules) -> None:
    """`init: {stage: ref}` loads ref's final weights: their names and shapes must be this model's."""
    if isinstance(source, ProbeStage):
        p.add(field, f"stage {ref!r} trains a probe, not a model this stage can start from")
        return
    if source.final_model is None:
        p.add(field, f"stage {ref!r} (kind {source.kind}) trains no model this stage can start from")
        return
    mine = stage.model.weight_shapes(stage.vocab_size)
    theirs = source.final_model.weight_shapes(source.vocab_size)
    diff = [k for k in mine if mine[k] != theirs.get(k)]
    if diff:
        shown = ", ".join(f"{k} {theirs.get(k)} vs {mine[k]}" for k in diff)
        p.add(
            field,
            f"the weights of stage {ref!r} cannot load into this model ({shown}; theirs vs this stage's); "
            f"make these fields equal or remove init",
        )


class EvaluateStage(StageRules):
    """Evaluators run once on finished token models, without training: one model, or several side by side
    (each evaluator's results hold one entry per model)."""

    # Everything but how the evaluation is logged and sharded determines what it writes.
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"logging", "distributed"})

    kind: Literal["evaluate"] = Field(
        "evaluate", description="Stage kind: evaluate finished models, no training."
    )
    models: dict[str, WeightsRef] = Field(
        min_length=1,
        description="The models evaluated, by label: {stage: NAME} (an earlier stage's final weights) or "
        "{checkpoint: URL} (a final/ directory).",
    )
    data: Data | None = Field(
        None,
        description="The data the evaluators draw from; default: each model's own stage's data (required when a "
        "model is a checkpoint).",
    )
    distributed: Distributed = Field(default_factory=Distributed, description="Sharding and precision.")
    logging: Logging = Field(default_factory=Logging, description="Metric logging.")
    evals: list[Eval] = Field(min_length=1, description="The evaluations, run once on every model.")

    @property
    def final_model(self) -> None:
        """Nothing is trained: final/ holds the evaluation's record only."""
        return None

    @property
    def vocab_size(self) -> None:
        """Each model keeps the vocabulary it was built with (its stage's, or its checkpoint's)."""
        return None

    @model_validator(mode="after")
    def _data_of_checkpoints(self) -> EvaluateStage:
        p = Problems()
        if self.data is None:
            bare = [label for label, ref in self.models.items() if isinstance(ref, CheckpointRef)]
            if bare:
                p.add(
                    "data", f"models {bare} are checkpoints, whose data the spec does not know; give `data`"
                )
        elif not isinstance(self.data, TokenData):
            p.add("data.kind", f"an evaluate stage scores token models; {self.data.kind!r} makes video clips")
        p.check()
        return self

    def data_of(self, label: str, stages: dict[str, StageRules]) -> TokenData | None:
        """The data a model is evaluated on: the stage's own `data`, else that of the stage the model comes from."""
        if self.data is not None:
            return self.data
        ref = self.models[label]
        if not isinstance(ref, StageRef) or ref.stage not in stages:
            return None
        source = stages[ref.stage]
        data = getattr(source, "prompts", None) or source.data  # an RL stage's data defaults to its policy's
        return data if isinstance(data, TokenData) else None  # video: the source stage reports it

    def check_models(self, name: str, stages: dict[str, StageRules], p: Problems) -> None:
        """Each `{stage: X}` is an earlier stage that trains a transformer on tokens, which the data fits, and
        every evaluator can evaluate every model on its data (a checkpoint's model is checked when it loads)."""
        earlier = list(stages)
        for label, ref in self.models.items():
            at = f"stages.{name}.models.{label}"
            model = None
            if isinstance(ref, StageRef):
                source = stages.get(ref.stage)
                if source is None:
                    shown = ", ".join(earlier) or "none"
                    p.add(f"{at}.stage", f"{ref.stage!r} is not an earlier stage (earlier stages: {shown})")
                    continue
                if not isinstance(source.final_model, Transformer) or source.vocab_size is None:
                    p.add(
                        f"{at}.stage",
                        f"stage {ref.stage!r} does not train a token transformer; evaluate stages score those",
                    )
                    continue
                model = source.final_model
            data = self.data_of(label, stages)
            if data is None:
                continue
            sub = Problems()
            if model is not None and self.data is not None:
                _token_rules(model, data, sub)
                vocab = stages[ref.stage].vocab_size
                if vocab < data.vocab_size:
                    sub.add(
                        "data.kind",
                        f"the model's vocabulary ({vocab} tokens, from stage {ref.stage!r}) is smaller than "
                        f"this data's ({data.vocab_size}); evaluate it on data of its own vocabulary",
                    )
            for i, ev in enumerate(self.evals):
                ev.check(_Evaluated(model, data, tuple(self.evals)), f"evals.{i}", sub)
                ev.check_tokens(data, f"evals.{i}", sub)
            for field, message in sub.items:
                where = f"{at}.stage" if field.startswith(("model.", "data.")) else f"stages.{name}.{field}"
                p.add(where, f"{message} (model {label})")


class RLStage(StageRules):
    """RL post-training of a token model against the data's verifier: at every step, completions of a batch of
    prompts are sampled from the policy, rewarded, and the policy is updated by the algorithm."""

    kind: Literal["rl"] = Field("rl", description="Stage kind: RL post-training with verifiable rewards.")
    policy: WeightsRef = Field(
        description="The model trained: {stage: NAME} (an earlier stage's final weights) or {checkpoint: URL}."
    )
    reference: WeightsRef | Literal["policy"] | None = Field(
        "policy",
        description="Frozen reference of the KL term (and of the logged KL): `policy` (the policy's starting "
        "weights, the default), {stage: NAME}, {checkpoint: URL}, or null for none.",
    )
    data: Data | None = Field(
        None,
        description="Where prompts come from (and the verifier that rewards them); default: the policy's stage's "
        "data (required when the policy is a checkpoint).",
    )
    split: str | None = Field(
        None,
        description="The data split whose prompts are used; default `rl` where the data has one, else train.",
    )
    rollout: Rollout = Field(default_factory=Rollout, description="How completions are sampled.")
    reward: Reward = Field(default_factory=Reward, description="The reward of a completion.")
    algorithm: Algorithm = Field(
        default_factory=lambda: _default_algorithm(), description="The RL algorithm."
    )
    optim: Optim = Field(
        default_factory=lambda: AdamW(lr=1e-6, betas=(0.9, 0.999), weight_decay=0.0),
        description="The policy's optimizer.",
    )
    schedule: Schedule = Field(
        description="RL steps (one rollout batch each) and the learning-rate schedule."
    )
    batch: Batch = Field(
        description="global: prompts per RL step (each sampled rollout.samples times), split over ranks; micro: "
        "sequences per forward pass on one rank in updates."
    )
    distributed: Distributed = Field(default_factory=Distributed, description="Sharding, precision, compile.")
    checkpoint: Checkpointing = Field(
        default_factory=Checkpointing, description="Checkpoint period and retention."
    )
    logging: Logging = Field(default_factory=Logging, description="Metric logging.")
    evals: list[Eval] = Field(
        default_factory=list, description="Evaluations of the policy, run periodically and at the end."
    )

    # Resolved from the policy's stage by the spec's cross-stage rules (None for a checkpoint policy).
    _model: Transformer | None = PrivateAttr(None)
    _vocab: int | None = PrivateAttr(None)
    _data: TokenData | None = PrivateAttr(None)

    @property
    def final_model(self) -> Transformer | None:
        """The policy's model config (None when the policy is a checkpoint: read from it when it loads)."""
        return self._model

    @property
    def vocab_size(self) -> int | None:
        """The policy's vocabulary (its stage's)."""
        return self._vocab

    @property
    def prompts(self) -> TokenData | None:
        """The data prompts are drawn from: `data`, else the policy's stage's."""
        return self.data if self.data is not None else self._data

    @property
    def prompt_split(self) -> str:
        """The split prompts are drawn from: `split`, else `rl` where the data has one, else train."""
        if self.split is not None:
            return self.split
        data = self.prompts
        return "rl" if data is not None and "rl" in data.SPLITS else "train"

    @property
    def reference_needed(self) -> bool:
        """Whether reference log-probabilities are computed: a reference is named (they give the logged KL)."""
        return self.reference is not None

    @property
    def scores_old(self) -> bool:
        """Whether a scoring forward recomputes the policy's log-probs at rollout time: updates reuse the batch,
        the logged KL, a reward-side KL or the critic's GAE needs them, or top-k/top-p truncates the support the
        policy-gradient log-probs are taken over."""
        alg, r = self.algorithm, self.rollout
        truncated = not alg.FINE_TUNES and (r.top_k is not None or r.top_p < 1)
        return alg.updates > 1 or self.reference_needed or alg.CRITIC or truncated

    def step_flops(self, vocab_size: int, tokens: float, sum_t_t1: float) -> StepFlops:
        """FLOPs of one RL step over sequences of `tokens` tokens in all (sum of T*(T+1): `sum_t_t1`): the rollout
        and each scoring forward (old policy, reference, critic) at 2·N per token, filed as frozen 2ND; each
        update at 6·N per token, twice with a critic. The plan passes expected lengths, the run the real ones."""
        f = NextToken().step_flops(self.final_model, vocab_size, tokens, sum_t_t1)  # one forward + backward
        forwards = 1 + int(self.scores_old) + int(self.reference_needed) + int(self.algorithm.CRITIC)
        updates = self.algorithm.updates * (2 if self.algorithm.CRITIC else 1)
        return StepFlops(
            six_nd=f.six_nd * updates,
            frozen_2nd=f.six_nd / 3 * forwards,
            attention=f.attention * (updates + forwards / 3),
        )

    def check_stages(self, name: str, stages: dict[str, StageRules], world: int, p: Problems) -> None:
        """Policy and reference are earlier token transformers of one shape, the data fits them and has a
        verifier, the rollout fits the positions, and the algorithm and evaluators accept the stage."""
        at = f"stages.{name}"
        if self.batch.global_ % world:
            p.add(
                f"{at}.batch.global",
                f"{self.batch.global_} prompts are not divisible by the world size {world}; use a multiple of {world}",
            )
        policy = self._resolve(self.policy, "policy", stages, at, p)
        if policy is not None:
            self._model, self._vocab = policy.final_model, policy.vocab_size
            self._data = policy.prompts if isinstance(policy, RLStage) else policy.data
        if isinstance(self.reference, StageRef | CheckpointRef):
            ref = self._resolve(self.reference, "reference", stages, at, p)
            if ref is not None and self._model is not None:
                mine = self._model.weight_shapes(self._vocab)
                theirs = ref.final_model.weight_shapes(ref.vocab_size)
                if mine != theirs:
                    p.add(
                        f"{at}.reference.stage",
                        f"the reference of stage {self.reference.stage!r} differs in shape from the policy; "
                        "use a model of the policy's shape or reference: policy",
                    )
        data = self.prompts
        if data is None:
            if policy is None and isinstance(self.policy, CheckpointRef):
                p.add(
                    f"{at}.data", "the policy is a checkpoint, whose data the spec does not know; give `data`"
                )
            return
        if not isinstance(data, TokenData):
            p.add(
                f"{at}.data.kind",
                f"{data.kind!r} makes video clips, which have no verifier to reward; RL needs token data",
            )
            return
        if self.prompt_split not in data.SPLITS:
            p.add(
                f"{at}.split",
                f"{data.kind} has no split {self.prompt_split!r}; its splits are {list(data.SPLITS)}",
            )
        model = self._model
        if model is not None:
            if self.data is not None:
                sub = Problems()
                _token_rules(model, data, sub)
                for _field, message in sub.items:
                    p.add(f"{at}.policy.stage", message)
                if self._vocab is not None and self._vocab < data.vocab_size:
                    p.add(
                        f"{at}.data.kind",
                        f"the policy's vocabulary ({self._vocab} tokens) is smaller than this data's "
                        f"({data.vocab_size}); use data of the policy's vocabulary",
                    )
            if model.position.kind == "coupled":
                p.add(
                    f"{at}.policy.stage",
                    "the policy takes coupled position ids from its data; RL samples free-form completions, "
                    "which have none: post-train a model with rope, learned or nope positions",
                )
            elif model.position.kind == "learned":
                need = data.max_seq_len() + self.rollout.max_new_tokens
                if model.position.max_len < need:
                    p.add(
                        f"{at}.rollout.max_new_tokens",
                        f"prompts of up to {data.max_seq_len()} tokens + {self.rollout.max_new_tokens} new tokens "
                        f"exceed the policy's {model.position.max_len} positions; lower max_new_tokens to "
                        f"{max(0, model.position.max_len - data.max_seq_len())} or less",
                    )
        sub = Problems()
        self.algorithm.check(self, world, sub)
        for i, ev in enumerate(self.evals):
            ev.check(_Evaluated(model, data, tuple(self.evals)), f"evals.{i}", sub)
            ev.check_tokens(data, f"evals.{i}", sub)
        for field, message in sub.items:
            p.add(f"{at}.{field}", message)

    @staticmethod
    def _resolve(
        ref: StageRef | CheckpointRef, what: str, stages: dict[str, StageRules], at: str, p: Problems
    ) -> StageRules | None:
        """The earlier stage a reference names, if it trains a token transformer (None for a checkpoint)."""
        if not isinstance(ref, StageRef):
            return None
        source = stages.get(ref.stage)
        if source is None:
            shown = ", ".join(stages) or "none"
            p.add(f"{at}.{what}.stage", f"{ref.stage!r} is not an earlier stage (earlier stages: {shown})")
            return None
        if not isinstance(source.final_model, Transformer) or source.vocab_size is None:
            p.add(
                f"{at}.{what}.stage",
                f"stage {ref.stage!r} does not train a token transformer; RL post-trains those",
            )
            return None
        return source


def _default_algorithm() -> Algorithm:
    from .rl import GRPO

    return GRPO()


@dataclass(frozen=True)
class _Evaluated:
    """What an evaluator checks of the stage it evaluates: the model and the data (an evaluate stage's view of
    one of its models)."""

    final_model: Transformer | None  # None: a checkpoint, whose config the spec does not hold
    data: TokenData
    evals: tuple[Any, ...] = ()  # the stage's evaluators, which an evaluator may check itself against


SweepValues = list[Any] | dict[str, Any]


class Budget(Strict):
    """A value derived per member: the steps of one stage from a FLOPs budget (an axis) or from other stages."""

    stage: str = Field(description="The train stage whose schedule.steps is derived.")
    flops: list[Annotated[float, Field(gt=0)]] | None = Field(
        None,
        min_length=1,
        description="FLOPs budgets, a sweep axis named `budget`: each member trains the stage for "
        "round(budget / FLOPs per step) steps (FLOPs as `engine plan` counts them).",
    )
    match: list[str] | None = Field(
        None,
        min_length=1,
        description="Instead of `flops`: train the stage for as many FLOPs as these stages of the same member "
        "together (e.g. V-JEPA at the FLOPs of SALT's teacher and student).",
    )
    warmup: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Warmup as a fraction of the derived steps (e.g. 0.2); default: schedule.warmup as written.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Budget:
        if (self.flops is None) == (self.match is None):
            raise spec_error("", "give either `flops` (a list of budgets) or `match` (a list of stages)")
        return self


class Sweep(Strict):
    """A family of runs from one spec: every combination of the `grid` axes, times the `zip` rows, times the
    budgets. Each member is an ordinary run in `{run.output}/{member name}`."""

    grid: dict[str, SweepValues] = Field(
        default_factory=dict,
        description="Dotted key -> values (a list, or a mapping label -> value that names the values); "
        "every combination of the axes is a member.",
    )
    zip: dict[str, SweepValues] = Field(
        default_factory=dict,
        description="Dotted key -> values walked together (equal lengths): one axis of rows, crossed with "
        "the grid.",
    )
    budget: Budget | None = Field(None, description="Steps of one stage derived from a FLOPs budget.")
    name: str | None = Field(
        None,
        description="Member name template: {key} is the member's value (or label) of an axis, named by its "
        "dotted key or a unique last part ({dim}, {budget}); {index} is its number. Default: the values "
        "joined by '-'.",
    )


Stage = kinded(
    TrainStage,
    ProbeStage,
    EvaluateStage,
    RLStage,
    default="train",
    description="A stage, by `kind` (default train).",
)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class Spec(Strict):
    """A whole experiment: run identity, resources, and the stages run in order."""

    extends: str | list[str] | None = Field(
        None,
        description="Spec file(s) deep-merged under this one (resolved by the loader, relative to this file).",
    )
    run: Run = Field(description="Run name, output directory and seed.")
    resources: Resources = Field(
        default_factory=Resources, description="Nodes, processes per node and device."
    )
    stages: dict[str, Stage] = Field(min_length=1, description="Named stages, run in the order written.")
    sweep: Sweep | None = Field(
        None,
        description="Run a family of members of this spec (grid, zip, budgets); each is a run of its own in "
        "{run.output}/{member name}.",
    )

    @model_validator(mode="after")
    def _cross_stage(self) -> Spec:
        p = Problems()
        names = list(self.stages)
        world = self.resources.world
        for i, (name, stage) in enumerate(self.stages.items()):
            if not _NAME.match(name):
                p.add(f"stages.{name}", f"stage name {name!r} must be letters, digits, '_' or '-'")
            earlier = names[:i]
            if isinstance(stage, EvaluateStage):
                stage.check_models(name, {n: self.stages[n] for n in earlier}, p)
                continue
            if isinstance(stage, RLStage):
                stage.check_stages(name, {n: self.stages[n] for n in earlier}, world, p)
                continue
            refs = []  # (dotted field, referenced stage, needs a vit)
            if isinstance(stage, TrainStage):
                if isinstance(stage.init, StageRef):
                    refs.append(("init.stage", stage.init.stage, False))
                for key, loaded in stage.objective.loads().items():
                    if isinstance(loaded, StageRef):
                        refs.append((f"objective.{key}.stage", loaded.stage, True))
            elif isinstance(stage, ProbeStage):
                enc = stage.encoder
                if isinstance(enc, StageRef | RandomInit):
                    key = "stage" if isinstance(enc, StageRef) else "random"
                    refs.append((f"encoder.{key}", getattr(enc, key), True))
            for field, ref, vit in refs:
                if ref not in earlier:
                    shown = ", ".join(earlier) or "none"
                    p.add(
                        f"stages.{name}.{field}", f"{ref!r} is not an earlier stage (earlier stages: {shown})"
                    )
                elif vit and not isinstance(self.stages[ref].final_model, ViT):
                    p.add(f"stages.{name}.{field}", f"stage {ref!r} does not train a vit encoder")
                elif field == "init.stage":
                    _weights_load(p, f"stages.{name}.{field}", stage, ref, self.stages[ref])
            b = stage.batch
            if isinstance(stage, TrainStage):
                stage.objective.check_batch(b, world, f"stages.{name}.batch", p)
            if b.global_ % world:
                p.add(
                    f"stages.{name}.batch.global",
                    f"{b.global_} is not divisible by the world size {world} (nodes*procs_per_node); use a multiple of {world}",
                )
            elif b.micro is not None and (b.global_ // world) % b.micro:
                p.add(
                    f"stages.{name}.batch.micro",
                    f"{b.micro} does not divide the per-rank batch {b.global_ // world} (global/world); pick a divisor",
                )
        p.check()
        return self
