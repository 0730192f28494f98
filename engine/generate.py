"""Batched autoregressive generation for the token transformer: one prefill, then one-token decode steps over a
preallocated KV cache; greedy, temperature, top-k and top-p sampling; counter-based randomness.

Variable-length prompts are LEFT-padded to a common width, so that every sequence writes its next token at the
same cache column and a decode step is one [B, 1] forward. Each sequence keeps its own position ids (a prompt of
p tokens has ids 0..p-1 whatever the padding; coupled models take the example's own ids), and padding columns
are masked out of every attention (`KVCache.step`). Right padding would need a different cache column per
sequence (a scatter per layer and step); left padding needs only a key mask, which SDPA takes as it is.

Randomness is counter-based, as the data streams are: sampling step t of a sequence draws one uniform from
mix64(key, t), where the key comes from (run seed, stage, evaluator tag, prompt index, sample index)
(`sample_keys`). A token is drawn by inverting the CDF of the (filtered) distribution at that uniform, so a
sequence's completion depends on its key and the model only, not on the batch it is decoded in, the batch size
or the world size.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule

from engine.data.base import Example, mix64
from engine.models.layers import KVCache
from engine.runtime.distributed import Dist


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy at temperature 0, else drawn from softmax(logits / temperature)
    restricted to the `top_k` most likely tokens and then to the smallest nucleus of mass >= `top_p`."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float = 1.0
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must lie in (0, 1]")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k} must be >= 1")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")


@dataclass
class Completions:
    """What `generate` returns: each sequence's generated ids (its stop token included when it produced one),
    the position ids they were given, and what was run through the model (for inference FLOPs)."""

    tokens: list[list[int]]
    positions: list[list[int]]
    prompt_tokens: int  # real (unpadded) prompt tokens prefilled, summed over sequences
    new_tokens: int  # generated tokens, summed over sequences
    steps: int  # decode forwards run (the same on every rank)


# ----------------------------------------------------------------------------- counter-based randomness

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def sample_keys(
    seed: int, stage: str, tag: str, prompt_index: np.ndarray, sample_index: np.ndarray
) -> np.ndarray:
    """uint64 keys [n] of sequences (prompt i, sample j) of an evaluator `tag` in `stage` of a run `seed`."""
    tag_hash = np.uint64(zlib.crc32(f"{stage}/{tag}".encode())) << np.uint64(32)
    i = np.asarray(prompt_index, dtype=np.uint64)
    j = np.asarray(sample_index, dtype=np.uint64)
    with np.errstate(over="ignore"):
        base = mix64(np.array([seed], dtype=np.uint64) ^ tag_hash)
        return mix64(base ^ mix64((i << np.uint64(32)) ^ j))


def uniforms(keys: np.ndarray, step: int) -> np.ndarray:
    """One uniform in [0, 1) per key for decode step `step` (53 random bits), float64 [n]."""
    with np.errstate(over="ignore"):
        z = mix64(keys ^ mix64(np.array([step], dtype=np.uint64) * _GOLDEN + _GOLDEN))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def _sorted_support(logits: Tensor, sampling: Sampling) -> tuple[Tensor, Tensor, Tensor]:
    """Probabilities at the sampling temperature sorted in decreasing order (ties by id) [..., V], their token
    ids, and which of them top-k and top-p keep (a token is kept while the mass before it is below top_p: the
    smallest nucleus)."""
    z = logits.float() / sampling.temperature
    probs, order = torch.sort(z.softmax(-1), dim=-1, descending=True, stable=True)
    keep = torch.ones_like(probs, dtype=torch.bool)
    if sampling.top_k is not None:
        keep[..., sampling.top_k :] = False
    if sampling.top_p < 1:
        keep &= (probs.cumsum(-1) - probs) < sampling.top_p
    return probs, order, keep


def support(logits: Tensor, sampling: Sampling) -> Tensor | None:
    """The tokens sampling may draw from logits [..., V] (bool [..., V] in vocabulary order), or None when
    nothing is filtered out (no top-k, top-p 1): what the policy's log-probabilities of RL are restricted to."""
    if sampling.top_k is None and sampling.top_p >= 1:
        return None
    _, order, keep = _sorted_support(logits, sampling)
    return torch.zeros_like(keep).scatter_(-1, order, keep)


