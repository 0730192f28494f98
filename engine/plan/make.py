"""Spec -> Plan: each stage's model and objective configs answer its parameters and FLOPs per step."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

from schemas.models import MLP, ParamCount, StepFlops, ViT, encoder_flops, probe_classes
from schemas.spec import EvaluateStage, ProbeStage, Resources, RLStage, Spec, TrainStage

from .launch import Launch, sbatch_script, torchrun_command
from .memory import memory, memory_of_nothing, memory_per_rank
from .report import Flops, Plan, StagePlan, Tokens


def _batching(stage: TrainStage | ProbeStage, resources: Resources) -> dict[str, Any]:
    """What every stage's plan says of its schedule: kind, steps, and how its global batch splits over ranks."""
    batch = stage.batch.global_
    per_rank = batch // resources.world
    micro = stage.batch.micro or per_rank
    return {
        "kind": stage.kind,
        "steps": stage.steps if isinstance(stage, ProbeStage) else stage.schedule.steps,
        "global_batch": batch,
        "micro_batch": micro,
        "grad_accumulation": per_rank // micro,
    }


def plan_stage(stage: TrainStage, resources: Resources) -> StagePlan:
    """Parameters, expected tokens, FLOPs and memory per rank of one transformer training stage."""
    cfg = stage.model
    vocab = stage.vocab_size
    params = cfg.param_count(vocab)
    mean_t, mean_t_t1 = stage.data.length_stats("train")
    batch, steps = stage.batch.global_, stage.schedule.steps
    tokens_per_step = batch * mean_t
    return StagePlan(
        **_batching(stage, resources),
        model=cfg.kind,
        vocab_size=vocab,
        params=params,
        tokens=Tokens(per_example=mean_t, per_step=tokens_per_step, total=tokens_per_step * steps),
        flops=Flops.of(stage.objective.step_flops(cfg, vocab, tokens_per_step, batch * mean_t_t1), steps),
        memory_per_rank=memory_per_rank(stage, resources, params, vocab),
    )


def plan_mlp_stage(stage: TrainStage, resources: Resources) -> StagePlan:
    """An mlp stage: its config counts parameters (a frozen first layer apart) and the objective a step's FLOPs
    over the batch's examples; memory holds one micro-batch of hidden activations."""
    cfg = stage.model
    params = cfg.param_count()
    batch, steps = stage.batch.global_, stage.schedule.steps
    seq = stage.data.max_seq_len()
    bundle = _batching(stage, resources)
    return StagePlan(
        **bundle,
        model=f"mlp-{cfg.width}" + ("" if cfg.train_first_layer else " (first layer frozen)"),
        vocab_size=None,
        params=params,
        tokens=Tokens(per_example=seq, per_step=batch * seq, total=batch * seq * steps),
        flops=Flops.of(stage.objective.step_flops(cfg, float(batch)), steps),
        memory_per_rank=memory(
            stage,
            resources,
            trained=params.total,
            frozen=params.frozen,
            gathered_params=params.largest_block + params.root,
            seq_len=1,
            dim=cfg.width,
            depth=1,
        ),
    )


def _vit_of(spec: Spec, ref: object) -> ViT | None:
    """The ViT config a weights reference points to, when the spec knows it (None for a bare checkpoint)."""
    name = getattr(ref, "stage", None) or getattr(ref, "random", None)
    return spec.stages[name].model if name else None


def step_masks(spec: Spec, name: str, stage: TrainStage, step: int = 0) -> list[tuple[int, int]]:
    """(context, target) tokens of every clip and mask generator of one step of the stage, trimmed.

    The masks are drawn exactly as the run draws them (group by group from the same counter-keyed generator),
    so the FLOPs of `step_flops` on them equal what the run logs for that step.
    """
    masks = stage.objective.masks
    key = (spec.run.seed, name, masks.model_dump_json(), tuple(stage.model.grid), stage.batch.global_, step)
    return list(_step_masks(*key))


