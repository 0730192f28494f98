"""Spec -> Plan: parameter counts, FLOPs, memory per rank and launch commands, in pure Python (no torch)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from schemas.models import MoEFFN, Transformer, ViT, ffn_hidden
from schemas.spec import ACCELERATOR_MEMORY_GIB, ProbeStage, Resources, Spec, TrainStage

from .plan_vit import block_params as vit_block_params
from .plan_vit import predictor_params, probe_classes, probe_params, vit_params

# SALT App. E (docs/papers/salt.md) counts the encoder on a context of 0.1 of the clip per mask generator.
JEPA_CONTEXT_RATIO = 0.1

# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of one model: all of them, those a token uses (MoE), embeddings, the largest block."""

    total: int
    active: int  # MoE: router + top_k experts per layer instead of all experts; equals total for dense
    embedding: int  # tok_emb + pos_emb + lm_head (0 for lm_head when tied)
    largest_block: int  # one entry of `model.blocks` (all blocks are identical)
    root: int  # parameters outside the blocks: embeddings, position table, final norm, lm_head
    frozen: int = 0  # parameters only run forward (a frozen teacher or encoder, an EMA target)


def _norm_params(cfg: Transformer) -> int:
    return cfg.dim if cfg.norm == "rmsnorm" else 2 * cfg.dim


def _linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _position_params(cfg: Transformer) -> int:
    pos = cfg.position
    if pos.kind == "learned":
        return pos.max_len * cfg.dim
    if pos.kind == "coupled" and pos.encoding == "learned":
        return pos.max_position * cfg.dim
    return 0  # rope, nope, coupled rope


def block_params(cfg: Transformer, active: bool = False) -> int:
    """Parameters of one transformer block; with `active`, MoE counts top_k experts instead of all."""
    dim, b = cfg.dim, cfg.bias
    kv_dim = (cfg.kv_heads or cfg.heads) * cfg.head_dim
    attn = _linear(dim, dim, b) + 2 * _linear(dim, kv_dim, b) + _linear(dim, dim, b)
    ffn = cfg.ffn
    h = ffn_hidden(dim, ffn)
    matrices = 3 if ffn.activation == "swiglu" else 2
    if isinstance(ffn, MoEFFN):
        experts = ffn.top_k if active else ffn.experts
        mlp = dim * ffn.experts + experts * matrices * dim * h  # router (no bias) + bias-free experts
    elif ffn.activation == "swiglu":
        mlp = 2 * _linear(dim, h, b) + _linear(h, dim, b)
    else:
        mlp = _linear(dim, h, b) + _linear(h, dim, b)
    return 2 * _norm_params(cfg) + attn + mlp


def count_params(cfg: Transformer, vocab_size: int) -> ParamCount:
    """Exact parameter counts of the transformer built from `cfg` with a vocabulary of `vocab_size`."""
    tok_emb = vocab_size * cfg.dim
    lm_head = 0 if cfg.tie_embeddings else cfg.dim * vocab_size
    embedding = tok_emb + _position_params(cfg) + lm_head
    root = embedding + _norm_params(cfg)  # + final norm
    block, block_active = block_params(cfg), block_params(cfg, active=True)
    return ParamCount(
        total=root + cfg.depth * block,
        active=root + cfg.depth * block_active,
        embedding=embedding,
        largest_block=block,
        root=root,
    )


def stage_vocab_size(stage: TrainStage | ProbeStage) -> int | None:
    """The vocabulary a transformer is built with (model.vocab_size, else the data's); None for video."""
    model = getattr(stage, "model", None)
    if model is None or model.kind != "transformer":
        return None
    return model.vocab_size or stage.data.vocab_size


# ----------------------------------------------------------------------------- FLOPs


def training_flops(n_params: float, tokens: float) -> float:
    """6·N·D: forward and backward of a trained network of N parameters (embeddings counted) over D tokens."""
    return 6.0 * n_params * tokens


def forward_flops(n_params: float, tokens: float) -> float:
    """2·N·D: forward passes of a frozen network (teacher, reference model, inference) over D tokens."""
    return 2.0 * n_params * tokens


