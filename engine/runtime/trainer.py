"""The training loop of one stage: build, shard, resume, step, evaluate, checkpoint, write final/."""

from __future__ import annotations

import logging
import math
import os
import signal
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from torch.distributed.fsdp import FSDPModule

from engine import registry
from engine.data.stream import Stream
from engine.objectives.base import Objective
from engine.runtime.loader import Prefetched, resolve_workers
from schemas.spec import ProbeStage, Spec, TrainStage
from schemas.training import AdamW, Schedule

from . import rundir, summary, watchdog
from .checkpoint import Checkpointer, final_intact, load_final, read_json, save_final, write_json
from .context import BuildContext
from .distributed import Dist, LaunchError
from .evaluate import write_results
from .malloc import keep_freed_memory
from .metrics import Metrics
from .parallel import autocast, bf16
from .signals import Aborted, Preemption

log = logging.getLogger("engine")


class NonFiniteLoss(RuntimeError):
    """The loss or gradient norm became NaN/inf; the stage stops and the last good checkpoint stays."""


class Preempted(RuntimeError):
    """A preemption signal was honoured: a checkpoint was written and the job exits."""

    def __init__(self, signum: int, step: int, cause: str = ""):
        super().__init__(
            f"{cause or f'signal {signum} received'}: checkpoint written at step {step}; "
            "rerun the same command to resume"
        )
        self.signum, self.step = signum, step


# ----------------------------------------------------------------------------- pieces


def lr_factor(s: Schedule, step: int) -> float:
    """Learning-rate multiplier at (0-based) `step`: linear warmup, then cosine / linear / constant decay."""
    if step < s.warmup:
        return s.warmup_start + (1.0 - s.warmup_start) * (step + 1) / s.warmup
    p = min(1.0, (step - s.warmup) / max(1, s.steps - s.warmup))
    if s.decay == "cosine":
        return s.min_lr + (1.0 - s.min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
    if s.decay == "linear":
        return s.min_lr + (1.0 - s.min_lr) * (1.0 - p)
    return 1.0


def weight_decay_at(cfg: Any, s: Schedule, step: int) -> float:
    """Weight decay at `step`: constant, or a cosine ramp from weight_decay to weight_decay_end."""
    end = getattr(cfg, "weight_decay_end", None)
    if end is None:
        return cfg.weight_decay
    p = min(1.0, step / max(1, s.steps))
    return end + (cfg.weight_decay - end) * 0.5 * (1.0 + math.cos(math.pi * p))


def build_optimizer(cfg: Any, modules: dict[str, nn.Module]) -> torch.optim.Optimizer:
    """AdamW or SGD; weight decay on parameters with >= 2 dims only (not biases, norms, gains)."""
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay, "decay": True},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "decay": False},
    ]
    groups = [g for g in groups if g["params"]]
    if isinstance(cfg, AdamW):
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def scalars(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Flatten metric tensors to floats: a vector `name` [E] becomes `name/0..E-1` plus `name/max_over_mean`."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        v = v.detach().float().cpu()
        if v.numel() == 1:
            out[k] = v.item()
        else:
            out.update({f"{k}/{i}": x for i, x in enumerate(v.flatten().tolist())})
            out[f"{k}/max_over_mean"] = (v.max() / v.mean()).item()  # 1.0 = perfectly balanced
    return out


def stage_seed(seed: int, stage: str) -> int:
    """Model-init seed of a stage: derived from the run seed and the stage name."""
    return (seed * 1_000_003 + zlib.crc32(stage.encode())) % (2**63)


@dataclass
class StepStats:
    """What one optimizer step reports, summed over ranks (the loss averaged)."""

    loss: float
    stop: bool
    examples: float
    tokens: float
    flops: float  # all of them, attention included
    attention: float
    abort: bool = False  # stop without writing (rank 0 lost the run directory's lease)


@dataclass
class Window:
    """Sums over the steps since the last log line."""

    steps: int = 0
    loss: float = 0.0
    tokens: float = 0.0
    examples: float = 0.0
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)

    def add(self, stats: StepStats, metrics: dict[str, torch.Tensor]) -> None:
        """Accumulate one step (metric tensors stay on their device until the log step)."""
        self.steps += 1
        self.loss += stats.loss
        self.tokens += stats.tokens
        self.examples += stats.examples
        for k, v in metrics.items():
            self.metrics[k] = self.metrics.get(k, 0) + v