@functools.lru_cache(maxsize=65536)  # a sweep plans the same stage's steps again for each member
def _step_masks(seed: int, name: str, masks_json: str, grid: tuple, total: int, step: int) -> tuple:
    # numpy only here: a plan without masked-video stages imports neither numpy nor torch
    from engine.data.masks import MultiBlockMasks
    from engine.data.stream import AUGMENT, counter_rng, stage_key
    from schemas.masks import MultiBlock

    masks_cfg = MultiBlock.model_validate_json(masks_json)
    masks = MultiBlockMasks(masks_cfg, grid)
    size = masks_cfg.group or total
    pairs: list[tuple[int, int]] = []
    for g in range(-(-total // size)):
        n = min(size, total - g * size)
        rng = counter_rng(seed, stage_key(name), AUGMENT, step, g)
        for context, target in masks.sample(rng, n):
            pairs += [(context.shape[1], target.shape[1])] * n
    return tuple(pairs)


MASKED_CLIPS = 16384  # clips whose masks the plan draws at most per masked-video stage (~1.5 s at 16x224px)


def planned_steps(steps: int, batch: int) -> list[int]:
    """The steps whose masks the plan draws: every step when they hold at most `MASKED_CLIPS` clips (the
    plan's total is then the run's), else that many clips' worth of steps spread evenly, first and last
    included (each step trims to other counts: about 1% apart at 3072 clips a step, 10% at 32)."""
    k = min(steps, max(1, MASKED_CLIPS // batch))
    if k == steps:
        return list(range(steps))
    if k == 1:
        return [0]
    return sorted({round(i * (steps - 1) / (k - 1)) for i in range(k)})


def mean_step_flops(spec: Spec, name: str, stage: TrainStage, teacher: ViT | None) -> StepFlops:
    """A masked-video step's FLOPs by the objective config, on the masks the run draws, averaged over the
    `planned_steps`."""
    steps = planned_steps(stage.schedule.steps, stage.batch.global_)
    obj, batch = stage.objective, stage.batch.global_
    parts = [
        obj.step_flops(stage.model, stage.predictor, step_masks(spec, name, stage, s), batch, teacher)
        for s in steps
    ]
    return StepFlops(*(sum(values) / len(steps) for values in zip(*map(astuple, parts), strict=True)))


def plan_probe_stage(stage: ProbeStage, spec: Spec, resources: Resources) -> StagePlan:
    """A probe stage: the probe config counts its parameters and a step; the frozen encoder runs on every
    step's clips, or once on a fixed labelled set whose features are cached (`probe`: its size and epochs)."""
    vit = _vit_of(spec, stage.encoder)
    unplanned = None
    if vit is None:
        unplanned = (
            f"encoder {{checkpoint: {stage.encoder.checkpoint}}} takes its shape from its done.json"
            " at run time; params, FLOPs and memory not counted"
        )
    probe, n = stage.probe, stage.labelled_size
    classes = probe_classes(probe, stage.data.num_classes)
    dim = vit.dim if vit else 0
    depth, block = probe.blocks(dim)
    trained, frozen = (probe.params(dim, classes), vit.params()) if vit else (0, 0)
    step = probe.train_flops(vit, stage.batch.global_, classes, encode=n is None) if vit else StepFlops()
    pool = None
    if n is not None:
        train = stage.training_clips
        pool = {
            "labelled": n,
            "train": train,
            "validation": n - train,
            "epochs": stage.steps * stage.batch.global_ / train,
            "encode_flops": encoder_flops(vit, n).total if vit else 0.0,
        }
    return _video_plan(
        stage,
        resources,
        model=probe.kind,
        params=ParamCount(trained, trained, 0, block, 0, frozen),
        step=step,
        tokens=vit.tokens if vit else 0,
        activations=(dim, depth),
        unplanned=unplanned,
        pool=pool,
    )


def plan_video_stage(stage: TrainStage, spec: Spec, name: str, resources: Resources) -> StagePlan:
    """A masked-video stage: the objective config counts its steps on the trimmed masks the run draws."""
    vit, obj, pc = stage.model, stage.objective, stage.predictor
    ref = next(iter(obj.loads().values()), None)  # a frozen teacher's weights, when the objective has one
    teacher = _vit_of(spec, ref) if ref is not None else None
    pcount = vit.param_count()
    model = f"vit{'-' + vit.size if vit.size else ''}"
    if ref is not None and teacher is None:
        return _video_plan(
            stage,
            resources,
            model=model,
            params=pcount,
            step=StepFlops(),
            tokens=vit.tokens,
            activations=(vit.dim, vit.depth + pc.depth),
            unplanned=f"teacher {{checkpoint: {ref.checkpoint}}} takes its shape from its done.json at run"
            " time; its forward FLOPs and memory and the predictor's output width are unknown here, so"
            " params, FLOPs and memory are not counted",
        )
    target = obj.frozen_target(vit, teacher)
    trained = pcount.total + pc.params(vit.dim, obj.out_dim(vit, teacher))
    step = mean_step_flops(spec, name, stage, teacher)
    return _video_plan(
        stage,
        resources,
        model=model,
        params=ParamCount(
            total=trained,
            active=trained,
            embedding=pcount.embedding,
            largest_block=pcount.largest_block,
            root=pcount.embedding,
            frozen=target.params() if target else 0,
        ),
        step=step,
        tokens=vit.tokens,
        activations=(vit.dim, vit.depth + pc.depth),  # the predictor sees all T per mask
    )


def _video_plan(
    stage: TrainStage | ProbeStage,
    resources: Resources,
    *,
    model: str,
    params: ParamCount,
    step: StepFlops,
    tokens: int,
    activations: tuple[int, int],
    unplanned: str | None = None,
    pool: dict[str, float] | None = None,
) -> StagePlan:
    """A video stage's plan from its parameters, one step's FLOPs, its clip tokens and activation shape."""
    batch, steps = stage.batch.global_, _batching(stage, resources)["steps"]
    dim, depth = activations
    return StagePlan(
        **_batching(stage, resources),
        model=model,
        vocab_size=None,
        params=params,
        tokens=Tokens(per_example=tokens, per_step=batch * tokens, total=batch * tokens * steps),
        flops=Flops.of(step, steps),
        memory_per_rank=memory(
            stage,
            resources,
            trained=params.total,
            frozen=params.frozen,
            gathered_params=2 * params.largest_block,
            seq_len=tokens,
            dim=dim,
            depth=depth,
        ),
        unplanned=unplanned,
        pool=pool,
    )


def plan_evaluate_stage(stage: EvaluateStage, spec: Spec) -> StagePlan:
    """Per evaluated model: its active parameters and the tokens its evaluators run through it, priced at
    2·N_active per token (the papers' inference convention); checkpoints are priced when they load."""
    inference: dict[str, dict[str, float]] = {}
    total = ParamCount(0, 0, 0, 0, 0)
    for label, ref in stage.models.items():
        source = spec.stages.get(getattr(ref, "stage", ""))
        if source is None:
            inference[label] = {"params": 0, "tokens": 0.0, "flops": 0.0}
            continue
        params = source.final_model.param_count(source.vocab_size)
        data = stage.data_of(label, spec.stages)
        tokens = sum(e.inference_tokens(data) for e in stage.evals)
        inference[label] = {"params": params.active, "tokens": tokens, "flops": 2.0 * params.active * tokens}
        total = ParamCount(*(a + b for a, b in zip(astuple(total), astuple(params), strict=True)))
    tokens = sum(i["tokens"] for i in inference.values())
    flops = sum(i["flops"] for i in inference.values())
    return StagePlan(
        kind=stage.kind,
        model="transformer",
        vocab_size=None,
        steps=0,
        global_batch=0,
        micro_batch=0,
        grad_accumulation=0,
        params=total,
        tokens=Tokens(per_example=0.0, per_step=tokens, total=tokens),
        flops=Flops.of(StepFlops(frozen_2nd=flops), 1),
        memory_per_rank=memory_of_nothing(),
        inference=inference,
    )


def plan_rl_stage(stage: RLStage, resources: Resources) -> StagePlan:
    """One RL step: the rollout (2·N per prompt and generated token), the scoring forwards (old policy, reference,
    critic: 2·N each) and the updates (6·N per token each, twice with a critic), over sequences of about the
    data's example length; memory of the policy (+ critic) trained and the reference frozen."""
    cfg, vocab, data = stage.final_model, stage.vocab_size, stage.prompts
    world = resources.world
    sequences = stage.batch.global_ * stage.rollout.samples
    per_rank = sequences // world
    micro = stage.batch.micro or per_rank
    batching = {
        "kind": stage.kind,
        "steps": stage.schedule.steps,
        "global_batch": stage.batch.global_,
        "micro_batch": micro,
        "grad_accumulation": max(1, per_rank // stage.algorithm.minibatches // micro),
    }
    if cfg is None or data is None:
        return StagePlan(
            **batching,
            model="transformer",
            vocab_size=None,
            params=ParamCount(0, 0, 0, 0, 0),
            tokens=Tokens(0.0, 0.0, 0.0),
            flops=Flops.of(StepFlops(), 1),
            memory_per_rank=memory_of_nothing(),
            unplanned="the policy is a checkpoint: its size is known when it loads",
        )
    params = cfg.param_count(vocab)
    try:
        mean_t, mean_t_t1 = data.length_stats(stage.prompt_split)
    except (ValueError, KeyError, NotImplementedError):
        mean_t, mean_t_t1 = data.length_stats("train")
    tokens = sequences * mean_t
    step = stage.step_flops(vocab, tokens, sequences * mean_t_t1)
    critic = stage.algorithm.CRITIC
    forwards = (
        int(stage.scores_old) + int(stage.reference_needed) + int(critic)
    )  # scoring, besides the rollout
    updates = stage.algorithm.updates * (2 if critic else 1)
    fwd = step.frozen_2nd / (1 + forwards)  # one forward pass over the step's sequences
    r = stage.rollout
    trained = params.total * (2 if critic else 1)
    frozen = params.total if stage.reference_needed else 0
    held = min(2, cfg.depth) if stage.distributed.reshard_after_forward else cfg.depth
    t_max = data.max_seq_len() + r.max_new_tokens
    mem = memory(
        stage,
        resources,
        trained=trained,
        frozen=frozen,
        gathered_params=held * params.largest_block + params.root,
        seq_len=t_max,
        dim=cfg.dim,
        depth=cfg.depth,
        extra_activations=micro * t_max * vocab * 4 * 2,
        micro=micro,
    )
    return StagePlan(
        **batching,
        model=cfg.kind,
        vocab_size=vocab,
        params=params,
        tokens=Tokens(per_example=mean_t, per_step=tokens, total=tokens * stage.schedule.steps),
        flops=Flops.of(step, stage.schedule.steps),
        memory_per_rank=mem,
        rl={
            "sequences": float(sequences),
            "tokens": tokens,
            "rollout_flops": fwd,
            "scoring_forwards": float(forwards),
            "scoring_flops": fwd * forwards,
            "updates": float(updates),
            "update_flops": step.six_nd,
        },
    )


def _plan_stage(name: str, stage: TrainStage | ProbeStage | EvaluateStage | RLStage, spec: Spec) -> StagePlan:
    if isinstance(stage, EvaluateStage):
        return plan_evaluate_stage(stage, spec)
    if isinstance(stage, RLStage):
        return plan_rl_stage(stage, spec.resources)
    if isinstance(stage, ProbeStage):
        return plan_probe_stage(stage, spec, spec.resources)
    if stage.model.kind == "transformer":
        return plan_stage(stage, spec.resources)
    if isinstance(stage.model, MLP):
        return plan_mlp_stage(stage, spec.resources)
    return plan_video_stage(stage, spec, name, spec.resources)


def make_plan(spec: Spec, spec_path: str = "SPEC.yaml", overrides: Sequence[str] = ()) -> Plan:
    """The plan of a validated spec: per stage costs, and the commands that launch it with these overrides."""
    res = spec.resources
    return Plan(
        run=spec.run.name,
        output=spec.run.output,
        nodes=res.nodes,
        procs_per_node=res.procs_per_node,
        world=res.world,
        device=res.device,
        stages={name: _plan_stage(name, stage, spec) for name, stage in spec.stages.items()},
        launch=Launch(
            torchrun=torchrun_command(res, spec_path, overrides),
            sbatch=sbatch_script(spec, spec_path, overrides),
        ),
        device_memory=res.device_memory_bytes,
        device_memory_of=(
            None
            if res.device_memory is None
            else f"the memory of one {res.device_memory}"
            if isinstance(res.device_memory, str)
            else "resources.device_memory"
        ),
    )
