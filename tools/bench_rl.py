"""One GRPO iteration: ours against TRL's `GRPOTrainer`, side by side on CPU.

The setting is RL-Wall's GRPO stage (docs/papers/rl_wall.md) at random weights: a Qwen2 decoder (width 128,
SwiGLU MLP 512, 4 layers, 2 attention heads, 2 KV heads, RoPE, fp32) over the paper's 29-token vocabulary
`<unk> <bos> <pad> : S P C A I 0..19`. One iteration is a rollout of G = 8 samples for each of 32 prompts
(256 completions; prompts of 40-60 random vocabulary tokens, at most 64 new tokens, temperature 1.0), the
reference model's log-probs (KL coefficient 0.001, so a reference model is loaded), the old policy's
log-probs when there is more than one update per batch, then `--updates` optimizer steps (default 4, the
paper's updates per batch), each over all 256 completions (clip 0.2, learning rate 5e-5 constant, gradient clip
0.05, no entropy term; TRL's default loss_type "dapo" and group-scaled rewards). The reward is a
cheap deterministic function of the completion: 1 if its tokens include `S`, else 0 (`reward_has_s`).

Stop token: the authors end completions with `<pad>` (also their eos), so `<pad>` is the eos here too. A
random model samples it about once in 29 tokens, so most completions stop early, but with 256 sequences some
always run the full 64 tokens: every rollout decodes 64 steps, and log-probs and updates see 64-token
completions padded to the longest. The table prints TRL's mean completion length and the share cut at 64.

Ours is the engine's `rl` stage (`RLRunner`, built in this process): the same model shape over RL-Wall's own
29-token vocabulary, prompts from the solution_tree `rl` pool (46-66 tokens), the same sampling, clip, KL
(k3, 0.001), learning rate, gradient clip, updates and micro-batch; its reward is the data's verifier, so both
sides pay a cheap reward function. Its split is the runner's own clocks: rollout (generation and judging),
log-probs (scoring: old policy and reference), update (advantages aside, the optimizer steps).

TRL runs through its public `train()` (`max_steps` = `--updates`, one generation batch per call); the split
comes from timers wrapped around the trainer instance's own methods, TRL unchanged: rollout (`_generate`:
tokenize, `generate`, decode), log-probs (`_get_per_token_logps_and_entropies` under no_grad: reference and
old policy), update (the rest of the iteration: rewards, advantages, forward/backward, optimizer). The
iteration is timed from the first step's start to the last step's end (TrainerCallback), so `train()`'s own
set-up (dataloader, accelerate, scheduler) is shown apart as `train() overhead`. Rounds interleave the two
sides so that machine noise hits both; figures are ratios measured side by side on the same machine, not
absolute claims. `transformers` and `trl` come from the `bench` extra: pip install -e '.[bench]'.

    python tools/bench_rl.py [--rounds 3] [--threads 1] [--updates 4] [--micro 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

VOCAB = ["<unk>", "<bos>", "<pad>", ":", "S", "P", "C", "A", "I", *(str(i) for i in range(20))]
UNK, BOS, PAD = "<unk>", "<bos>", "<pad>"
EOS = PAD  # the authors' completions end with <pad>, their eos token


@dataclass(frozen=True)
class Setting:
    """The benchmark's shape, shared by both sides."""

    dim: int = 128
    mlp: int = 512
    depth: int = 4
    heads: int = 2
    kv_heads: int = 2
    prompts: int = 32
    group: int = 8  # samples per prompt (G)
    prompt_len: tuple[int, int] = (40, 60)  # prompt lengths, uniform, inclusive (at most 64)
    max_prompt: int = 64
    max_new: int = 64
    temperature: float = 1.0
    clip: float = 0.2
    kl: float = 0.001
    lr: float = 5e-5
    grad_clip: float = 0.05
    updates: int = 4  # optimizer steps per generation batch (TRL's num_iterations), RL-Wall's 4
    micro: int = 64  # completions per forward/backward (gradient accumulation: 256 / micro)

    @property
    def completions(self) -> int:
        return self.prompts * self.group


def prompt_texts(s: Setting, seed: int) -> list[str]:
    """`s.prompts` prompts of random non-special vocabulary tokens, space-separated."""
    rng = np.random.default_rng(seed)
    words = VOCAB[3:]
    lo, hi = s.prompt_len
    return [" ".join(rng.choice(words, size=int(rng.integers(lo, hi + 1)))) for _ in range(s.prompts)]


def reward_has_s(completions: list[str], **_: Any) -> list[float]:
    """1.0 for a completion whose tokens include `S`, else 0.0 (TRL passes decoded text, specials skipped)."""
    return [1.0 if "S" in c.split() else 0.0 for c in completions]


# --- TRL -----------------------------------------------------------------------------------------------


