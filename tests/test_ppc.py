"""Predictive Position Coupling: the position head, its loss on the coupled ids the data carries, and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import registry
from engine.models.transformer import build
from engine.objectives.base import Batch
from engine.runtime.distributed import Dist
from schemas import data as D
from schemas.models import Transformer as TransformerConfig
from schemas.objectives import NextToken

pytestmark = pytest.mark.usefixtures("one_thread")

PPC = {"kind": "coupled", "encoding": "rope", "max_position": 64, "predict": True}


def config(**position) -> TransformerConfig:
    return TransformerConfig(dim=32, depth=1, heads=2, position=position or PPC)


def test_the_head_is_counted_and_only_built_when_asked():
    torch.manual_seed(0)
    with_head = build(config(), 20)
    torch.manual_seed(0)
    without = build(config(kind="coupled", encoding="rope", max_position=64), 20)
    assert with_head.pos_head.weight.shape == (64, 32) and without.pos_head is None
    assert set(with_head.state_dict()) - set(without.state_dict()) == {"pos_head.weight"}
    for cfg, m in (
        (config(), with_head),
        (config(kind="coupled", encoding="rope", max_position=64), without),
    ):
        assert cfg.param_count(20).total == sum(p.numel() for p in m.parameters())
    assert config().weight_shapes(20) != config(kind="coupled", max_position=64).weight_shapes(20)
    logits, aux = with_head(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long))
    assert (
        aux["position_logits"].shape == (2, 5, 64)
        and "position_logits"
        not in without(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long))[1]
    )


@pytest.mark.parametrize(
    "data",
    [D.Copy(), D.Reverse(), D.VariableAssignment(length={"train": [4, 8], "eval": [9, 12]})],
    ids=["copy", "reverse", "variable_assignment"],
)
def test_the_targets_are_the_ids_the_data_marks(data):
    """The objective's position targets (positions[t+1] on answer tokens) are the data's target_positions."""
    gen = registry.build_data(data)
    ex = gen.sample(np.random.default_rng(0), 16)
    batch = Batch.from_examples(ex, torch.device("cpu"))
    mask = batch.loss_mask[:, 1:]
    ours = batch.positions[:, 1:][mask]
    theirs = torch.from_numpy(ex.meta["target_positions"].astype(np.int64))[:, 1:][mask]
    assert torch.equal(ours, theirs) and (ours >= 0).all()


@pytest.mark.slow
def test_ppc_learns_the_positions():
    """On copy, the position loss falls and its accuracy rises; without the head the objective has no such
    metric; ppc_weight 0 leaves the head untrained."""
    data = D.Copy(length={"train": [2, 6], "eval": [7, 9]})
    gen = registry.build_data(data)
    ppc = {
        "kind": "coupled",
        "encoding": "learned",
        "max_position": data.max_position_id + 1,
        "predict": True,
    }
    torch.manual_seed(0)
    model = build(config(**ppc), data.vocab_size)

    class Ctx:
        stage = type("S", (), {"model": model.cfg})()
        vocab_size = data.vocab_size

    for weight in (1.0, 0.0):
        torch.manual_seed(0)
        model = build(config(**ppc), data.vocab_size)
        obj = registry.build_objective(NextToken(ppc_weight=weight), {"model": model}, Ctx())
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        first = last = None
        for step in range(150):
            batch = obj.collate(gen.sample(np.random.default_rng(step), 32), torch.device("cpu"))
            loss, m = obj(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            first = first or m
            last = m
        if weight:
            assert last["pos_ce"] < 0.3 * first["pos_ce"] and last["pos_acc"] > 0.9, (first, last)
        else:
            assert last["pos_acc"] < 0.5, "an untrained head does not predict the ids"
    assert Dist().world == 1