@dataclass
class Counters:
    """Cumulative totals carried across resumes (saved in train_state.json)."""

    tokens: float = 0.0
    examples: float = 0.0
    flops: float = 0.0
    attention_flops: float = 0.0


# ----------------------------------------------------------------------------- the stage


class StageRunner:
    """Runs one stage (train or probe) end to end on this rank."""

    def __init__(self, spec: Spec, name: str, stage: TrainStage | ProbeStage, dist: Dist):
        self._place(spec, name, stage, dist)
        self.micro = stage.batch.micro or self.per_rank
        if self.per_rank % self.micro:
            raise LaunchError(
                f"stages.{name}.batch.micro={self.micro} does not divide the per-rank batch {self.per_rank} "
                f"with {dist.world} ranks; pick a divisor"
            )

    def _place(self, spec: Spec, name: str, stage: Any, dist: Dist, unit: str = "examples") -> None:
        """The stage, its directory, and this rank's share of the global batch (of `unit`), which must divide."""
        self.spec, self.name, self.stage, self.dist = spec, name, stage, dist
        self.output = spec.run.output.rstrip("/")
        self.url = f"{self.output}/{name}"
        world = dist.world
        if stage.batch.global_ % world:
            raise LaunchError(
                f"stages.{name}.batch.global={stage.batch.global_} ({unit}) is not divisible by the {world} ranks "
                f"launched; launch a world size that divides it or override stages.{name}.batch.global"
            )
        self.per_rank = stage.batch.global_ // world
        self.steps = stage.schedule.steps if stage.schedule is not None else 0  # a knn probe has no schedule

    def done(self) -> bool:
        """Whether the stage already finished: final/done.json exists and final/ is intact (verified; a
        damaged final/ is reported and set aside, and the stage re-runs from its newest intact checkpoint)."""
        return final_intact(f"{self.url}/final", self.dist, self.name)

    def build(self) -> None:
        """Generator, model (seeded init or `init` weights), sharding, objective, optimizer, evals."""
        st, dist = self.stage, self.dist
        ctx = BuildContext(self.spec, self.name, st, dist)
        self.gen = registry.build_data(st.data)
        if hasattr(self.gen, "report_to"):  # generators that skip bad inputs list them in the stage directory
            self.gen.report_to(self.url, dist.rank)
        torch.manual_seed(stage_seed(self.spec.run.seed, self.name))
        self.sharded = dist.distributed and st.distributed.fsdp
        self.objective: Objective = registry.build_stage_objective(st, ctx)
        group = self.objective.batch_group
        if group:  # a micro-batch holds examples of one group (e.g. clips whose masks are trimmed together)
            if st.batch.micro is None:
                self.micro = math.gcd(self.per_rank, group)
            elif group % self.micro:
                raise LaunchError(
                    f"stages.{self.name}.batch.micro={self.micro} does not divide the objective's group of "
                    f"{group} examples; set batch.micro to a divisor of {math.gcd(self.per_rank, group)}"
                )
        self.models = self.objective.models  # what checkpoints and final/ hold
        self.params = [
            p for m in self.objective.trainable().values() for p in m.parameters() if p.requires_grad
        ]
        # nothing to train (a knn probe, which has no steps either): no optimizer
        self.optim = build_optimizer(st.optim, self.objective.trainable()) if self.params else None
        stream = Stream(
            self.gen,
            self.spec.run.seed,
            st.clip_key(self.name),
            dist.rank,
            self.per_rank,
            dist.world,
            augment=self.objective.augment,
            group=group,
        )
        self._attach(st.data, self.objective.stream(stream))

    def _attach(self, data_cfg: Any, stream: Stream) -> None:
        """What every stage runner builds last: the evaluators over `data_cfg`, the batch stream, the checkpointer."""
        st, dist = self.stage, self.dist
        self.evals = [
            registry.build_eval(
                e,
                gen=self.gen,
                data_cfg=data_cfg,
                seed=self.spec.run.seed,
                stage=st.clip_key(self.name),
                dist=dist,
            )
            for e in st.evals
        ]
        self.last_by_eval: list[dict[str, float]] = [{} for _ in self.evals]  # each evaluator's last results
        self.stream, self.data_cfg = stream, data_cfg
        ckpt_url = st.checkpoint.url or f"{self.url}/checkpoints"
        self.ckpt = Checkpointer(ckpt_url, st.checkpoint.keep_last, dist, name=self.name)

    def train_state(self, step: int, c: Counters, elapsed: float) -> dict[str, Any]:
        """What train_state.json records besides the step."""
        return {"stage": self.name, "step": step, "elapsed_s": elapsed, **c.__dict__}

    def run(self, preemption: Preemption) -> dict[str, float]:
        """Train the stage (resuming if a checkpoint exists) and write final/; return the last eval metrics."""
        st, dist = self.stage, self.dist
        torch.use_deterministic_algorithms(st.distributed.deterministic, warn_only=True)
        if dist.device.type == "cpu":
            keep_freed_memory()
        self.build()
        counters, start, elapsed0 = Counters(), 0, 0.0
        state = self.ckpt.restore(self.models, self.optim)
        if state is not None:
            start, elapsed0 = int(state["step"]), float(state.get("elapsed_s", 0.0))
            counters = Counters(**{k: float(state[k]) for k in Counters.__dataclass_fields__ if k in state})
            log.info("%s: resumed from step %d", self.name, start)
        metrics = Metrics(
            self.url,
            dist.main,
            st.logging.tensorboard,
            st.logging.console,
            self.name,
            self.steps,
            start=start,  # rows logged after the checkpoint resumed from are dropped
        )
        if start == 0:
            metrics.text("example", self.gen.render(self.stream.batch(0)[0]), 0)
        self.stream = self._prefetch(self.stream, start, lambda: bool(preemption.requested))

        window = Window()
        t_start = time.perf_counter()
        last_eval: dict[str, float] = {}
        for model in self.objective.trainable().values():
            model.train()

        for step in range(start, self.steps):
            lr = st.optim.lr * lr_factor(st.schedule, step)
            wd = weight_decay_at(st.optim, st.schedule, step)
            for g in self.optim.param_groups:
                g["lr"] = lr
                if g["decay"]:
                    g["weight_decay"] = wd
            stats, mets, gnorm = self._step(step, preemption)
            done = step + 1
            if stats.abort:  # another job owns the run directory now: write nothing more
                metrics.close()
                raise Aborted(preemption.abort or "rank 0 lost the run directory's lease")
            self.objective.after_step(done)
            counters.tokens += stats.tokens
            counters.examples += stats.examples
            counters.flops += stats.flops
            counters.attention_flops += stats.attention
            window.add(stats, mets)

            logged = done % st.logging.every == 0 or done == self.steps
            if logged:
                self._log(metrics, done, window, lr, gnorm, counters)
            every = st.logging.images_every
            if every and self.objective.shows_images and (done % every == 0 or done == self.steps):
                self._images(metrics, done)
            for i, (ev, cfg) in enumerate(zip(self.evals, st.evals, strict=True)):
                if done % cfg.every == 0 or done == self.steps:
                    self.last_by_eval[i] = self._evaluate(ev, done, metrics)
                    last_eval.update(self.last_by_eval[i])
            elapsed = elapsed0 + time.perf_counter() - t_start
            if stats.stop:
                if not preemption.requested:  # another rank asked: was it for the launcher we share?
                    watchdog.check_now()
                self.ckpt.save(done, self.models, self.optim, self.train_state(done, counters, elapsed))
                metrics.close()
                raise Preempted(preemption.requested or signal.SIGTERM, done, preemption.cause)
            if done % st.checkpoint.every == 0 or done == self.steps:  # the last: a run can be extended
                self.ckpt.save(done, self.models, self.optim, self.train_state(done, counters, elapsed))
            if logged:  # the next window starts now: eval and checkpoint time is not training throughput
                window = Window()

        self.close()  # no more training batches: the workers' memory goes back before the last evaluations
        for i, ev in enumerate(self.evals):  # evaluators that no step ran (a stage of 0 steps) run now
            if not self.last_by_eval[i]:
                self.last_by_eval[i] = self._evaluate(ev, self.steps, metrics)
                last_eval.update(self.last_by_eval[i])
        elapsed = elapsed0 + time.perf_counter() - t_start
        done_info = {
            **self.train_state(self.steps, counters, elapsed),
            "model": st.final_model.model_dump(mode="json"),
            "metrics": last_eval,
        }
        results = self.objective.results(last_eval)
        if results is not None and dist.main:
            write_json(f"{self.url}/results.json", results)
        if dist.main and all(self.last_by_eval):
            write_results(
                self.url, self.name, st.evals, self.evals, [{self.name: r} for r in self.last_by_eval]
            )
        save_final(f"{self.url}/final", self.models, done_info, dist)
        metrics.close()
        return last_eval

    def _prefetch(self, stream: Any, start: int, stopping: Any) -> Prefetched:
        """The stream of steps start.. drawn ahead by the data config's worker processes (`data.workers`);
        `stopping()` says whether the job was asked to stop (then a worker's end is no error)."""
        data, device = self.data_cfg, self.dist.device
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        workers = resolve_workers(getattr(data, "workers", 0), device, local_world)
        if not isinstance(stream, Stream):  # a probe's labelled set, in memory: taking its rows costs nothing
            workers = 0
        prefetch = getattr(data, "prefetch", 2)
        if workers and self.dist.main:
            log.info("%s: %d data worker(s) per rank, %d batch(es) ahead each", self.name, workers, prefetch)
        return Prefetched(stream, start, self.steps, workers, prefetch, device.type == "cuda", stopping)

    def close(self) -> None:
        """Stop the stage's data workers, if any (after it ends, however it ends)."""
        close = getattr(getattr(self, "stream", None), "close", None)
        if close is not None:
            close()

    def evaluate(self) -> dict[str, float]:
        """Run the stage's evaluators on its final weights, without training, and write their results files
        (`engine evaluate`); metrics.jsonl is left as the training wrote it."""
        st, dist = self.stage, self.dist
        if not st.evals:
            raise LaunchError(f"stage {self.name} has no evaluators; add some to stages.{self.name}.evals")
        if not self.done():
            raise LaunchError(
                f"stage {self.name} has not finished ({self.url}/final/done.json does not exist); run it first: "
                f"python -m engine SPEC --stage {self.name}"
            )
        self.build()
        options = StateDictOptions(full_state_dict=True)
        for key, model in self.models.items():
            if model.state_dict():  # a model without state (a kNN probe) has nothing to load
                set_model_state_dict(model, load_final(f"{self.url}/final", key), options=options)
            model.eval()
        out: dict[str, float] = {}
        for i, ev in enumerate(self.evals):
            with autocast(st.distributed, dist, self.sharded):
                self.last_by_eval[i] = ev(self.objective, self.steps)
            out.update(self.last_by_eval[i])
        if dist.main:
            write_results(
                self.url, self.name, st.evals, self.evals, [{self.name: r} for r in self.last_by_eval]
            )
        return out

    def _nonfinite(self, what: str, value: float, step: int) -> str:
        steps = self.ckpt.complete()
        kept = (
            f"the last good checkpoint (step {steps[-1]}) is kept"
            if steps
            else "no checkpoint was written yet"
        )
        return (
            f"stage {self.name}: non-finite {what} ({value}) at step {step + 1}; the step was not applied and {kept}. "
            "Lower optim.lr, add warmup, or set optim.grad_clip"
        )

    def _step(self, step: int, preemption: Preemption) -> tuple[StepStats, dict[str, torch.Tensor], float]:
        """One optimizer step: micro-batches forward/backward, one collective, checks, clip, update.

        Each micro-batch's loss is weighted by its loss terms (`Objective.loss_weight`, e.g. answer tokens) and
        the gradients are divided by the step's total over all ranks, which the step's one collective brings:
        the gradient is the mean over the global batch, the same for every world size and micro-batch size.
        """
        st, dist = self.stage, self.dist
        examples = self.stream.batch(step)
        accum = self.per_rank // self.micro
        micros = [examples.slice(j * self.micro, (j + 1) * self.micro) for j in range(accum)]
        weights = [self.objective.loss_weight(mb) for mb in micros]
        loss_sum = torch.zeros((), device=dist.device)
        mets: dict[str, torch.Tensor] = {}
        for j, mb in enumerate(micros):
            if self.sharded:  # reduce-scatter gradients on the last micro-batch only
                for m in self.models.values():
                    if isinstance(m, FSDPModule):
                        m.set_requires_gradient_sync(j == accum - 1)
            # (a pinned batch's copy to the device has ended by the .item() below, before the batch is freed)
            with autocast(st.distributed, dist, self.sharded):
                loss, micro_mets = self.objective(self.objective.collate(mb, dist.device))
            (loss * weights[j]).backward()
            loss_sum += loss.detach().float() * weights[j]
            for k, v in micro_mets.items():
                mets[k] = mets.get(k, 0) + v.detach().float() / accum
        c = self.objective.count(examples)
        # One collective per step: weighted loss, loss terms, the stop flags, examples, tokens and FLOPs.
        local = [
            loss_sum.item(),
            sum(weights),
            float(preemption.requested != 0),
            c.examples,
            c.tokens,
            c.flops,
            c.attention_flops,
            float(bool(preemption.abort)),
        ]
        total = dist.all_reduce(torch.tensor(local, dtype=torch.float64)).tolist()
        terms = max(total[1], 1e-12)
        stats = StepStats(total[0] / terms, total[2] > 0, *total[3:7], abort=total[7] > 0)
        if not math.isfinite(stats.loss):
            raise NonFiniteLoss(self._nonfinite("loss", stats.loss, step))
        self._normalise_gradients(terms)
        clip = st.optim.grad_clip if st.optim.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip, foreach=True)
        gnorm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        if not math.isfinite(gnorm):
            raise NonFiniteLoss(self._nonfinite("gradient norm", gnorm, step))
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        return stats, mets, gnorm

    def _normalise_gradients(self, terms: float) -> None:
        """Turn the summed, weighted gradients into the mean over the step's `terms` loss terms on all ranks.

        FSDP2 has averaged the sharded gradients over the ranks already; unsharded models on several ranks
        (`distributed.fsdp: false`) are summed here.
        """
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return
        if self.sharded:
            scale = self.dist.world / terms
        else:
            if self.dist.distributed:
                for g in grads:
                    torch.distributed.all_reduce(g)
            scale = 1.0 / terms
        torch._foreach_mul_(grads, scale)

    def _log(self, metrics: Metrics, step: int, w: Window, lr: float, gnorm: float, c: Counters) -> None:
        secs = time.perf_counter() - w.t0
        # Objective metrics are per-rank means over the window; average them over ranks too.
        local = scalars({k: v / w.steps for k, v in w.metrics.items()})
        keys = sorted(local)
        vec = (
            self.dist.all_reduce(torch.tensor([local[k] for k in keys], dtype=torch.float64))
            / self.dist.world
        )
        values: dict[str, float] = {"loss": w.loss / w.steps, **dict(zip(keys, vec.tolist(), strict=True))}
        values.update(
            lr=lr,
            grad_norm=gnorm,
            tokens=c.tokens,
            examples=c.examples,
            flops=c.flops,
            attention_flops=c.attention_flops,
            tokens_per_s=w.tokens / secs,
            examples_per_s=w.examples / secs,
            step_time_s=secs / w.steps,
        )
        metrics.write(step, values)
        metrics.progress(step, values, eta_s=(self.steps - step) * secs / w.steps)

    def _images(self, metrics: Metrics, step: int) -> None:
        """The objective's images of this rank's first example of the step (every rank runs the forward)."""
        models = self.objective.trainable().values()
        for m in models:
            m.eval()
        with autocast(self.stage.distributed, self.dist, self.sharded):
            clip = self.stream.batch(step - 1).slice(0, 1)
            images = self.objective.images(self.objective.collate(clip, self.dist.device))
        for m in models:
            m.train()
        for tag, image in images.items():
            metrics.image(tag, image, step)

    def _evaluate(self, ev: Any, step: int, metrics: Metrics) -> dict[str, float]:
        for m in self.models.values():
            m.eval()
        with autocast(self.stage.distributed, self.dist, self.sharded):
            out = ev(self.objective, step)
        for m in self.objective.trainable().values():
            m.train()
        metrics.write(step, out)
        if self.dist.main:
            shown = "  ".join(f"{k.removeprefix('acc/')} {v:.3f}" for k, v in out.items())
            log.info("%s  eval @ %d  %s", self.name, step, shown)
        return out


