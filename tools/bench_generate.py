"""Generation throughput: our KV-cached generation against a no-cache loop and Hugging Face `generate`, side by side.

The same decoder shape for all three (a 4-layer, 256-wide Llama-style model: RoPE, RMSNorm, SwiGLU, untied
embeddings, random weights, fp32, CPU): ours (`engine.generate`), greedy decoding that re-runs the whole batch
of sequences for every token (our model, no cache), and `transformers`' `LlamaForCausalLM.generate` with its
static and its dynamic cache. Greedy, no stop token reachable, so every method generates exactly
`--new-tokens` tokens per sequence. Rounds interleave the methods so that machine noise hits all of them.
`transformers` comes from the `bench` extra: pip install -e '.[bench]'.

    python tools/bench_generate.py [--batch 64] [--prompt 64] [--new-tokens 256] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.generate import Sampling, generate  # noqa: E402
from engine.models.transformer import build  # noqa: E402
from schemas.models import Transformer  # noqa: E402

VOCAB, DIM, DEPTH, HEADS, HIDDEN = 512, 256, 4, 4, 1024
NEVER = VOCAB  # a stop id no model can emit: every sequence runs to max_new_tokens


def ours_model() -> torch.nn.Module:
    """Our decoder of the benchmark's shape, random weights, eval mode."""
    torch.manual_seed(0)
    cfg = Transformer(
        dim=DIM, depth=DEPTH, heads=HEADS, ffn={"kind": "dense", "hidden": HIDDEN, "activation": "swiglu"}
    )
    return build(cfg, VOCAB).eval()


def hf_model(ours: torch.nn.Module):
    """`LlamaForCausalLM` of the same shape, carrying our weights (same layout: rotate-half RoPE, RMSNorm)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=DIM,
        intermediate_size=HIDDEN,
        num_hidden_layers=DEPTH,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=4096,
        rms_norm_eps=ours.cfg.norm_eps,
        rope_theta=ours.cfg.position.base,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=NEVER - 1,
    )
    hf = LlamaForCausalLM(cfg).eval()
    sd = ours.state_dict()
    new = {"model.embed_tokens.weight": sd["tok_emb.weight"], "lm_head.weight": sd["lm_head.weight"]}
    new["model.norm.weight"] = sd["norm.weight"]
    names = {
        "wq": "self_attn.q_proj",
        "wk": "self_attn.k_proj",
        "wv": "self_attn.v_proj",
        "wo": "self_attn.o_proj",
    }
    names.update({"w1": "mlp.gate_proj", "w3": "mlp.up_proj", "w2": "mlp.down_proj"})
    for i in range(DEPTH):
        new[f"model.layers.{i}.input_layernorm.weight"] = sd[f"blocks.{i}.norm1.weight"]
        new[f"model.layers.{i}.post_attention_layernorm.weight"] = sd[f"blocks.{i}.norm2.weight"]
        for ours_name, theirs in names.items():
            part = "attn" if ours_name in ("wq", "wk", "wv", "wo") else "ffn"
            new[f"model.layers.{i}.{theirs}.weight"] = sd[f"blocks.{i}.{part}.{ours_name}.weight"]
    missing, unexpected = hf.load_state_dict(new, strict=False)
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise RuntimeError(f"weights do not map onto Llama: missing {missing}, unexpected {unexpected}")
    return hf


def prompts(batch: int, length: int, ragged: bool) -> list[np.ndarray]:
    """`batch` prompts of `length` tokens (ragged: lengths spread over [length / 2, length])."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(length // 2, length + 1, size=batch) if ragged else [length] * batch
    return [rng.integers(3, VOCAB - 1, size=int(n)) for n in sizes]


def run_ours(model, ps: list[np.ndarray], new: int) -> list[list[int]]:
    """Our KV-cached greedy generation."""
    out = generate(model, ps, Sampling(max_new_tokens=new), stop=[NEVER], pad=0, device=torch.device("cpu"))
    return out.tokens


