"""Tests of KV-cached generation: equal to re-running the whole sequence, sampling rules, counter-based keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.generate import Sampling, choose, generate, sample_keys, uniforms
from engine.models.transformer import build
from schemas.models import Transformer as TransformerConfig

V, PAD, EOS = 40, 0, 2

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = {
    "rope": {},
    "learned": {"position": {"kind": "learned", "max_len": 64}},
    "nope": {"position": {"kind": "nope"}},
    "gqa_bias": {"heads": 4, "kv_heads": 2, "bias": True},
    "moe": {"ffn": {"kind": "moe", "experts": 4, "top_k": 2, "hidden": 32}},
    "coupled_rope": {"position": {"kind": "coupled", "encoding": "rope", "max_position": 80}},
    "coupled_learned": {"position": {"kind": "coupled", "encoding": "learned", "max_position": 80}},
}


def decoder(seed: int = 0, **cfg) -> torch.nn.Module:
    """A small seeded transformer, in eval mode; larger init so that its greedy choices are clear."""
    torch.manual_seed(seed)
    m = build(TransformerConfig(**{"dim": 32, "depth": 2, "heads": 4, "init_std": 0.2, **cfg}), V)
    return m.eval()


def prompts(n: int, seed: int = 0) -> list[np.ndarray]:
    """n prompts of 3..9 tokens (ids 3..V-1: no PAD or EOS)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(3, V, size=int(rng.integers(3, 10))) for _ in range(n)]


