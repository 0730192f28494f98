"""Damaged checkpoints and final/ directories: detected, reported, set aside, and fallen back from."""

from __future__ import annotations

import json
import logging
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path

import fsspec
import pytest
import torch
from helpers import REPO, SPEC, TINY, engine, torchrun

from engine.runtime.checkpoint import (
    Checkpointer,
    CheckpointError,
    Damaged,
    final_intact,
    load_final,
    parse_marker,
    save_final,
    seal,
)
from engine.runtime.distributed import Dist
from engine.runtime.trainer import run_spec
from schemas import load_spec

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on a busy machine

# ----------------------------------------------------------------------------- damage


def truncate(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Keep the first half of the file."""
    data = fs.cat_file(path)
    fs.pipe_file(path, data[: len(data) // 2])


def delete(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Remove the file."""
    fs.rm_file(path)


def flip(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Flip one bit of the byte in the middle of the file (size unchanged)."""
    data = bytearray(fs.cat_file(path))
    data[len(data) // 2] ^= 0x01
    fs.pipe_file(path, bytes(data))


DAMAGE: dict[str, Callable[[fsspec.AbstractFileSystem, str], None]] = {
    "truncate": truncate,
    "delete": delete,
    "flip": flip,
}


def damaged_dirs(fs: fsspec.AbstractFileSystem, parent: str, prefix: str) -> list[str]:
    """Names of the set-aside directories `prefix.damaged-*` under `parent`."""
    return [p.rsplit("/", 1)[-1] for p in fs.ls(parent, detail=False) if f"/{prefix}.damaged-" in p]


def warnings_of(caplog: pytest.LogCaptureFixture) -> str:
    """The engine's warnings captured so far, one per line."""
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# ------------------------------------------------------------------------- periodic checkpoints, in process


def model_and_optim(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A tiny transformer and its AdamW."""
    from engine.models.transformer import build
    from engine.runtime.trainer import build_optimizer
    from schemas.models import Transformer
    from schemas.training import AdamW

    torch.manual_seed(seed)
    model = build(Transformer(dim=16, depth=1, heads=2), 8)
    return model, build_optimizer(AdamW(lr=1e-2), {"model": model})


def train_and_save(
    url: str, steps: tuple[int, ...], keep_last: int = 5
) -> dict[int, dict[str, torch.Tensor]]:
    """One optimizer step before each checkpoint; the weights at each saved step."""
    model, optim = model_and_optim(0)
    ck = Checkpointer(url, keep_last=keep_last, dist=Dist(), name="train")
    at = {}
    for step in steps:
        tokens = torch.randint(0, 8, (2, 6), generator=torch.Generator().manual_seed(step))
        model(tokens)[0].square().mean().backward()
        optim.step()
        optim.zero_grad()
        ck.save(step, {"model": model}, optim, {"stage": "train", "tokens": float(step)})
        at[step] = {k: v.clone() for k, v in model.state_dict().items()}
    return at


def location(root: str, tmp_path: Path) -> tuple[str, fsspec.AbstractFileSystem, str]:
    """(url, filesystem, path) of a checkpoint directory on the local disk or on memory://."""
    url = f"{tmp_path}/ck" if root == "file" else f"memory://integrity/{tmp_path.name}"
    fs, path = fsspec.core.url_to_fs(url)
    return url, fs, path


FILES = {"shard": "__0_0.distcp", "metadata": ".metadata", "train_state": "train_state.json"}


@pytest.mark.parametrize("root", ["file", "memory"])
@pytest.mark.parametrize("how", list(DAMAGE))
@pytest.mark.parametrize("what", list(FILES))
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog, root, how, what):
    url, fs, path = location(root, tmp_path)
    at = train_and_save(url, (10, 20, 30))
    DAMAGE[how](fs, f"{path}/step-00000030/{FILES[what]}")

    model, optim = model_and_optim(1)
    with caplog.at_level(logging.INFO, logger="engine"):
        state = Checkpointer(url, keep_last=5, dist=Dist(), name="train").restore({"model": model}, optim)
    assert state["step"] == 20 and state["tokens"] == 20.0
    assert "files" not in state, "the file list is the checkpointer's, not the train state"
    for k, v in model.state_dict().items():
        assert torch.equal(v, at[20][k]), k
    assert {int(s["step"]) for s in optim.state_dict()["state"].values()} == {2}, "Adam state of step 20"
    message = warnings_of(caplog)
    assert "train: checkpoint step-00000030" in message and "resuming from step 20" in message, message
    if (
        what == "train_state" and how == "delete"
    ):  # indistinguishable from a save interrupted before its marker
        assert "incomplete (no train_state.json" in message, message
        assert fs.exists(f"{path}/step-00000030/__0_0.distcp"), "left for the next save at step 30 to replace"
        return
    aside = damaged_dirs(fs, path, "step-00000030")
    assert len(aside) == 1 and f"set aside as {aside[0]}" in message, (aside, message)
    assert f"is damaged ({FILES[what]}: " in message, message
    if how == "delete":
        assert f"({FILES[what]}: missing)" in message, message
    elif what == "train_state":  # unparsable, or parsable but no longer matching its own checksum
        assert "not valid JSON" in message or "does not match its own checksum" in message, message
    else:
        assert ("bytes, expected" if how == "truncate" else "content changed (crc32 ") in message, message
    assert not fs.exists(f"{path}/step-00000030"), "renamed, so no longer considered"
    kept = {p.rsplit("/", 1)[-1] for p in fs.ls(f"{path}/{aside[0]}", detail=False)}
    assert kept == set(FILES.values()) - ({FILES[what]} if how == "delete" else set()), "moved, never deleted"
    assert Checkpointer(url, keep_last=5, dist=Dist()).complete() == [10, 20]


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_shard_damage_message_says_what_is_wrong(tmp_path, caplog, how):
    url, fs, path = location("file", tmp_path)
    train_and_save(url, (10, 20))
    shard = f"{path}/step-00000020/__0_0.distcp"
    size = fs.size(shard)
    DAMAGE[how](fs, shard)
    model, optim = model_and_optim(1)
    with caplog.at_level(logging.WARNING, logger="engine"):
        assert Checkpointer(url, 5, Dist(), name="train").restore({"model": model}, optim)["step"] == 10
    expected = f"{size // 2} bytes, expected {size}" if how == "truncate" else "content changed (crc32 "
    assert f"checkpoint step-00000020 is damaged (__0_0.distcp: {expected}" in warnings_of(caplog)


def test_every_checkpoint_damaged_starts_fresh_with_a_message(tmp_path, caplog):
    url, fs, path = location("file", tmp_path)
    train_and_save(url, (10, 20))
    flip(fs, f"{path}/step-00000010/__0_0.distcp")
    truncate(fs, f"{path}/step-00000020/.metadata")
    model, optim = model_and_optim(1)
    with caplog.at_level(logging.WARNING, logger="engine"):
        assert Checkpointer(url, 5, Dist(), name="train").restore({"model": model}, optim) is None
    message = warnings_of(caplog)
    assert message.count("no intact checkpoint is left: starting from step 0") == 2, message
    assert len(damaged_dirs(fs, path, "step-00000010")) == len(damaged_dirs(fs, path, "step-00000020")) == 1


def test_prune_never_deletes_or_counts_set_aside_directories(tmp_path):
    url, fs, path = location("file", tmp_path)
    train_and_save(url, (10, 20), keep_last=2)
    flip(fs, f"{path}/step-00000020/__0_0.distcp")
    model, optim = model_and_optim(1)
    ck = Checkpointer(url, keep_last=2, dist=Dist())
    assert ck.restore({"model": model}, optim)["step"] == 10
    (aside,) = damaged_dirs(fs, path, "step-00000020")
    for step in (20, 30, 40):
        ck.save(step, {"model": model}, optim, {})
    assert ck.complete() == [30, 40], "keep_last=2 counts intact checkpoints only"
    assert fs.exists(f"{path}/{aside}/train_state.json"), "a set-aside directory is never pruned"


def test_marker_lists_every_file_with_size_and_checksum(tmp_path):
    url, fs, path = location("file", tmp_path)
    train_and_save(url, (10,))
    marker = json.loads(fs.cat_file(f"{path}/step-00000010/train_state.json"))
    on_disk = sorted(p.name for p in Path(path, "step-00000010").iterdir() if p.name != "train_state.json")
    assert sorted(marker["files"]) == on_disk == [".metadata", "__0_0.distcp"]
    for name, entry in marker["files"].items():
        data = Path(path, "step-00000010", name).read_bytes()
        assert entry == {"size": len(data), "crc32": f"{zlib.crc32(data):08x}"}
    assert parse_marker("train_state.json", json.dumps(marker).encode()) == marker


def test_any_single_flipped_byte_of_a_marker_is_detected_or_harmless():
    """A marker's own checksum covers what parsing does not: no damaged byte changes what it says."""
    marker = seal({"stage": "train", "step": 40, "tokens": 122414.0}, {"a": {"size": 3, "crc32": "0000abcd"}})
    data = (json.dumps(marker, indent=2) + "\n").encode()
    for i in range(len(data)):
        for bit in (0x01, 0x10, 0x80):
            bad = bytearray(data)
            bad[i] ^= bit
            try:
                assert parse_marker("m", bytes(bad)) == marker, (i, bit)
            except Damaged:
                pass


def test_checkpoint_written_before_checksums_still_loads_with_a_note(tmp_path, caplog):
    url, fs, path = location("file", tmp_path)
    at = train_and_save(url, (10,))
    marker = json.loads(fs.cat_file(f"{path}/step-00000010/train_state.json"))
    legacy = {k: v for k, v in marker.items() if k not in ("files", "self_crc32")}
    fs.pipe_file(f"{path}/step-00000010/train_state.json", json.dumps(legacy).encode())
    model, optim = model_and_optim(1)
    with caplog.at_level(logging.INFO, logger="engine"):
        assert Checkpointer(url, 5, Dist(), name="train").restore({"model": model}, optim)["step"] == 10
    assert "step-00000010 was written without checksums" in caplog.text and "unverified" in caplog.text
    assert all(torch.equal(v, at[10][k]) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- final/, in process


@pytest.mark.parametrize("root", ["file", "memory"])
def test_final_lists_its_weights_and_a_damaged_one_is_set_aside(tmp_path, caplog, root):
    url, fs, path = location(root, tmp_path)
    model, _ = model_and_optim(0)
    save_final(f"{url}/final", {"model": model}, {"step": 5}, Dist())
    done = json.loads(fs.cat_file(f"{path}/final/done.json"))
    data = fs.cat_file(f"{path}/final/model.pt")
    assert done["files"] == {"model.pt": {"size": len(data), "crc32": f"{zlib.crc32(data):08x}"}}
    assert final_intact(f"{url}/final", Dist(), "train")
    assert all(torch.equal(v, load_final(f"{url}/final")[k]) for k, v in model.state_dict().items())

    flip(fs, f"{path}/final/model.pt")
    with pytest.raises(Damaged, match=r"model\.pt: content changed \(crc32 "):
        load_final(f"{url}/final")
    with caplog.at_level(logging.WARNING, logger="engine"):
        assert not final_intact(f"{url}/final", Dist(), "train")
    (aside,) = damaged_dirs(fs, path, "final")
    assert (
        "train: final/ is damaged (model.pt: content changed" in caplog.text
        and f"set aside as {aside}" in caplog.text
    )
    assert not fs.exists(f"{path}/final") and fs.exists(f"{path}/{aside}/model.pt")


def test_final_written_before_checksums_is_trusted_with_a_note(tmp_path, caplog):
    model, _ = model_and_optim(0)
    final = tmp_path / "final"
    save_final(str(final), {"model": model}, {"step": 5}, Dist())
    done = json.loads((final / "done.json").read_text())
    (final / "done.json").write_text(
        json.dumps({k: v for k, v in done.items() if k not in ("files", "self_crc32")})
    )
    with caplog.at_level(logging.INFO, logger="engine"):
        assert final_intact(str(final), Dist(), "train")
    assert "train: final/ was written without checksums" in caplog.text and "not verified" in caplog.text
    assert all(torch.equal(v, load_final(str(final))[k]) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- whole runs, in process


RUN = [
    *TINY,
    "stages.train.schedule.steps=60",
    "stages.train.checkpoint.every=20",
    "stages.train.evals.0.every=60",
]


def run(out: Path, *overrides: str) -> dict[str, dict[str, float]]:
    """The tiny sparse-parity run (checkpoints at 20, 40 and the last step 60; 40 and 60 kept) in this process."""
    return run_spec(load_spec(SPEC, [f"run.output={out}", *RUN, *overrides]), Dist())


def weights(out: Path) -> dict[str, torch.Tensor]:
    """The final weights of the train stage (read without verification)."""
    return torch.load(out / "train" / "final" / "model.pt", weights_only=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished uninterrupted run directory (copy it before damaging)."""
    out = tmp_path_factory.mktemp("finished")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(out)
    finally:
        torch.set_num_threads(threads)
    return out


def resumed_from(caplog: pytest.LogCaptureFixture) -> int | None:
    """The step the stage resumed from according to the log (None: it started fresh or was skipped)."""
    for r in caplog.records:
        if r.getMessage().startswith("train: resumed from step "):
            return int(r.getMessage().rsplit(" ", 1)[-1])
    return None


@pytest.mark.slow
@pytest.mark.parametrize("how", list(DAMAGE))
@pytest.mark.parametrize("file", ["model.pt", "done.json"])
def test_damaged_final_reruns_the_stage_from_its_checkpoint(tmp_path, caplog, finished, file, how):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    fs = fsspec.filesystem("file")
    DAMAGE[how](fs, str(out / "train" / "final" / file))
    with caplog.at_level(logging.INFO, logger="engine"):
        run(out)
    message = warnings_of(caplog)
    assert "already complete" not in caplog.text
    assert resumed_from(caplog) == 60  # the checkpoint of the last step: final/ is rewritten from it
    aside = damaged_dirs(fs, str(out / "train"), "final")
    if file == "done.json" and how == "delete":  # indistinguishable from a save interrupted before its marker
        assert "train: final/ has no done.json" in message and not aside, message
    else:
        assert len(aside) == 1, aside
        assert f"train: final/ is damaged ({file}: " in message and f"set aside as {aside[0]}" in message
    assert final_intact(str(out / "train" / "final"), Dist(), "train")
    got, want = weights(out), weights(finished)
    assert all(torch.equal(got[k], want[k]) for k in want), "bit for bit the uninterrupted run's weights"


@pytest.mark.slow
def test_damaged_checkpoint_in_a_run_resumes_from_the_previous_bit_for_bit(tmp_path, caplog, finished):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    shutil.rmtree(out / "train" / "final")  # as if killed after the last checkpoint
    flip(fsspec.filesystem("file"), str(out / "train" / "checkpoints" / "step-00000060" / "__0_0.distcp"))
    with caplog.at_level(logging.INFO, logger="engine"):
        run(out)
    assert resumed_from(caplog) == 40
    assert "train: checkpoint step-00000060 is damaged (__0_0.distcp: content changed" in warnings_of(caplog)
    got, want = weights(out), weights(finished)
    assert all(torch.equal(got[k], want[k]) for k in want), "bit for bit the uninterrupted run's weights"


@pytest.mark.slow
def test_later_stage_stops_on_damaged_stage_weights_naming_the_file(tmp_path, finished):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    truncate(fsspec.filesystem("file"), str(out / "train" / "final" / "model.pt"))
    spec = load_spec(SPEC, [f"run.output={out}", *RUN])
    data = spec.model_dump(by_alias=True)
    data["stages"]["tune"] = {**data["stages"]["train"], "init": {"stage": "train"}}
    spec = type(spec).model_validate(data)
    with pytest.raises(
        CheckpointError, match=r"stage tune: the weights of stage train are damaged \(.*model\.pt: "
    ):
        run_spec(spec, Dist(), only="tune")


# ----------------------------------------------------------------------------- subprocesses


@pytest.mark.slow
def test_damaged_checkpoint_url_exits_2_naming_the_file_and_stays_in_place(tmp_path, finished):
    ref = tmp_path / "elsewhere" / "final"
    shutil.copytree(finished / "train" / "final", ref)
    flip(fsspec.filesystem("file"), str(ref / "model.pt"))
    r = engine(SPEC, f"run.output={tmp_path / 'run'}", *RUN, f"stages.train.init={{checkpoint: {ref}}}")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert f"the checkpoint {ref} is damaged ({ref}/model.pt: content changed" in r.stderr, r.stderr
    assert ref.exists() and not list(ref.parent.glob("final.damaged-*")), (
        "a URL outside the run is never renamed"
    )


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_agree_on_the_fallback_when_rank_1s_shard_is_damaged(tmp_path):
    r = torchrun(str(REPO / "tests" / "dist" / "ckpt_damage.py"), str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [x["step"] for x in ranks] == [1, 1], "both ranks fall back to the same step"
    log = r.stdout + r.stderr
    assert "train: checkpoint step-00000002 is damaged (__1_0.distcp: content changed" in log, log
    assert "resuming from step 1" in log
    # Each rank hashed (after saving) and verified (before loading) the shard it wrote; rank 0 also .metadata.
    assert (
        sorted(set(ranks[0]["hashed"])) == sorted(set(ranks[0]["verified"])) == [".metadata", "__0_0.distcp"]
    )
    assert set(ranks[1]["hashed"]) == set(ranks[1]["verified"]) == {"__1_0.distcp"}
    assert len(list((tmp_path / "ckpt").glob("step-00000002.damaged-*"))) == 1
    assert not (tmp_path / "ckpt" / "step-00000002").exists()
    want = torch.load(tmp_path / "step1.pt", weights_only=True)
    got = torch.load(tmp_path / "restored.pt", weights_only=True)
    assert all(torch.equal(got[k], want[k]) for k in want), "the restored weights are step 1's"