@torch.no_grad()
def run_no_cache(model, ps: list[np.ndarray], new: int) -> list[list[int]]:
    """Greedy decoding without a cache: the whole batch (equal-length prompts) re-run for every token."""
    seq = torch.from_numpy(np.stack(ps)).long()
    for _ in range(new):
        logits, _ = model(seq)
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[:, -new:].tolist()


@torch.no_grad()
def run_hf(hf, ps: list[np.ndarray], new: int, cache: str | None) -> list[list[int]]:
    """`generate` of transformers, greedy, left-padded prompts with their attention mask."""
    P = max(len(p) for p in ps)
    ids = torch.zeros(len(ps), P, dtype=torch.long)
    mask = torch.zeros(len(ps), P, dtype=torch.long)
    for b, p in enumerate(ps):
        ids[b, P - len(p) :] = torch.from_numpy(p)
        mask[b, P - len(p) :] = 1
    kw = {"cache_implementation": cache} if cache else {}
    out = hf.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        pad_token_id=0,
        **kw,
    )
    return out[:, P:].tolist()


def timed(fn: Callable[[], list[list[int]]]) -> tuple[float, list[list[int]]]:
    """Seconds of one call and what it returned."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    """Time every method in interleaved rounds; print tokens/s, the ratios and whether the outputs agree."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument(
        "--ragged", action="store_true", help="prompts of different lengths (no-cache loop skipped)"
    )
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = ours_model()
    ps = prompts(a.batch, a.prompt, a.ragged)
    methods: dict[str, Callable[[], list[list[int]]]] = {
        "ours (KV cache)": lambda: run_ours(model, ps, a.new_tokens)
    }
    if not a.ragged:
        methods["no-cache loop"] = lambda: run_no_cache(model, ps, a.new_tokens)
    try:
        hf = hf_model(model)
        methods["HF generate, static cache"] = lambda: run_hf(hf, ps, a.new_tokens, "static")
        methods["HF generate, dynamic cache"] = lambda: run_hf(hf, ps, a.new_tokens, None)
    except ImportError:
        print(
            "transformers is not installed: pip install -e '.[bench]' to compare with Hugging Face generate"
        )
    for fn in methods.values():  # warm up (and compile nothing: all eager)
        fn()
    secs: dict[str, list[float]] = {m: [] for m in methods}
    outputs: dict[str, list[list[int]]] = {}
    for _ in range(a.rounds):
        for name, fn in methods.items():
            s, outputs[name] = timed(fn)
            secs[name].append(s)
    tokens = a.batch * a.new_tokens
    print(
        f"batch {a.batch}, prompts {a.prompt}{' (ragged)' if a.ragged else ''}, {a.new_tokens} new tokens, "
        f"{DEPTH} layers x {DIM}, vocab {VOCAB}, {torch.get_num_threads()} threads, {a.rounds} rounds"
    )
    print(f"{'method':<30}{'tokens/s':>12}{'s per round (median)':>24}")
    for name, s in secs.items():
        print(f"{name:<30}{tokens / statistics.median(s):>12.0f}{statistics.median(s):>24.2f}")
    ours = secs["ours (KV cache)"]
    for name, s in secs.items():
        if name.startswith("ours"):
            continue
        ratios = [b / o for o, b in zip(ours, s, strict=True)]
        print(
            f"ours vs {name:<26} {statistics.median(ratios):5.2f}x faster "
            f"(rounds {min(ratios):.2f}-{max(ratios):.2f})"
        )
    base = outputs["ours (KV cache)"]
    for name, out in outputs.items():
        if not name.startswith("ours"):
            same = sum(a_ == b_ for a_, b_ in zip(base, out, strict=True))
            print(f"greedy outputs equal to ours: {name}: {same}/{len(base)} sequences")


if __name__ == "__main__":
    main()
