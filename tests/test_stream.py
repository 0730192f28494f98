"""The global batch of a step is one set of examples, whatever the world size: the stream keys chunks of the
step's examples by (seed, stage, step, chunk), and each rank takes its rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_video_data import files, videos  # noqa: F401  (the module fixture of small video files)

from engine import registry
from engine.data.stream import Stream, counter_rng, join
from engine.data.video import Clips
from engine.runtime.distributed import Dist
from engine.runtime.trainer import StageRunner
from schemas import load_spec

GLOBAL = 24  # not a multiple of the token generators' chunk (16): ranks share a chunk at world 2, 3, 4


def rows(batch) -> list[tuple]:
    """Each example of a batch as comparable arrays, padding stripped (tokens) or whole (clips)."""
    if isinstance(batch, Clips):
        keys = sorted(batch.meta)
        return [(c.video, c.label, *(c.meta[k] for k in keys)) for c in (batch[i] for i in range(len(batch)))]
    out = []
    for i in range(len(batch)):
        e = batch[i]
        pos = () if e.positions is None else (e.positions,)
        out.append((e.tokens, e.loss_mask, *pos, *(np.asarray(e.meta[k]) for k in sorted(e.meta))))
    return out


def assert_same_rows(a, b) -> None:
    """Two batches hold the same examples in the same order."""
    ra, rb = rows(a), rows(b)
    assert len(ra) == len(rb)
    for i, (x, y) in enumerate(zip(ra, rb, strict=True)):
        assert len(x) == len(y), f"example {i}: different fields"
        for u, v in zip(x, y, strict=True):
            u, v = np.asarray(u), np.asarray(v)
            # per-token meta is padded to its batch's width: compare the common part, the rest is padding
            if u.ndim and u.shape != v.shape:
                w = min(u.shape[0], v.shape[0])
                assert (u[w:] < 0).all() and (v[w:] < 0).all(), f"example {i}: differs beyond padding"
                u, v = u[:w], v[:w]
            assert np.array_equal(u, v), f"example {i} differs"


def split_over(stream_of, world: int, step: int):
    """The step's batches of every rank of a `world`-rank job, joined in rank order."""
    return join([stream_of(rank, world).batch(step) for rank in range(world)])


@pytest.mark.parametrize("name", ["sparse_parity", "copy", "variable_assignment", "countdown", "sudoku"])
def test_every_world_size_sees_the_same_global_batch(name: str) -> None:
    spec = load_spec(f"specs/{name}.yaml", [])
    stage = next(iter(spec.stages.values()))
    gen = registry.build_data(stage.data)

    def stream_of(rank: int, world: int) -> Stream:
        return Stream(gen, 7, "train", rank, GLOBAL // world, world)

    for step in (0, 5):
        whole = stream_of(0, 1).batch(step)
        assert len(whole) == GLOBAL
        for world in (2, 3, 4):
            assert_same_rows(split_over(stream_of, world, step), whole)
    assert not np.array_equal(stream_of(0, 1).batch(1).tokens, stream_of(0, 1).batch(2).tokens)


def test_video_clips_and_masks_are_the_same_on_every_world_size(tmp_path) -> None:
    """salt_tiny's teacher: synthetic clips (chunk 8) and the objective's masks, drawn per group of 8 clips
    (trimmed together, as V-JEPA trims one GPU's batch) by the group's index, whatever the world size."""
    from engine.objectives.jepa import _unpad

    spec = load_spec(
        "specs/salt_tiny.yaml", [f"run.output={tmp_path}", "stages.teacher.objective.masks.group=8"]
    )
    name = next(iter(spec.stages))
    runner = StageRunner(spec, name, spec.stages[name], Dist())
    runner.build()
    assert runner.micro == 8, "one process, 32 clips: micro-batches of one mask group each"
    augment, group = runner.objective.augment, runner.objective.batch_group

    def stream_of(rank: int, world: int) -> Stream:
        return Stream(runner.gen, 3, name, rank, GLOBAL // world, world, augment=augment, group=group)

    whole = stream_of(0, 1).batch(4)
    counts = (whole.meta["context_0"] >= 0).sum(1).reshape(GLOBAL // 8, 8)
    assert (counts == counts[:, :1]).all(), "a group is trimmed to one count"
    assert len(set(counts[:, 0].tolist())) > 1, "groups are trimmed apart (not over the whole batch)"
    for world in (2, 3, 4, 6):
        joined = split_over(stream_of, world, 4)
        assert_same_rows(joined, whole)
        per_rank = GLOBAL // world
        micro = math.gcd(per_rank, 8)
        for rank in range(world):  # every micro-batch the trainer would cut stacks without padding
            batch = stream_of(rank, world).batch(4)
            for j in range(0, per_rank, micro):
                part = batch.slice(j, j + micro)
                assert (_unpad(part.meta["target_1"]) >= 0).all()


def test_video_files_decode_several_chunks_in_one_pass(videos: dict) -> None:  # noqa: F811
    """VideoFiles.sample_chunks equals one sample per generator, joined: the stream may batch the decoding."""
    loader = files(videos, manifest="manifest.txt", max_retries=50)
    keys = [(1, 2), (1, 3), (9, 0)]
    together = loader.sample_chunks([counter_rng(*k) for k in keys], 2, "train")
    apart = Clips.concat([loader.sample(counter_rng(*k), 2, "train") for k in keys])
    assert_same_rows(together, apart)


@pytest.mark.slow
@pytest.mark.distributed
def test_stopped_on_two_ranks_resumed_on_one_ends_like_one_rank(tmp_path) -> None:
    """A run stopped on 2 ranks (SIGTERM, checkpoint) and resumed on 1 sees the same data stream: its final
    weights are those of an uninterrupted 1-rank run up to floating-point reassociation (DCP reshards)."""
    import signal
    import subprocess
    import sys
    import time

    import torch
    from helpers import REPO, SPEC, TINY, engine, env

    run = [*TINY, "stages.train.schedule.steps=120", "stages.train.checkpoint.every=10"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert engine(SPEC, f"run.output={one}", *run).returncode == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.Popen(
        [*cmd, "-m", "engine", SPEC, f"run.output={two}", *run],
        cwd=REPO,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    t0 = time.time()
    while not list((two / "train" / "checkpoints").glob("step-*/train_state.json")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - t0 < 120, "no checkpoint appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert not (two / "train" / "final").exists(), "the stop came too late to test anything:\n" + out
    r = engine(SPEC, f"run.output={two}", *run)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from step" in r.stdout
    a = torch.load(one / "train" / "final" / "model.pt", weights_only=True)
    b = torch.load(two / "train" / "final" / "model.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=2e-4, rtol=1e-3, msg=f"{k} differs")