def choose(logits: Tensor, sampling: Sampling, u: Tensor | None) -> Tensor:
    """Next tokens [B] from logits [B, V]: argmax at temperature 0, else the inverse CDF at u [B] of the
    distribution filtered by top-k and top-p (tokens sorted by probability, ties by id)."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    if u is None:
        raise ValueError("sampling at temperature > 0 needs uniforms (sequence keys)")
    probs, order, keep = _sorted_support(logits, sampling)  # [B, V]
    probs = probs * keep
    cdf = probs.cumsum(-1)  # [B, V]
    target = (u.to(cdf) * cdf[:, -1]).unsqueeze(1)  # [B, 1]
    idx = torch.searchsorted(cdf, target, right=True).squeeze(1)  # first token whose cdf exceeds u * mass
    idx = torch.minimum(idx, keep.sum(-1) - 1)
    return order.gather(1, idx[:, None]).squeeze(1)


# ----------------------------------------------------------------------------- generation


def _config(model: nn.Module):
    """The transformer config of a (possibly FSDP-wrapped) decoder."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "blocks"):
        raise TypeError(f"{type(model).__name__} is not a token transformer; generation decodes transformers")
    return cfg


def max_positions(model: nn.Module) -> int | None:
    """The most tokens a sequence may hold under the model's position table (None: unbounded)."""
    pos = _config(model).position
    return pos.max_len if pos.kind == "learned" else None


@contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Keep an FSDP2-sharded model's parameters gathered for the whole block (one all-gather per module, not
    one per module and decode step), then free them; nothing for an unsharded model.

    Every rank must enter and leave together (the gathers are collectives), as generation's ranks do.
    """
    mods = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not mods:
        yield
        return
    # whether each module frees its parameters after forward, as sharding set it up
    before = [
        any(g.post_forward_mesh_info is not None for g in m._get_fsdp_state()._fsdp_param_groups)
        for m in mods
    ]
    for m in mods:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m, reshard in zip(mods, before, strict=True):
            m.set_reshard_after_forward(reshard, recurse=False)
            m.reshard()


@torch.no_grad()
def generate(
    model: nn.Module,
    prompts: Sequence[np.ndarray],
    sampling: Sampling,
    *,
    stop: Sequence[int],
    pad: int,
    device: torch.device,
    keys: np.ndarray | None = None,
    prompt_positions: Sequence[np.ndarray] | None = None,
    answer_positions: Sequence[np.ndarray] | None = None,
    predict_positions: bool = False,
    any_live: Callable[[bool], bool] | None = None,
) -> Completions:
    """Complete every prompt (token ids [p_b]) with at most `sampling.max_new_tokens` tokens.

    A sequence stops at the first of its tokens in `stop` (EOS and any generator-given stop token).
    `keys` (uint64 [B], from `sample_keys`) seed each sequence's draws when the temperature is above 0.
    Coupled-position models take the prompts' own ids (`prompt_positions`); generated tokens get the ids of
    `answer_positions` (the example's own, as under teacher forcing; beyond them the ids keep counting), or the
    ids the model's position head predicts (`predict_positions`, Predictive Position Coupling). Other models
    number each sequence 0, 1, ... from its first real token.

    `any_live(local)` tells whether a sequence on any rank is still generating (an all-reduce): every rank runs
    the same number of forwards, as FSDP's collectives need. Without it, only this process's sequences count.
    """
    cfg = _config(model)
    B = len(prompts)
    coupled = cfg.position.kind == "coupled"
    if coupled and prompt_positions is None:
        raise ValueError("a coupled-position model needs the prompts' position ids (prompt_positions)")
    if coupled and not predict_positions and answer_positions is None:
        raise ValueError("a coupled-position model needs answer_positions or predict_positions=True")
    if sampling.temperature > 0 and (keys is None or len(keys) != B):
        raise ValueError("sampling at temperature > 0 needs one key per prompt (sample_keys)")
    lengths = np.array([len(p) for p in prompts], dtype=np.int64)
    if (lengths < 1).any():
        raise ValueError("every prompt needs at least one token")
    P = int(lengths.max())
    limit = max_positions(model)
    if limit is not None and P + sampling.max_new_tokens > limit:
        raise ValueError(
            f"prompts of {P} tokens + max_new_tokens={sampling.max_new_tokens} exceed the model's "
            f"{limit} positions; lower max_new_tokens"
        )

    # left-padded prompts [B, P], their real columns and position ids
    tokens = np.full((B, P), pad, dtype=np.int64)
    positions = np.zeros((B, P), dtype=np.int64)
    for b, p in enumerate(prompts):
        tokens[b, P - len(p) :] = p
        if coupled:
            positions[b, P - len(p) :] = prompt_positions[b][: len(p)]
        else:
            positions[b, P - len(p) :] = np.arange(len(p))
    real = np.arange(P)[None, :] >= (P - lengths)[:, None]  # [B, P]
    # ids of generated tokens t = 0.. when not predicted: the example's, then counting on; else p_b + t
    T = sampling.max_new_tokens
    planned = np.zeros((B, T), dtype=np.int64)
    for b in range(B):
        if coupled and not predict_positions:
            given = np.asarray(answer_positions[b], dtype=np.int64)[:T]
            last = int(given[-1]) if len(given) else int(prompt_positions[b][len(prompts[b]) - 1])
            planned[b, : len(given)] = given
            planned[b, len(given) :] = last + 1 + np.arange(T - len(given))
        elif not coupled:
            planned[b] = lengths[b] + np.arange(T)

    with gathered(model):
        out, out_pos, steps = _decode(
            model,
            tokens,
            positions,
            real,
            planned,
            sampling,
            stop,
            pad,
            device,
            keys,
            predict_positions,
            any_live,
        )
    out_l, pos_l, stop_set = out.tolist(), out_pos.tolist(), set(stop)
    completions, ids = [], []
    for b in range(B):
        n = next((i + 1 for i, tok in enumerate(out_l[b]) if tok in stop_set), T)
        completions.append(out_l[b][:n])
        ids.append(pos_l[b][:n])
    return Completions(completions, ids, int(lengths.sum()), sum(len(c) for c in completions), steps)


def _decode(
    model: nn.Module,
    tokens: np.ndarray,
    positions: np.ndarray,
    real: np.ndarray,
    planned: np.ndarray,
    sampling: Sampling,
    stop: Sequence[int],
    pad: int,
    device: torch.device,
    keys: np.ndarray | None,
    predict_positions: bool,
    any_live: Callable[[bool], bool] | None,
) -> tuple[Tensor, Tensor, int]:
    """Prefill the left-padded prompts [B, P], then decode up to T tokens: (tokens [B, T], their position ids
    [B, T], forwards run)."""
    B, P = tokens.shape
    T = sampling.max_new_tokens
    stops = torch.tensor(sorted(set(stop)), dtype=torch.long, device=device)
    cache = KVCache(len(model.blocks), B, P + T, device)
    cache.step(torch.from_numpy(real).to(device))
    logits, aux = model(
        torch.from_numpy(tokens).to(device), torch.from_numpy(positions).to(device), cache=cache
    )
    out = torch.full((B, T), pad, dtype=torch.long, device=device)
    out_pos = torch.from_numpy(planned).to(device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    steps = 0
    for t in range(T):
        last = logits[:, -1]  # [B, V]
        u = None
        if sampling.temperature > 0:
            u = torch.from_numpy(uniforms(keys, t)).to(device)
        nxt = torch.where(done, pad, choose(last, sampling, u))  # [B]
        if predict_positions:
            out_pos[:, t] = aux["position_logits"][:, -1].argmax(-1)
        out[:, t] = nxt
        was_done = done
        done = done | torch.isin(nxt, stops)
        live = bool((~done).any())
        if t == T - 1 or not (any_live(live) if any_live is not None else live):
            break
        cache.step((~was_done)[:, None])
        logits, aux = model(nxt[:, None], out_pos[:, t : t + 1], cache=cache)
        steps += 1
    return out, out_pos, steps + 1


def coupled_ids(model: nn.Module, examples: Sequence[Example]) -> dict:
    """`generate`'s position arguments for examples of a coupled-position model: the prompts' own ids, then
    the ids the position head predicts when the model has one (PPC), else the examples' answer ids."""
    if _config(model).position.kind != "coupled":
        return {}
    prompt_ids = [ex.positions[: len(ex.prompt)] for ex in examples]
    if getattr(model, "pos_head", None) is not None:
        return {"prompt_positions": prompt_ids, "predict_positions": True}
    return {
        "prompt_positions": prompt_ids,
        "answer_positions": [ex.positions[len(ex.prompt) :] for ex in examples],
    }


def stop_tokens(gen: object) -> list[int]:
    """Where a generator's completions end: EOS, and any `stop_tokens` the generator declares."""
    return [gen.vocab.eos, *getattr(gen, "stop_tokens", ())]


def greedy(model: nn.Module, examples: Sequence[Example], new: int, gen: object, dist: Dist) -> Completions:
    """Greedy completions of the examples' prompts by every rank in step (an evaluator's decoding)."""
    return generate(
        model,
        [ex.prompt for ex in examples],
        Sampling(max_new_tokens=new),
        stop=stop_tokens(gen),
        pad=gen.vocab.pad,
        device=dist.device,
        any_live=dist.any,
        **coupled_ids(model, examples),
    )