def attention_flops(cfg: Transformer, sum_t_t1: float, train: bool = True) -> float:
    """Causal attention-score FLOPs (QK^T and AV) given the sum of T*(T+1) over sequences; train = 3x forward.

    Per layer and sequence: 2 (FLOPs per MAC) * 2 (two matmuls) * dim * T*(T+1)/2 = 2*dim*T*(T+1).
    """
    forward = 2.0 * cfg.dim * cfg.depth * sum_t_t1
    return 3.0 * forward if train else forward


def bidirectional_attention_flops(dim: int, depth: int, length: float) -> float:
    """Forward attention-score FLOPs of one sequence without a causal mask: 2 * 2 * dim * L^2 per layer."""
    return 4.0 * dim * depth * length * length


def train_flops(
    stage: TrainStage, seq_lens: Sequence[int], vocab_size: int | None = None
) -> tuple[float, float]:
    """(6·N_active·sum(T), attention FLOPs) of one training step over sequences of these unpadded lengths."""
    n = count_params(stage.model, vocab_size or stage_vocab_size(stage)).active
    tokens = sum(seq_lens)
    return training_flops(n, tokens), attention_flops(stage.model, sum(t * (t + 1) for t in seq_lens))


@dataclass(frozen=True)
class Tokens:
    """Tokens the stage trains on (expected, from the data's length distribution)."""

    per_example: float
    per_step: float
    total: float


@dataclass(frozen=True)
class Flops:
    """Training FLOPs of a stage: 6·N·D and causal attention separately, and their sum."""

    six_nd_per_step: float
    attention_per_step: float
    per_step: float
    six_nd_total: float
    attention_total: float
    total: float
    frozen_2nd_per_step: float = 0.0  # 2·N·D of frozen forward passes (teacher, EMA target, probed encoder)
    frozen_2nd_total: float = 0.0


# ----------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class Memory:
    """Estimated peak bytes per rank under FSDP (an estimate: allocator overhead and buffers are ignored)."""

    estimate: bool
    shards: int  # ranks the fp32 state is sharded over (world under FSDP, else 1)
    bytes_per_el: int  # compute dtype: 2 (bf16) or 4 (fp32)
    micro_batch: int
    seq_len: int  # T_max: the data's longest example
    activation_checkpointing: bool
    params: int  # fp32 master weights, sharded
    grads: int  # fp32 gradients, sharded
    optimizer: int  # AdamW: 2 fp32 states; SGD: momentum buffer or nothing
    gathered: int  # compute-dtype unsharded copies held during forward/backward
    activations: int  # one micro-batch of block activations plus fp32 logits and their gradient
    total: int


def compute_bytes(stage: TrainStage, resources: Resources) -> int:
    """Bytes per element of the compute dtype: 2 for bf16 (or auto on CUDA), else 4."""
    precision = stage.distributed.precision
    return 2 if precision == "bf16" or (precision == "auto" and resources.device == "cuda") else 4


def _memory(
    stage: TrainStage | ProbeStage,
    resources: Resources,
    *,
    trained: int,
    frozen: int,
    gathered_params: int,
    seq_len: int,
    dim: int,
    depth: int,
    extra_activations: int = 0,
) -> Memory:
    """Sharded fp32 state, compute-dtype gathered parameters and one micro-batch of block activations.

    Activations follow Korthikanti et al. (2022) with flash/SDPA attention (no s^2 term): 34*s*b*h bytes per
    layer at 16 bit; with activation checkpointing, the saved block inputs plus one block being recomputed.
    """
    world = resources.world
    sharded = stage.distributed.fsdp and world > 1
    shards = world if sharded else 1
    el = compute_bytes(stage, resources)
    states = 2 if stage.optim.kind == "adamw" else (1 if stage.optim.momentum > 0 else 0)
    micro = stage.batch.micro or stage.batch.global_ // world
    tokens = micro * seq_len
    per_block = 34 * tokens * dim * el // 2
    if stage.distributed.activation_checkpointing:
        blocks = 2 * tokens * dim * depth * el + per_block
    else:
        blocks = per_block * depth
    activations = blocks + extra_activations
    gathered = el * gathered_params if sharded else 0
    p, g, o = 4 * (trained + frozen) // shards, 4 * trained // shards, 4 * states * trained // shards
    return Memory(
        estimate=True,
        shards=shards,
        bytes_per_el=el,
        micro_batch=micro,
        seq_len=seq_len,
        activation_checkpointing=stage.distributed.activation_checkpointing,
        params=p,
        grads=g,
        optimizer=o,
        gathered=gathered,
        activations=activations,
        total=p + g + o + gathered + activations,
    )


