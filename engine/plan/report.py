"""The plan's record and its rendering: per stage parameters, tokens, FLOPs and memory, and the launch commands."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from schemas.models import ParamCount, StepFlops
from schemas.spec import ACCELERATOR_MEMORY_GIB

from .launch import Launch
from .memory import Memory


@dataclass(frozen=True)
class Tokens:
    """Tokens the stage trains on (expected, from the data's length distribution)."""

    per_example: float
    per_step: float
    total: float


@dataclass(frozen=True)
class Flops:
    """Training FLOPs of a stage: 6·N·D, 2·N·D of frozen forward passes (teacher, EMA target, probed encoder)
    and attention scores, per step and in total. `papers_*` follow the papers' convention (6·N·D + 2·N·D,
    no attention); `per_step` and `total` include attention, as the logged `flops` do."""

    six_nd_per_step: float
    attention_per_step: float
    per_step: float
    six_nd_total: float
    attention_total: float
    total: float
    frozen_2nd_per_step: float
    frozen_2nd_total: float
    papers_per_step: float
    papers_total: float

    @classmethod
    def of(cls, step: StepFlops, steps: int) -> Flops:
        """One step's FLOPs and `steps` of them."""
        papers = step.six_nd + step.frozen_2nd
        return cls(
            six_nd_per_step=step.six_nd,
            attention_per_step=step.attention,
            per_step=step.total,
            six_nd_total=step.six_nd * steps,
            attention_total=step.attention * steps,
            total=step.total * steps,
            frozen_2nd_per_step=step.frozen_2nd,
            frozen_2nd_total=step.frozen_2nd * steps,
            papers_per_step=papers,
            papers_total=papers * steps,
        )


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
    inference: dict[str, dict[str, float]] | None = None  # evaluate stages: per model, params, tokens, FLOPs
    rl: dict[str, float] | None = None  # rl stages: one step's sequences, tokens and FLOPs by phase
    # probe stages with a fixed labelled set: its clips (labelled, train, validation), the epochs the steps
    # make of the training clips, and the FLOPs of encoding the set once (not in the per-step FLOPs)
    pool: dict[str, float] | None = None


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
            if s.inference is not None:
                out += ["", f"stage {name} ({s.kind}): {len(s.inference)} model(s), no training"]
                for label, inf in s.inference.items():
                    if not inf["params"]:
                        out.append(f"  {label:<12} a checkpoint: its size is known when it loads")
                        continue
                    out.append(
                        f"  {label:<12} params active {fmt_count(inf['params'])}  inference tokens"
                        f" ~{fmt_count(inf['tokens'])}  FLOPs ~{fmt_flops(inf['flops'])} (2·N per token)"
                    )
                continue
            out += [
                "",
                f"stage {name} ({s.kind}, {s.model}{f', vocab {s.vocab_size}' if s.vocab_size else ''}): "
                f"{s.steps} steps, batch {s.global_batch}"
                f" global, {s.micro_batch} micro x {s.grad_accumulation} accumulation",
            ]
            if s.pool is not None:
                out.append(_pool_line(s))
            if s.unplanned:
                out.append(f"  not planned  {s.unplanned}")
                continue
            out += [
                f"  params       total {fmt_count(p.total)}  active {fmt_count(p.active)}"
                f"  embedding {fmt_count(p.embedding)}  largest block {fmt_count(p.largest_block)}"
                + (f"  frozen {fmt_count(p.frozen)}" if p.frozen else ""),
                f"  tokens       per step {fmt_count(t.per_step)}  total {fmt_count(t.total)}"
                f"  (E[T] = {t.per_example:.1f} per example)",
                f"  FLOPs/step   {fmt_flops(f.per_step)} with attention (as logged) = 6ND"
                f" {fmt_flops(f.six_nd_per_step)}"
                + (f" + 2ND frozen {fmt_flops(f.frozen_2nd_per_step)}" if f.frozen_2nd_per_step else "")
                + f" + attention {fmt_flops(f.attention_per_step)}",
            ]
            if s.rl is not None:
                r = s.rl
                out.append(
                    f"  RL step      {r['sequences']:.0f} sequences, ~{fmt_count(r['tokens'])} tokens: rollout"
                    f" ~{fmt_flops(r['rollout_flops'])} (2N per token) + {r['scoring_forwards']:.0f} scoring"
                    f" forward(s) ~{fmt_flops(r['scoring_flops'])} + {r['updates']:.0f} update(s)"
                    f" ~{fmt_flops(r['update_flops'])} (6N per token)"
                )
            out += [
                f"  FLOPs total  {fmt_flops(f.papers_total)} papers' {'6ND + 2ND' if f.frozen_2nd_total else '6ND'}"
                f" (no attention); {fmt_flops(f.total)} with attention",
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


def _pool_line(s: StagePlan) -> str:
    """A fixed labelled set: its clips, the epochs the steps make of them, what encoding it once costs."""
    p = s.pool
    held = f" ({p['train']:.0f} train + {p['validation']:.0f} validation)" if p["validation"] else ""
    if s.steps:
        walk = f"{s.steps} steps x {s.global_batch} / {p['train']:.0f} = {p['epochs']:.3g} epochs"
    else:
        walk = "no training steps"
    encode = f"; encoded once, {fmt_flops(p['encode_flops'])} FLOPs" if p["encode_flops"] else ""
    return f"  labelled     {p['labelled']:.0f} clips{held}: {walk}{encode}"


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