def tokenizer():
    """A WordLevel tokenizer over the 29 tokens, whitespace pre-tokenized, no BOS added (as the authors')."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with single spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=UNK, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left"
    )


class _Split:
    """Wall-clock timers wrapped around a GRPOTrainer instance's methods (TRL's code is not changed)."""

    def __init__(self, trainer) -> None:
        from transformers import TrainerCallback

        self.rollout = self.logps = 0.0
        self.begin: float | None = None
        self.end = 0.0
        self.metrics: dict[str, list[float]] = {}  # TRL's, copied before train()'s final log() clears them
        generate, logps = trainer._generate, trainer._get_per_token_logps_and_entropies

        def timed_generate(*a, **k):
            t0 = time.perf_counter()
            try:
                return generate(*a, **k)
            finally:
                self.rollout += time.perf_counter() - t0

        def timed_logps(*a, **k):
            if torch.is_grad_enabled():  # the training forward: part of the update
                return logps(*a, **k)
            t0 = time.perf_counter()
            try:
                return logps(*a, **k)
            finally:
                self.logps += time.perf_counter() - t0

        split = self

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if split.begin is None:
                    split.begin = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                split.end = time.perf_counter()
                split.metrics = {k: list(v) for k, v in trainer._metrics["train"].items()}

        trainer._generate = timed_generate
        trainer._get_per_token_logps_and_entropies = timed_logps
        trainer.add_callback(Clock())

    def reset(self) -> None:
        self.rollout = self.logps = 0.0
        self.begin = None
        self.metrics = {}


def trl_setup(tmpdir: str | Path, seed: int, s: Setting = Setting()):
    """A GRPOTrainer on a random tiny Qwen2 saved under `tmpdir` (TRL loads the reference model from there)."""
    import transformers
    from datasets import Dataset
    from transformers import PrinterCallback, Qwen2Config, Qwen2ForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 renames gradient_checkpointing
    tok = tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(VOCAB),
        hidden_size=s.dim,
        intermediate_size=s.mlp,
        num_hidden_layers=s.depth,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        max_position_embeddings=s.max_prompt + s.max_new,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    path = Path(tmpdir) / "qwen2-rlwall"
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    if s.completions % s.micro:
        raise ValueError(f"--micro {s.micro} does not divide {s.completions} completions")
    args = GRPOConfig(
        output_dir=str(Path(tmpdir) / "out"),
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,  # GRPOConfig's default is True; on CPU it only recomputes
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=seed,
        max_steps=s.updates,  # one train() call = one generation batch and its `updates` optimizer steps
        per_device_train_batch_size=s.micro,
        gradient_accumulation_steps=s.completions // s.micro,  # one optimizer step = all 256 completions
        num_generations=s.group,
        num_iterations=s.updates,
        max_completion_length=s.max_new,  # TRL 1.x has no max_prompt_length: prompts are at most 60 tokens
        temperature=s.temperature,
        top_p=1.0,
        top_k=0,
        beta=s.kl,
        epsilon=s.clip,
        learning_rate=s.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=s.grad_clip,
        use_vllm=False,
        log_completions=False,
    )
    data = Dataset.from_list([{"prompt": p} for p in prompt_texts(s, seed)])
    trainer = GRPOTrainer(
        model=str(path), reward_funcs=reward_has_s, args=args, train_dataset=data, processing_class=tok
    )
    trainer.remove_callback(PrinterCallback)  # it prints train()'s final metrics every call
    trainer._bench_split = _Split(trainer)
    return trainer


def trl_step(trainer) -> dict[str, float]:
    """One GRPO iteration through `trainer.train()`: seconds of the iteration, its split and train()'s set-up."""
    split: _Split = trainer._bench_split
    split.reset()
    trainer._metrics["train"].clear()
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    it = split.end - split.begin
    m = split.metrics
    return {
        "iteration": it,
        "rollout": split.rollout,
        "logps": split.logps,
        "update": it - split.rollout - split.logps,
        "overhead": wall - it,
        "mean_len": float(np.mean(m["completions/mean_length"])) if m.get("completions/mean_length") else 0.0,
        "clipped": float(np.mean(m["completions/clipped_ratio"]))
        if m.get("completions/clipped_ratio")
        else 0.0,
        "reward": float(np.mean(m["reward"])) if m.get("reward") else 0.0,
    }


# --- ours ----------------------------------------------------------------------------------------------


