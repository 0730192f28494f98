"""FSDP2 on 2 CPU ranks (torchrun, gloo) against one process: gradients, and a 2-rank DCP checkpoint on 1 rank."""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import REPO, torchrun

sys.path.insert(0, str(REPO / "tests" / "dist"))
import fsdp_check  # noqa: E402

from engine.models.transformer import build  # noqa: E402
from engine.runtime.checkpoint import Checkpointer  # noqa: E402
from engine.runtime.distributed import Dist  # noqa: E402
from engine.runtime.trainer import build_optimizer  # noqa: E402
from schemas.training import AdamW  # noqa: E402

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_fsdp_two_ranks_match_one_process(tmp_path, kind):
    """Gradients of FSDP2 over 2 ranks (each on half the batch) equal one process on the whole batch.

    Tolerance: 1e-5 absolute + 1e-4 relative (fp32; the two reductions sum in a different order). The 2-rank DCP
    checkpoint then loads into a plain single-process model and optimizer, equal to the full weights bit for bit.
    """
    r = torchrun(str(REPO / "tests" / "dist" / "fsdp_check.py"), str(tmp_path), kind)
    assert r.returncode == 0, r.stdout + r.stderr
    sharded = torch.load(tmp_path / "grads.pt", weights_only=True)

    torch.manual_seed(0)
    model = build(fsdp_check.CONFIGS[kind], fsdp_check.VOCAB)
    halves = fsdp_check.batch().chunk(2)
    # FSDP averages the ranks' gradients: the reference is the mean of the two halves' losses.
    (sum(fsdp_check.loss_of(model, h) for h in halves) / 2).backward()
    assert set(sharded) == {n for n, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        torch.testing.assert_close(sharded[name], p.grad, atol=1e-5, rtol=1e-4, msg=f"gradient of {name}")

    torch.manual_seed(123)  # different init: everything must come from the checkpoint
    fresh = build(fsdp_check.CONFIGS[kind], fsdp_check.VOCAB)
    optim = build_optimizer(AdamW(lr=1e-2, weight_decay=0.1), {"model": fresh})
    state = Checkpointer(str(tmp_path / "ckpt"), keep_last=2, dist=Dist()).restore({"model": fresh}, optim)
    assert state["step"] == 1
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    for name, t in fresh.state_dict().items():
        assert torch.equal(t, full[name]), name
    steps = {int(s["step"]) for s in optim.state_dict()["state"].values()}
    assert steps == {1}, "optimizer state (Adam step count) must come back too"


@pytest.mark.slow
def test_sampling_is_the_same_on_two_sharded_ranks_and_in_one_process(tmp_path):
    """Sampled completions of (prompt, sample) rows: 2 FSDP2 ranks drawing alternate rows 3 at a time equal one
    process drawing all rows 8 at a time, token for token (counter-based keys; the decode steps stay in step)."""
    import json

    import generate_check

    r = torchrun(str(REPO / "tests" / "dist" / "generate_check.py"), str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    sharded = json.loads((tmp_path / "completions.json").read_text())
    whole = generate_check.complete(generate_check.model(), generate_check.ROWS, 8, Dist())
    assert sharded == whole
    assert len({tuple(c) for c in whole.values()}) > 6, "samples differ between rows"
    # each generate call gathers every FSDP module once (2 blocks + the root), not once per decode step, and
    # both ranks run the same number of decode steps although their sequences stop at different lengths
    counts = json.loads((tmp_path / "gathers.json").read_text())
    calls = len(counts[0]["steps"])
    assert calls == 2 and counts[0]["steps"] == counts[1]["steps"]
    assert max(counts[0]["steps"]) > 3, "decoding ran too few steps to tell one gather from one per step"
    assert [c["gathers"] for c in counts] == [3 * calls, 3 * calls]
