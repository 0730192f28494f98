"""The `sampling` and `test_time_scaling` evaluators on a stand-in decoder whose answers are right with a known
probability: the estimates match the binomial arithmetic, temperature 0 is greedy, FLOPs follow 2·N per token."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine.data.sparse_parity import SparseParity
from engine.evals.sampling import SamplingEval
from engine.evals.sampling import TestTimeScalingEval as ScalingEval
from engine.objectives.base import Objective
from engine.runtime.distributed import Dist
from schemas.data import Connectivity as ConnectivityConfig
from schemas.data import SparseParity as SparseParityConfig
from schemas.evals import Sampling
from schemas.evals import TestTimeScaling as ScalingConfig

N_PARAMS = 1000


class SoftGold(torch.nn.Module):
    """A decoder over known examples: the first answer token is the gold one with probability `p` (else gold + 1),
    every later token the gold one; it speaks generation's KV-cache protocol."""

    def __init__(self, examples, vocab: int, p: float):
        super().__init__()
        self.gold = [examples[i] for i in range(len(examples))]
        self.vocab, self.p = vocab, p
        count = SimpleNamespace(active=N_PARAMS)
        self.cfg = SimpleNamespace(position=SimpleNamespace(kind="rope"), param_count=lambda vocab: count)
        self.vocab_size = vocab
        self.blocks = torch.nn.ModuleList()
        self.seen = torch.zeros(0, 0, dtype=torch.long)

    def forward(self, tokens, positions=None, cache=None):
        self.seen = tokens if cache.length == tokens.shape[1] else torch.cat([self.seen, tokens], 1)
        logits = torch.full((tokens.shape[0], tokens.shape[1], self.vocab), -1e4)
        for b in range(tokens.shape[0]):
            row = self.seen[b].tolist()
            while row and row[0] == 0:
                row.pop(0)
            ex = next(e for e in self.gold if row[: len(e.prompt)] == e.prompt.tolist())
            seq = ex.tokens.tolist()
            nxt = seq[len(row)] if len(row) < len(seq) else 2
            if len(row) == len(ex.prompt):
                logits[b, -1, nxt] = math.log(self.p)
                logits[b, -1, (nxt + 1) % self.vocab] = math.log(1 - self.p)
            else:
                logits[b, -1, nxt] = 0.0
        return logits, {}


class Decoding(Objective):
    def __init__(self, model):
        self.model = model

    def decoder(self):
        return self.model


def binomial_majority(k: int, p: float) -> float:
    """P(the right answer wins a vote of k samples between two answers), ties split evenly."""
    win = sum(math.comb(k, j) * p**j * (1 - p) ** (k - j) for j in range(k // 2 + 1, k + 1))
    tie = math.comb(k, k // 2) * (p * (1 - p)) ** (k // 2) if k % 2 == 0 else 0.0
    return win + tie / 2


def test_sampling_estimates_follow_the_binomial():
    cfg = SparseParityConfig()
    gen = SparseParity(cfg)
    ev_cfg = Sampling(
        n=16, k=[1, 3, 16], temperatures=[0.0, 0.5, 1.0], examples=64, batch=48, max_new_tokens=4
    )
    ev = SamplingEval(ev_cfg, gen, cfg, 0, "s", Dist())
    ex, _ = ev.sets["eval"]
    out = ev(Decoding(SoftGold(ex, len(gen.vocab), p=0.7)), 0)
    # greedy: the likelier, right token every time; one completion (answer bit + EOS) per prompt
    assert out["pass@1/eval/T0"] == 1.0 and out["maj@1/eval/T0"] == 1.0
    prompt_tokens = sum(len(ex[i].prompt) for i in range(64))
    assert out["inference_flops/eval/T0"] == pytest.approx(2 * N_PARAMS * (prompt_tokens + 2 * 64))
    assert out["length/eval/T0"] == 2.0
    for t, tol in ((1.0, 0.05), (0.5, 0.05)):
        p = 0.7 ** (1 / t) / (0.7 ** (1 / t) + 0.3 ** (1 / t))  # softmax(log p / T)
        assert out[f"pass@1/eval/T{t:g}"] == pytest.approx(p, abs=tol)
        assert out[f"maj@1/eval/T{t:g}"] == pytest.approx(out[f"pass@1/eval/T{t:g}"], abs=1e-12)
        assert out[f"maj@3/eval/T{t:g}"] == pytest.approx(binomial_majority(3, p), abs=tol)
        assert out[f"maj@16/eval/T{t:g}"] == pytest.approx(binomial_majority(16, p), abs=tol)
        assert out[f"pass@3/eval/T{t:g}"] == pytest.approx(1 - (1 - p) ** 3, abs=tol)
        assert out[f"best_of_n/eval/T{t:g}"] == pytest.approx(1 - (1 - p) ** 16, abs=0.02)
    # the same call again draws the same samples (counter-based keys)
    assert ev(Decoding(SoftGold(ex, len(gen.vocab), p=0.7)), 0) == out


def test_test_time_scaling_scores_every_n_and_writes_a_table_and_plot(tmp_path):
    cfg = SparseParityConfig()
    gen = SparseParity(cfg)
    ev_cfg = ScalingConfig(samples=[1, 2, 4, 8], examples=48, batch=64, max_new_tokens=4)
    ev = ScalingEval(ev_cfg, gen, cfg, 0, "s", Dist())
    weak = ev(Decoding(SoftGold(ev.examples, len(gen.vocab), p=0.6)), 0)
    strong = ev(Decoding(SoftGold(ev.examples, len(gen.vocab), p=0.9)), 0)
    for N in (1, 2, 4, 8):
        assert weak[f"best@{N}"] == pytest.approx(1 - 0.4**N, abs=0.07)
        assert weak[f"tokens@{N}"] == pytest.approx(N * weak["tokens@1"])
        assert weak[f"flops@{N}"] == pytest.approx(2 * N_PARAMS * weak[f"tokens@{N}"])
    assert strong["maj@8"] > weak["maj@8"] and strong["maj@1"] > weak["maj@1"]
    files = ev.write({"weak": weak, "strong": strong}, str(tmp_path / "ttc"))
    table = (tmp_path / "ttc.md").read_text()
    assert "| strong | 8 |" in table and "| weak | 1 |" in table
    assert (tmp_path / "ttc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files == [str(tmp_path / "ttc.md"), str(tmp_path / "ttc.png")]


def test_connectivity_reference_curves_are_the_papers():
    curves = ConnectivityConfig(depth=5).best_of_n_reference([1, 2])
    assert curves["random Path"][0] == pytest.approx(0.0417, abs=1e-4)
    assert curves["random shortest path"][0] == pytest.approx(0.0013, abs=1e-4)
    assert curves["random Path"][1] == pytest.approx(1 - (1 - 2**5 / (3 * 4**4)) ** 2)


def test_bad_sampling_settings_are_spec_errors():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exceed n=8"):
        Sampling(n=8, k=[1, 16])
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Sampling(temperatures=[-0.5])
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        Sampling(top_p=1.5)
    np.testing.assert_equal(Sampling().k, [1, 8, 64])