def memory_per_rank(stage: TrainStage, resources: Resources, params: ParamCount, vocab_size: int) -> Memory:
    """Estimate the peak memory of one rank of a transformer stage (an estimate; allocator overhead ignored)."""
    cfg = stage.model
    # Blocks in flight: the current one and the prefetched next; without resharding after forward, every
    # block stays gathered until its backward. The root's parameters (embeddings, lm_head, final norm) stay
    # gathered from forward through backward (FSDP2 never reshards the root).
    held = min(2, cfg.depth) if stage.distributed.reshard_after_forward else cfg.depth
    micro = stage.batch.micro or stage.batch.global_ // resources.world
    t_max = stage.data.max_seq_len()
    return _memory(
        stage,
        resources,
        trained=params.total,
        frozen=0,
        gathered_params=held * params.largest_block + params.root,
        seq_len=t_max,
        dim=cfg.dim,
        depth=cfg.depth,
        extra_activations=micro * t_max * vocab_size * 4 * 2,  # fp32 logits and their gradient
    )


# ----------------------------------------------------------------------------- launch


RDZV_PORT = 29500


def torchrun_command(
    resources: Resources, spec_path: str, overrides: Sequence[str] = (), rendezvous: bool = False
) -> str:
    """The torchrun line: --standalone on one node, c10d rendezvous on $MASTER_ADDR otherwise (or if asked)."""
    args = " ".join(shlex.quote(a) for a in (spec_path, *overrides))
    procs = resources.procs_per_node
    if resources.nodes == 1 and not rendezvous:
        head = f"torchrun --standalone --nproc_per_node={procs}"
    else:
        head = (
            f"torchrun --nnodes={resources.nodes} --nproc_per_node={procs} --rdzv_backend=c10d "
            f"--rdzv_endpoint=$MASTER_ADDR:{RDZV_PORT} --rdzv_id=$SLURM_JOB_ID"
        )
    return f"{head} -m engine {args}"


def _job_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or "engine"