def coupled_ids(ps: list[np.ndarray], new: int, seed: int = 1) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Arbitrary coupled ids for each prompt and its first `new` generated tokens."""
    rng = np.random.default_rng(seed)
    ids = [rng.integers(0, 60, size=len(p) + new) for p in ps]
    return [i[: len(p)] for i, p in zip(ids, ps, strict=True)], [
        i[len(p) :] for i, p in zip(ids, ps, strict=True)
    ]


@torch.no_grad()
def rerun_greedy(model, prompt, new: int, ids: np.ndarray | None = None) -> list[int]:
    """Greedy decoding by re-running the whole unpadded sequence for every token (no cache)."""
    seq = [int(t) for t in prompt]
    out = []
    for _ in range(new):
        pos = None if ids is None else torch.tensor(ids[: len(seq)])[None]
        logits, _ = model(torch.tensor(seq)[None], pos)
        tok = int(logits[0, -1].argmax())
        out.append(tok)
        if tok == EOS:
            break
        seq.append(tok)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_cached_greedy_equals_full_rerun(case: str) -> None:
    model = decoder(**CASES[case])
    ps, new = prompts(6), 12
    kw: dict = {}
    full_ids = [None] * len(ps)
    if case.startswith("coupled"):
        pp, ap = coupled_ids(ps, new)
        kw = {"prompt_positions": pp, "answer_positions": ap}
        full_ids = [np.concatenate([a, b]) for a, b in zip(pp, ap, strict=True)]
    got = generate(
        model, ps, Sampling(max_new_tokens=new), stop=[EOS], pad=PAD, device=torch.device("cpu"), **kw
    )
    want = [rerun_greedy(model, p, new, i) for p, i in zip(ps, full_ids, strict=True)]
    assert got.tokens == want
    assert got.prompt_tokens == sum(len(p) for p in ps)
    assert got.new_tokens == sum(len(w) for w in want)


def test_stops_at_eos_and_extra_stop_tokens() -> None:
    model = decoder()
    ps = prompts(8)
    free = generate(model, ps, Sampling(max_new_tokens=10), stop=[EOS], pad=PAD, device=torch.device("cpu"))
    # stop on the first token each sequence produced: every completion is then that one token
    firsts = sorted({c[0] for c in free.tokens})
    got = generate(
        model, ps, Sampling(max_new_tokens=10), stop=[EOS, *firsts], pad=PAD, device=torch.device("cpu")
    )
    assert got.tokens == [c[:1] for c in free.tokens]
    assert got.steps == 1  # every sequence stopped after the prefill's token


def test_low_temperature_is_greedy() -> None:
    model = decoder()
    ps = prompts(8)
    greedy = generate(model, ps, Sampling(max_new_tokens=10), stop=[EOS], pad=PAD, device=torch.device("cpu"))
    keys = sample_keys(0, "s", "t", np.arange(8), np.zeros(8))
    cold = generate(
        model,
        ps,
        Sampling(temperature=1e-4, max_new_tokens=10),
        stop=[EOS],
        pad=PAD,
        device=torch.device("cpu"),
        keys=keys,
    )
    assert cold.tokens == greedy.tokens
    hot = generate(
        model,
        ps,
        Sampling(temperature=2.0, max_new_tokens=10),
        stop=[EOS],
        pad=PAD,
        device=torch.device("cpu"),
        keys=keys,
    )
    assert hot.tokens != greedy.tokens


def test_samples_do_not_depend_on_batching() -> None:
    """The completions of (prompt i, sample j) are the same decoded 8 at a time or 3 at a time."""
    model = decoder(ffn={"kind": "moe", "experts": 4, "top_k": 2, "hidden": 32})
    ps = prompts(4)
    rows = [(i, j) for i in range(4) for j in range(2)]  # 2 samples per prompt
    keys = sample_keys(
        7, "stage", "sampling/T1.0", np.array([i for i, _ in rows]), np.array([j for _, j in rows])
    )
    s = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=12)
    cpu = torch.device("cpu")
    whole = generate(model, [ps[i] for i, _ in rows], s, stop=[EOS], pad=PAD, device=cpu, keys=keys).tokens
    parts = []
    for lo in range(0, len(rows), 3):
        part = rows[lo : lo + 3]
        parts += generate(
            model, [ps[i] for i, _ in part], s, stop=[EOS], pad=PAD, device=cpu, keys=keys[lo : lo + 3]
        ).tokens
    assert parts == whole
    # the two samples of a prompt differ (different keys), and another seed gives other samples
    assert any(whole[2 * i] != whole[2 * i + 1] for i in range(4))
    other = sample_keys(
        8, "stage", "sampling/T1.0", np.array([i for i, _ in rows]), np.array([j for _, j in rows])
    )
    assert (
        generate(model, [ps[i] for i, _ in rows], s, stop=[EOS], pad=PAD, device=cpu, keys=other).tokens
        != whole
    )


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.15]])
    logits = probs.log()
    s = Sampling(temperature=1.0, top_p=0.75)  # 0.5 + 0.3 = 0.8 >= 0.75: tokens 1 and 2 only
    drawn = {int(choose(logits, s, torch.tensor([u]))[0]) for u in np.linspace(0, 0.999999, 401)}
    assert drawn == {1, 2}
    # inverse CDF over the renormalised nucleus: u < 0.5/0.8 -> token 1, else token 2
    assert int(choose(logits, s, torch.tensor([0.62]))[0]) == 1
    assert int(choose(logits, s, torch.tensor([0.63]))[0]) == 2
    s = Sampling(temperature=1.0, top_p=0.5)  # the top token alone reaches 0.5
    assert {int(choose(logits, s, torch.tensor([u]))[0]) for u in (0.0, 0.5, 0.99)} == {1}
    s = Sampling(temperature=1.0, top_k=3)
    assert {int(choose(logits, s, torch.tensor([u]))[0]) for u in np.linspace(0, 0.999, 200)} == {1, 2, 3}


def test_sampling_frequencies_follow_the_distribution() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0]]).expand(20000, 3)
    keys = sample_keys(0, "s", "t", np.arange(20000), np.zeros(20000))
    u = torch.from_numpy(uniforms(keys, 0))
    counts = torch.bincount(choose(logits, Sampling(temperature=1.0), u), minlength=3).double() / 20000
    assert torch.allclose(counts, torch.tensor([0.0, 1.0, 2.0]).softmax(0).double(), atol=0.01)


def test_predicted_positions_are_fed_back() -> None:
    """With a position head, generated tokens get the ids it predicts; equal to re-running with those ids."""
    model = decoder(position={"kind": "coupled", "encoding": "rope", "max_position": 80})
    ps = prompts(3)
    pp, _ = coupled_ids(ps, 0)
    torch.manual_seed(3)
    head = torch.nn.Linear(32, 80, bias=False)

    # a position head on the final hidden state, as the model's own would be
    feats = {}
    model.norm.register_forward_hook(lambda m, i, o: feats.__setitem__("x", o))

    class WithHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.cfg, self.blocks = model, model.cfg, model.blocks

        def forward(self, tokens, positions=None, cache=None):
            logits, aux = self.inner(tokens, positions, cache=cache)
            aux["position_logits"] = head(feats["x"])
            return logits, aux

    wrapped = WithHead()
    got = generate(
        wrapped,
        ps,
        Sampling(max_new_tokens=6),
        stop=[EOS],
        pad=PAD,
        device=torch.device("cpu"),
        prompt_positions=pp,
        predict_positions=True,
    )
    for p, ids0, toks, ids in zip(ps, pp, got.tokens, got.positions, strict=True):
        seq, pos = list(p), list(ids0)
        for tok, pid in zip(toks, ids, strict=True):
            logits, aux = wrapped(torch.tensor(seq)[None], torch.tensor(pos)[None])
            assert int(logits[0, -1].argmax()) == tok
            assert int(aux["position_logits"][0, -1].argmax()) == pid
            seq.append(tok)
            pos.append(pid)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=-0.1)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=0.0)
    model = decoder(position={"kind": "learned", "max_len": 16})
    with pytest.raises(ValueError, match="16 positions"):
        generate(
            model, prompts(2), Sampling(max_new_tokens=10), stop=[EOS], pad=PAD, device=torch.device("cpu")
        )