def ours_setup(seed: int, s: Setting = Setting()) -> object:
    """Our `rl` stage in the same setting, built in this process: the same Qwen2 shape over RL-Wall's own
    29-token vocabulary, prompts from the solution_tree `rl` pool (46-66 tokens), its verifier as the reward.
    The policy is the random init (a 1-step train stage at lr 1e-12 writes it, so the stage can load it)."""
    from engine.runtime.distributed import Dist
    from engine.runtime.rl import RLRunner
    from engine.runtime.trainer import run_spec
    from schemas import load_spec

    tmp = tempfile.mkdtemp(prefix="bench_rl_ours_")
    spec_file = Path(tmp) / "bench.yaml"
    spec_file.write_text(
        f"""
run: {{name: bench_rl, output: {tmp}/run, seed: {seed}}}
stages:
  init:
    model: {{kind: transformer, dim: {s.dim}, depth: {s.depth}, heads: {s.heads}, kv_heads: {s.kv_heads},
            position: {{kind: rope}}, ffn: {{kind: dense, hidden: {s.mlp}, activation: swiglu}}}}
    data: {{kind: solution_tree}}
    optim: {{kind: adamw, lr: 1.0e-12}}
    schedule: {{steps: 1}}
    batch: {{global: 2}}
    logging: {{every: 1, tensorboard: false, console: false}}
  rl:
    kind: rl
    policy: {{stage: init}}
    split: rl
    rollout: {{samples: {s.group}, temperature: {s.temperature}, max_new_tokens: {s.max_new}, batch: 256}}
    algorithm: {{kind: grpo, clip: [{1 - s.clip}, {1 + s.clip}], epochs: {s.updates}, kl: {{coef: {s.kl}, estimator: k3}}}}
    optim: {{kind: adamw, lr: {s.lr}, betas: [0.9, 0.999], weight_decay: 0.0, grad_clip: {s.grad_clip}}}
    schedule: {{steps: 1000, decay: constant}}
    batch: {{global: {s.prompts}, micro: {s.micro}}}
    logging: {{every: 1, tensorboard: false, console: false}}
"""
    )
    spec = load_spec(str(spec_file))
    dist = Dist()
    run_spec(spec, dist, only="init")
    runner = RLRunner(spec, "rl", spec.stages["rl"], dist)
    runner.build()
    runner._bench_step = 0
    return runner


class _NoSignal:
    requested = 0
    abort = None


def ours_step(runner: Any) -> dict[str, float]:
    """One RL step of the runner (rollout, scoring, advantages, updates), timed by its own clocks."""
    t0 = time.perf_counter()
    _, mets, _ = runner._step(runner._bench_step, _NoSignal())
    wall = time.perf_counter() - t0
    runner._bench_step += 1
    return {
        "iteration": wall,
        "rollout": float(mets["rollout_s"]),
        "logps": float(mets["score_s"]),
        "update": float(mets["update_s"]),
        "overhead": 0.0,
        "mean_len": float(mets["completion_len"]),
        "clipped": float(mets["truncated"]),
        "reward": float(mets["reward"]),
    }


# --- driver --------------------------------------------------------------------------------------------

PARTS = ("iteration", "rollout", "logps", "update", "overhead")


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):8.2f} ({min(xs):.2f}-{max(xs):.2f})"


def main() -> None:
    """Warm both sides up once, time them in interleaved rounds, print seconds per iteration and the ratios."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument(
        "--updates", type=int, default=4, help="optimizer steps per generation batch (RL-Wall's 4)"
    )
    ap.add_argument("--micro", type=int, default=64, help="completions per forward/backward")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    s = Setting(updates=a.updates, micro=a.micro)
    sides: dict[str, tuple[Any, Any]] = {}
    try:
        sides["ours"] = (ours_step, ours_setup(a.seed, s))
    except NotImplementedError as e:
        print(f"ours skipped: {e}")
    tmp = tempfile.TemporaryDirectory(prefix="bench_rl_")
    try:
        sides["TRL GRPOTrainer"] = (trl_step, trl_setup(tmp.name, a.seed, s))
    except ImportError as e:
        print(f"TRL skipped ({e}): pip install -e '.[bench]'")
    for step, state in sides.values():  # warm-up
        step(state)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for _ in range(a.rounds):
        for name, (step, state) in sides.items():
            runs[name].append(step(state))
    tmp.cleanup()
    print(
        f"GRPO iteration: {s.prompts} prompts x {s.group} samples, <= {s.max_new} new tokens, {s.updates} "
        f"update(s) of micro-batch {s.micro}; Qwen2 {s.depth} layers x {s.dim}, vocab {len(VOCAB)}; "
        f"{torch.get_num_threads()} thread(s), {a.rounds} rounds"
    )
    print(f"{'seconds, median (min-max)':<26}" + "".join(f"{p:>22}" for p in PARTS))
    for name, rs in runs.items():
        print(f"{name:<26}" + "".join(f"{_spread([r.get(p, 0.0) for r in rs]):>22}" for p in PARTS))
    for name, rs in runs.items():
        if "mean_len" in rs[0]:
            print(
                f"{name}: mean completion {statistics.mean(r['mean_len'] for r in rs):.1f} tokens, "
                f"{statistics.mean(r['clipped'] for r in rs):.0%} cut at {s.max_new}, "
                f"mean reward {statistics.mean(r['reward'] for r in rs):.2f}"
            )
    if "ours" in runs:
        for name, rs in runs.items():
            if name == "ours":
                continue
            ratios = [b["iteration"] / o["iteration"] for o, b in zip(runs["ours"], rs, strict=True)]
            print(
                f"ours vs {name}: {statistics.median(ratios):.2f}x faster per iteration "
                f"(rounds {min(ratios):.2f}-{max(ratios):.2f})"
            )


if __name__ == "__main__":
    main()