def sbatch_script(spec: Spec, spec_path: str, overrides: Sequence[str] = ()) -> str:
    """An sbatch script that starts one torchrun per node with c10d rendezvous on the first node."""
    res, name = spec.resources, _job_name(spec.run.name)
    slurm = res.slurm
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={res.nodes}",
        "#SBATCH --ntasks-per-node=1",
    ]
    if res.device == "cuda":
        lines.append(f"#SBATCH --gpus-per-node={res.procs_per_node}")
    lines += [f"#SBATCH --cpus-per-task={slurm.cpus_per_task}", f"#SBATCH --time={slurm.time}"]
    if slurm.partition:
        lines.append(f"#SBATCH --partition={slurm.partition}")
    if slurm.account:
        lines.append(f"#SBATCH --account={slurm.account}")
    lines += [
        f"#SBATCH --output={name}-%j.out",
        "",
        "set -euo pipefail",
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "export MASTER_ADDR",
        "srun " + torchrun_command(res, spec_path, overrides, rendezvous=True),
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Launch:
    """How to start the spec: the torchrun line for its resources and an sbatch script."""

    torchrun: str
    sbatch: str


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class StagePlan:
    """What one stage costs: parameters, tokens, FLOPs and memory per rank."""

    kind: str
    model: str
    vocab_size: int | None
    steps: int
    global_batch: int
    micro_batch: int
    grad_accumulation: int
    params: ParamCount
    tokens: Tokens
    flops: Flops
    memory_per_rank: Memory
    unplanned: str | None = None  # why the counts are zero: what the plan cannot know before the run


@dataclass(frozen=True)
class Plan:
    """The plan of a whole spec: per stage costs and the launch commands (`engine plan`, plan.json)."""

    run: str
    output: str
    nodes: int
    procs_per_node: int
    world: int
    device: str
    stages: dict[str, StagePlan]
    launch: Launch
    device_memory: int | None = None  # bytes one rank may use, from resources.device_memory
    device_memory_of: str | None = (
        None  # where that figure comes from: an accelerator's name or the GiB given
    )

    def warnings(self, device_memory_bytes: int | None = None) -> list[str]:
        """What in the plan cannot work as written: a stage whose memory per rank exceeds the device's.

        The device's memory is `device_memory_bytes` when given (what the run measured on its device), else
        the spec's `resources.device_memory`; on CUDA without either, the largest known accelerator's.
        """
        if device_memory_bytes is not None:
            limit = device_memory_bytes
            of = f"this device's {fmt_bytes(limit)}"
        elif self.device_memory is not None:
            limit = self.device_memory
            of = f"{self.device_memory_of} ({fmt_bytes(limit)})"
        elif self.device == "cuda":
            name = max(ACCELERATOR_MEMORY_GIB, key=ACCELERATOR_MEMORY_GIB.__getitem__)
            limit = int(ACCELERATOR_MEMORY_GIB[name] * 2**30)
            of = f"the {fmt_bytes(limit)} of the largest known accelerator ({name})"
        else:
            return []  # CPU memory is the node's: unknown until resources.device_memory or the run says it
        out = []
        for name, s in self.stages.items():
            m = s.memory_per_rank
            if s.unplanned or m.total <= limit:
                continue
            out.append(
                f"stage {name}: ~{fmt_bytes(m.total)} per rank (estimate) exceeds {of}; {_memory_hint(m)}"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict with stable snake_case keys (what plan.json holds)."""
        return asdict(self)

    def render(self) -> str:
        """A compact human-readable report of the plan."""
        procs = f"{self.nodes} node{'s' if self.nodes > 1 else ''} x {self.procs_per_node} procs"
        out = [f"plan {self.run}: world {self.world} ({procs}, {self.device}) -> {self.output}"]
        for name, s in self.stages.items():
            p, t, f, m = s.params, s.tokens, s.flops, s.memory_per_rank
            precision = "bf16" if m.bytes_per_el == 2 else "fp32"
            out += [
                "",
                f"stage {name} ({s.kind}, {s.model}{f', vocab {s.vocab_size}' if s.vocab_size else ''}): "
                f"{s.steps} steps, batch {s.global_batch}"
                f" global, {s.micro_batch} micro x {s.grad_accumulation} accumulation",
            ]
            if s.unplanned:
                out.append(f"  not planned  {s.unplanned}")
                continue
            out += [
                f"  params       total {fmt_count(p.total)}  active {fmt_count(p.active)}"
                f"  embedding {fmt_count(p.embedding)}  largest block {fmt_count(p.largest_block)}"
                + (f"  frozen {fmt_count(p.frozen)}" if p.frozen else ""),
                f"  tokens       per step {fmt_count(t.per_step)}  total {fmt_count(t.total)}"
                f"  (E[T] = {t.per_example:.1f} per example)",
                f"  FLOPs/step   {fmt_flops(f.per_step)} = 6ND {fmt_flops(f.six_nd_per_step)}"
                + (f" + 2ND frozen {fmt_flops(f.frozen_2nd_per_step)}" if f.frozen_2nd_per_step else "")
                + f" + attention {fmt_flops(f.attention_per_step)}",
                f"  FLOPs total  {fmt_flops(f.total)} = 6ND {fmt_flops(f.six_nd_total)}"
                + (f" + 2ND frozen {fmt_flops(f.frozen_2nd_total)}" if f.frozen_2nd_total else "")
                + f" + attention {fmt_flops(f.attention_total)}",
                f"  memory/rank  ~{fmt_bytes(m.total)} (estimate; {precision} compute, sharded over {m.shards},"
                f" micro {m.micro_batch} x T {m.seq_len}{', act. ckpt' if m.activation_checkpointing else ''})",
                f"               params {fmt_bytes(m.params)}  grads {fmt_bytes(m.grads)}"
                f"  optimizer {fmt_bytes(m.optimizer)}  gathered {fmt_bytes(m.gathered)}"
                f"  activations {fmt_bytes(m.activations)}",
            ]
        out += ["", "launch", f"  {self.launch.torchrun}"]
        if self.nodes > 1 or self.device == "cuda":
            out += [
                "",
                "sbatch",
                *(f"  {line}".rstrip() for line in self.launch.sbatch.rstrip("\n").split("\n")),
            ]
        return "\n".join(out)


def _memory_hint(m: Memory) -> str:
    """What would shrink the largest part of a stage's memory per rank."""
    state = m.params + m.grads + m.optimizer
    if m.activations >= max(state, m.gathered):
        fixes = "lower batch.micro (gradients accumulate)"
        if not m.activation_checkpointing:
            fixes += " or set distributed.activation_checkpointing: true"
        return f"activations are the largest part ({fmt_bytes(m.activations)}): {fixes}"
    if state >= m.gathered:
        return (
            f"parameters, gradients and optimizer state are the largest part ({fmt_bytes(state)}, sharded "
            f"over {m.shards}): shard them over more ranks (resources), or train a smaller model"
        )
    return (
        f"gathered parameters are the largest part ({fmt_bytes(m.gathered)}): keep "
        "distributed.reshard_after_forward: true, or train a smaller model"
    )


def plan_stage(stage: TrainStage, resources: Resources) -> StagePlan:
    """Parameters, expected tokens, FLOPs and memory per rank of one training stage."""
    cfg = stage.model
    vocab = stage_vocab_size(stage)
    params = count_params(cfg, vocab)
    mean_t, mean_t_t1 = stage.data.length_stats("train")
    batch = stage.batch.global_
    steps = stage.schedule.steps
    per_rank = batch // resources.world
    micro = stage.batch.micro or per_rank

    tokens_per_step = batch * mean_t
    six_nd = training_flops(params.active, tokens_per_step)
    attention = attention_flops(cfg, batch * mean_t_t1)
    return StagePlan(
        kind=stage.kind,
        model=cfg.kind,
        vocab_size=vocab,
        steps=steps,
        global_batch=batch,
        micro_batch=micro,
        grad_accumulation=per_rank // micro,
        params=params,
        tokens=Tokens(per_example=mean_t, per_step=tokens_per_step, total=tokens_per_step * steps),
        flops=Flops(
            six_nd_per_step=six_nd,
            attention_per_step=attention,
            per_step=six_nd + attention,
            six_nd_total=six_nd * steps,
            attention_total=attention * steps,
            total=(six_nd + attention) * steps,
        ),
        memory_per_rank=memory_per_rank(stage, resources, params, vocab),
    )


def _vit_of(spec: Spec, ref: object) -> ViT | None:
    """The ViT config a weights reference points to, when the spec knows it (None for a bare checkpoint)."""
    name = getattr(ref, "stage", None) or getattr(ref, "random", None)
    return spec.stages[name].model if name else None


def plan_video_stage(stage: TrainStage | ProbeStage, spec: Spec, resources: Resources) -> StagePlan:
    """A masked-video training stage or a probe stage, by SALT's accounting (App. E; docs/papers/salt.md).

    With T tokens per clip, B clips per step and m mask generators: the encoder sees D_e = m·0.1·B·T
    tokens, the predictor D_p = m·B·T (context plus mask tokens), a frozen teacher or EMA target D_t = B·T.
    A probe stage runs its encoder frozen on B·T tokens and trains the probe on them.
    """
    batch, steps = stage.batch.global_, stage.schedule.steps
    per_rank = batch // resources.world
    micro = stage.batch.micro or per_rank
    attn = 0.0
    unplanned = None
    if isinstance(stage, ProbeStage):
        vit = _vit_of(spec, stage.encoder)
        if vit is None:
            unplanned = (
                f"encoder {{checkpoint: {stage.encoder.checkpoint}}} takes its shape from its done.json"
                " at run time; params, FLOPs and memory not counted"
            )
        T = vit.tokens if vit else 0
        classes = probe_classes(stage.probe, stage.data.num_classes)
        trained = probe_params(stage.probe, vit.dim, classes) if vit else 0
        frozen = vit_params(vit) if vit else 0
        six_nd = training_flops(trained, batch * T)
        frozen_2nd = forward_flops(frozen, batch * T)
        if vit:
            attn = bidirectional_attention_flops(vit.dim, vit.depth, T) * batch
            attn += 3 * bidirectional_attention_flops(vit.dim, stage.probe.depth, T) * batch
        model, block, embedding = (
            "attentive_probe",
            vit_block_params(vit.dim, int(vit.dim * stage.probe.mlp_ratio)) if vit else 0,
            0,
        )
        act_tokens, act_dim, act_depth = T, vit.dim if vit else 0, stage.probe.depth
    else:
        vit, obj = stage.model, stage.objective
        T, m = vit.tokens, len(obj.masks.masks)
        if obj.kind == "pixel_reconstruction":
            target, out_dim = None, vit.patch_dim
        elif obj.kind == "latent_prediction":
            target = _vit_of(spec, obj.teacher)
            out_dim = target.dim if target else vit.dim
        else:
            target, out_dim = vit, vit.dim
        enc, pred = vit_params(vit), predictor_params(stage.predictor, vit.dim, out_dim)
        trained, frozen = enc + pred, vit_params(target) if target else 0
        d_e, d_p, d_t = m * JEPA_CONTEXT_RATIO * batch * T, m * batch * T, batch * T
        six_nd = training_flops(enc, d_e) + training_flops(pred, d_p)
        frozen_2nd = forward_flops(frozen, d_t)
        pc = stage.predictor
        ctx_len = JEPA_CONTEXT_RATIO * T
        attn = (
            3
            * m
            * batch
            * (
                bidirectional_attention_flops(vit.dim, vit.depth, ctx_len)
                + bidirectional_attention_flops(pc.dim, pc.depth, T)
            )
        )
        if target:
            attn += bidirectional_attention_flops(target.dim, target.depth, T) * batch
        model, block, embedding = (
            f"vit{'-' + vit.size if vit.size else ''}",
            vit_block_params(vit.dim, vit.mlp),
            vit.patch_dim * vit.dim + vit.dim,
        )
        act_tokens, act_dim, act_depth = T, vit.dim, vit.depth + pc.depth  # predictor sees all T per mask
    total = six_nd + frozen_2nd + attn
    return StagePlan(
        kind=stage.kind,
        model=model,
        vocab_size=None,
        steps=steps,
        global_batch=batch,
        micro_batch=micro,
        grad_accumulation=per_rank // micro,
        params=ParamCount(
            total=trained,
            active=trained,
            embedding=embedding,
            largest_block=block,
            root=embedding,
            frozen=frozen,
        ),
        tokens=Tokens(per_example=T, per_step=batch * T, total=batch * T * steps),
        flops=Flops(
            six_nd_per_step=six_nd,
            attention_per_step=attn,
            per_step=total,
            six_nd_total=six_nd * steps,
            attention_total=attn * steps,
            total=total * steps,
            frozen_2nd_per_step=frozen_2nd,
            frozen_2nd_total=frozen_2nd * steps,
        ),
        memory_per_rank=_memory(
            stage,
            resources,
            trained=trained,
            frozen=frozen,
            gathered_params=2 * block,
            seq_len=act_tokens,
            dim=act_dim,
            depth=act_depth,
        ),
        unplanned=unplanned,
    )


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
        stages={
            name: plan_stage(stage, res)
            if isinstance(stage, TrainStage) and stage.model.kind == "transformer"
            else plan_video_stage(stage, spec, res)
            for name, stage in spec.stages.items()
        },
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


# ----------------------------------------------------------------------------- formatting


def _three_digits(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def fmt_count(n: float) -> str:
    """A count with three significant digits and a K/M/B/T suffix: 950, 12.3M, 1.01B; 3.07e21 past 999T."""
    if abs(n) < 1000:
        return f"{n:.0f}" if float(n).is_integer() else f"{n:.3g}"
    if abs(n) >= 999.5e12:
        return fmt_flops(n)
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale * 0.9995:
            return _three_digits(n / scale) + unit
    raise AssertionError("unreachable")


def fmt_flops(x: float) -> str:
    """FLOPs in compact scientific notation: 1.23e15."""
    if x == 0:
        return "0"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def fmt_bytes(n: float) -> str:
    """Bytes in binary units with three significant digits: 512 B, 3.25 MiB, 12.1 GiB."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{_three_digits(n / scale)} {unit}"
    return f"{n:.0f} B"