def prepare(spec: Spec, dist: Dist, accept: bool = False, argv: list[str] | None = None) -> dict[str, Any]:
    """Check the run directory against the spec on every rank, then (rank 0) apply accepted changes and write
    spec.yaml and its history. Raises RunDirConflict, before anything is written, when a stage that holds
    results was made by a different spec. Returns each stage's identity, recorded when the stage starts."""
    precision = {n: "bf16" if bf16(s.distributed, dist) else "fp32" for n, s in spec.stages.items()}
    states = rundir.check(spec, precision, accept)
    dist.barrier()  # every rank has read the directory before rank 0 changes it
    if dist.main:
        rundir.record(spec, states, list(argv or []))
    dist.barrier()
    return {s.name: s.identity for s in states}


def run_spec(
    spec: Spec,
    dist: Dist,
    only: str | None = None,
    identities: dict[str, Any] | None = None,
    accept: bool = False,
) -> dict[str, dict[str, float]]:
    """Run every stage in order (or only `only`), skipping completed ones; return each stage's final metrics.

    `identities` come from `prepare` (the CLI calls it first); without them the run directory is checked here.
    """
    if identities is None:
        identities = prepare(spec, dist, accept)
    results: dict[str, dict[str, float]] = {}
    with Preemption() as preemption:
        for name, stage in spec.stages.items():
            if only is not None and name != only:
                continue
            runner = registry.stage_runner(stage)(spec, name, stage, dist)
            if runner.done():
                log.info("%s: already complete (final/done.json exists); skipping", name)
                results[name] = read_json(f"{runner.url}/final/done.json").get("metrics", {})
                continue
            if dist.main:
                rundir.write_fingerprint(runner.url, identities[name])
            steps = getattr(getattr(stage, "schedule", None), "steps", 0)
            log.info("%s: starting (%d steps, world %d)", name, steps, dist.world)
            try:
                results[name] = runner.run(preemption)
            finally:
                getattr(runner, "close", lambda: None)()  # its data workers, if it has any
    if dist.main:  # the probe stages' results side by side (nothing for a run without probes)
        summary.write_summary(spec.run.output.rstrip("/"), list(spec.stages), spec.run.name)
    return results


def evaluate_stage(spec: Spec, dist: Dist, name: str) -> dict[str, float]:
    """Run the evaluators of stage `name` on its finished weights (an evaluate stage: run it again)."""
    stage = spec.stages[name]
    runner = registry.stage_runner(stage)(spec, name, stage, dist)
    return runner.evaluate()
