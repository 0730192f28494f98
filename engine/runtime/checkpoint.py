"""Checkpoints with torch.distributed.checkpoint at any fsspec URL, verified by per-file sizes and checksums.

A checkpoint directory is complete when its marker (`train_state.json`, written last) exists; the marker
lists every other file of the directory with its size and CRC-32 and carries a CRC-32 of its own content.
`final/` works the same way with `done.json`. Loading verifies before reading: a damaged checkpoint is
reported, renamed aside (never deleted) and the newest intact one is used instead. CRC-32 detects accidental
damage (truncation, lost files, flipped bits), not deliberate tampering.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import time
import warnings
import zlib
from typing import Any

import fsspec
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from .distributed import Dist, LaunchError

log = logging.getLogger("engine")

# A single process saves and loads without a process group on purpose (no_dist=True); DCP warns regardless.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")

STEP_DIR = re.compile(r"step-(\d{8})$")  # set-aside directories (`step-XXXXXXXX.damaged-...`) never match
TRAIN_STATE = "train_state.json"
DONE = "done.json"
METADATA = ".metadata"
CHECKSUM = "crc32"  # zlib.crc32: the cheapest stdlib checksum that catches every burst of up to 32 bits
SELF = "self_crc32"  # the marker's checksum of its own content (canonical JSON of every other key)
CHUNK = 8 << 20  # files are hashed 8 MiB at a time, never whole in memory
SHARD = re.compile(r"__(\d+)_")  # DCP names the files rank r writes `__{r}_{i}.distcp`


class CheckpointError(LaunchError):
    """Weights a stage refers to (`{stage: X}` or `{checkpoint: URL}`) are missing or damaged."""


class Damaged(Exception):
    """A file of a checkpoint is missing or differs from what its marker recorded (`file: what is wrong`)."""


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(url)


def is_local(url: str) -> bool:
    """Whether a URL is on the local disk (a plain path or file://)."""
    return "file" in fsspec.core.url_to_fs(url)[0].protocol


def exists(url: str) -> bool:
    """Whether a file or directory exists at the URL."""
    fs, path = _fs(url)
    return fs.exists(path)


def read_json(url: str) -> Any:
    """Parse a JSON file at the URL."""
    with fsspec.open(url, "r") as f:
        return json.load(f)


def write_bytes(url: str, data: bytes) -> None:
    """Write a file atomically where the filesystem allows it (local: temp file + rename)."""
    fs, path = _fs(url)
    fs.makedirs(fs._parent(path), exist_ok=True)
    if "file" in fs.protocol:
        tmp = f"{path}.{socket.gethostname()}-{os.getpid()}.tmp"  # per process: array tasks write sweep.json at once
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    else:
        with fs.open(path, "wb") as f:
            f.write(data)


def write_json(url: str, obj: Any) -> None:
    """Write an object as indented JSON."""
    write_bytes(url, (json.dumps(obj, indent=2) + "\n").encode())


# ----------------------------------------------------------------------------- checksums and markers


def _hex(crc: int) -> str:
    return f"{crc & 0xFFFFFFFF:08x}"


def _entry(size: int, crc: int) -> dict[str, Any]:
    return {"size": size, CHECKSUM: _hex(crc)}


def checksum_file(url: str) -> dict[str, Any]:
    """`{"size": bytes, "crc32": hex}` of a file, read in chunks."""
    fs, path = _fs(url)
    size, crc = 0, 0
    with fs.open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
    return _entry(size, crc)


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {k: v for k, v in obj.items() if k != SELF}, sort_keys=True, separators=(",", ":")
    ).encode()


def seal(marker: dict[str, Any], files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The marker with its file list and a checksum of its own content (the last key)."""
    body = {**marker, "files": dict(sorted(files.items()))}
    return {**body, SELF: _hex(zlib.crc32(_canonical(body)))}


def parse_marker(name: str, data: bytes) -> dict[str, Any]:
    """A marker's content, checked against its own checksum; raises Damaged naming `name` and the fault.

    A marker without a file list and without its own checksum was written before checksums existed (legacy):
    it is returned as it is. One that has either must have both, so no single damaged byte can pass it off
    as legacy.
    """
    try:
        marker = json.loads(data)
    except json.JSONDecodeError as e:
        raise Damaged(
            f"{name}: not valid JSON ({len(data)} bytes; {e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    except UnicodeDecodeError:
        raise Damaged(f"{name}: not valid JSON ({len(data)} bytes, not UTF-8 text)") from None
    if not isinstance(marker, dict):
        raise Damaged(f"{name}: not a JSON object")
    if "files" not in marker and SELF not in marker:
        return marker
    if not isinstance(marker.get("files"), dict) or SELF not in marker:
        raise Damaged(f"{name}: its file list or its own checksum is missing")
    if marker[SELF] != _hex(zlib.crc32(_canonical(marker))):
        raise Damaged(f"{name}: content does not match its own checksum")
    return marker


def read_marker(url: str) -> dict[str, Any]:
    """Read and check a marker file (see `parse_marker`); a missing or unreadable one raises Damaged."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    try:
        with fsspec.open(url, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise Damaged(f"{name}: missing") from None
    except OSError as e:
        raise Damaged(f"{name}: unreadable ({e})") from None
    return parse_marker(name, data)


def _compare(name: str, found: dict[str, Any] | None, expected: dict[str, Any]) -> str | None:
    """What is wrong with a file given what was found (None: missing), or None when it matches."""
    if found is None:
        return f"{name}: missing"
    if found["size"] != expected.get("size"):
        return f"{name}: {found['size']} bytes, expected {expected.get('size')}"
    if found[CHECKSUM] != expected.get(CHECKSUM):
        return f"{name}: content changed ({CHECKSUM} {found[CHECKSUM]}, expected {expected.get(CHECKSUM)})"
    return None


def check_file(url: str, expected: dict[str, Any]) -> str | None:
    """What is wrong with a file against its marker entry (missing, size, checksum), or None when intact."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    try:
        found = checksum_file(url)
    except FileNotFoundError:
        found = None
    except OSError as e:
        return f"{name}: unreadable ({e})"
    return _compare(name, found, expected)


def _owner(name: str, index: int, world: int) -> int:
    """Which rank hashes or verifies a file: the rank that wrote a DCP shard, else round robin."""
    m = SHARD.match(name)
    return int(m.group(1)) if m and int(m.group(1)) < world else index % world


def _summary(problems: list[str]) -> str:
    shown = "; ".join(problems[:2])
    return shown + (f"; and {len(problems) - 2} more" if len(problems) > 2 else "")


def verify_dir(
    url: str, marker_name: str, dist: Dist, step: int | None = None
) -> tuple[dict | None, str | None]:
    """(marker, problem) of a checkpoint or final/ directory, the same on every rank.

    Rank 0 reads the marker; the listed files are split over the ranks (each DCP shard to the rank that
    wrote it when that rank exists) and each rank hashes its share; the problems are gathered, so every rank
    reaches the same verdict. problem is None when every file matches; a legacy marker (no file list) gets
    only a check that a checkpoint's `.metadata` exists.
    """
    url = url.rstrip("/")
    if dist.main:
        try:
            marker, problem = read_marker(f"{url}/{marker_name}"), None
            if step is not None and marker.get("step") != step:
                marker, problem = (
                    None,
                    f"{marker_name}: says step {marker.get('step')}, directory step {step}",
                )
        except Damaged as e:
            marker, problem = None, str(e)
        marker, problem = dist.broadcast_object((marker, problem))
    else:
        marker, problem = dist.broadcast_object(None)
    if problem is not None:
        return None, problem
    files = marker.get("files")
    if files is None:  # legacy
        if step is not None and dist.main and not exists(f"{url}/{METADATA}"):
            problem = f"{METADATA}: missing"
        return marker, dist.broadcast_object(problem)
    names = sorted(files)
    mine = [n for i, n in enumerate(names) if _owner(n, i, dist.world) == dist.rank]
    local = [p for n in mine if (p := check_file(f"{url}/{n}", files[n])) is not None]
    found = sorted(p for ps in dist.all_gather_object(local) for p in ps)
    return marker, (_summary(found) if found else None)


def set_aside(url: str, dist: Dist) -> str:
    """Move a damaged directory to `NAME.damaged-<UTC time>` (rank 0; never deleted); return the new name."""
    new = error = None
    if dist.main:
        fs, path = _fs(url)
        path = path.rstrip("/")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        new, n = f"{path}.damaged-{stamp}", 1
        while fs.exists(new):
            n += 1
            new = f"{path}.damaged-{stamp}-{n}"
        try:
            fs.mv(path, new, recursive=True)  # object stores: a copy, then a delete
            if fs.exists(path):  # some stores leave the emptied prefix behind
                fs.rm(path, recursive=True)
        except OSError as e:
            error = f"could not set the damaged {url} aside as {new}: {e}; move it away by hand"
    new, error = dist.broadcast_object((new, error))
    if error is not None:  # on every rank, so that none waits for the others forever
        raise OSError(error)
    return new.rsplit("/", 1)[-1]


def _strip(marker: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in marker.items() if k not in ("files", SELF)}


# ----------------------------------------------------------------------------- periodic checkpoints


def _writer(url: str) -> dcp.StorageWriter:
    return dcp.FileSystemWriter(_fs(url)[1]) if is_local(url) else FsspecWriter(url)


def _reader(url: str) -> dcp.StorageReader:
    return dcp.FileSystemReader(_fs(url)[1]) if is_local(url) else FsspecReader(url)


class Checkpointer:
    """Saves and restores models + optimizer under `{url}/step-XXXXXXXX/`, keeping the newest `keep_last`."""

    def __init__(self, url: str, keep_last: int, dist: Dist, name: str = "checkpoint"):
        self.url, self.keep_last, self.dist, self.name = url.rstrip("/"), keep_last, dist, name

    def _steps(self, complete: bool) -> list[int]:
        fs, root = _fs(self.url)
        if not fs.exists(root):
            return []
        steps = []
        for entry in fs.ls(root, detail=False):
            m = STEP_DIR.search(entry.rstrip("/"))
            if m and fs.exists(f"{entry.rstrip('/')}/{TRAIN_STATE}") == complete:
                steps.append(int(m.group(1)))
        return sorted(steps)

    def complete(self) -> list[int]:
        """Steps of the complete checkpoints (their train_state.json exists), oldest first; not verified."""
        return self._steps(complete=True)

    def _dir(self, step: int) -> str:
        return f"{self.url}/step-{step:08d}"

    @staticmethod
    def _root(models: dict[str, nn.Module]) -> nn.Module:
        """One module holding every checkpointed model (keys `name.`), or the model itself when alone."""
        return next(iter(models.values())) if len(models) == 1 else nn.ModuleDict(models)

    def _state(self, models: dict[str, nn.Module], optim: torch.optim.Optimizer) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self._root(models), optim)
        return {"model": model_sd, "optim": optim_sd}

    def _checksums(self, where: str) -> dict[str, dict[str, Any]]:
        """Size and checksum of every file of a just-written directory: each rank hashes its share."""
        if self.dist.main:
            fs, path = _fs(where)
            names = sorted(p[len(path.rstrip("/")) + 1 :] for p in fs.find(path))
        names = self.dist.broadcast_object(names if self.dist.main else None)
        mine = {
            n: checksum_file(f"{where}/{n}")
            for i, n in enumerate(names)
            if _owner(n, i, self.dist.world) == self.dist.rank
        }
        return {n: e for part in self.dist.all_gather_object(mine) for n, e in part.items()}

    def save(
        self, step: int, models: dict[str, nn.Module], optim: torch.optim.Optimizer, train_state: dict
    ) -> None:
        """Write a checkpoint of the state after `step` steps; train_state.json (with every file's size and
        checksum) goes last, then old ones go."""
        where = self._dir(step)
        if self.dist.main:
            fs, path = _fs(where)
            if fs.exists(path):  # a leftover incomplete attempt at this step
                fs.rm(path, recursive=True)
            fs.makedirs(path, exist_ok=True)
        self.dist.barrier()
        dcp.save(self._state(models, optim), storage_writer=_writer(where), no_dist=not self.dist.distributed)
        self.dist.barrier()
        files = self._checksums(where)  # right after writing: the bytes are still in the page cache
        if self.dist.main:
            write_json(f"{where}/{TRAIN_STATE}", seal({**train_state, "step": step}, files))
            self._prune()
        self.dist.barrier()

    def _prune(self) -> None:
        """Delete step directories beyond the newest `keep_last` complete ones; set-aside ones never match."""
        fs, root = _fs(self.url)
        keep = self.complete()[-self.keep_last :]
        newest = keep[-1] if keep else -1
        for entry in fs.ls(root, detail=False):
            m = STEP_DIR.search(entry.rstrip("/"))
            if m and int(m.group(1)) not in keep and int(m.group(1)) < newest:
                fs.rm(entry, recursive=True)

    def newest_intact(self) -> tuple[int, dict[str, Any]] | None:
        """(step, marker) of the newest checkpoint that passes verification, the same on every rank.

        Damaged ones on the way are renamed aside and reported in one warning each; newer incomplete ones
        (an interrupted save) are reported and left for the next save at that step to replace.
        """
        damaged: list[tuple[int, str, str]] = []
        found = None
        while found is None:
            steps = self.dist.broadcast_object(self.complete() if self.dist.main else None)
            if not steps:
                break
            marker, problem = verify_dir(self._dir(steps[-1]), TRAIN_STATE, self.dist, steps[-1])
            if problem is None:
                found = (steps[-1], marker)
            else:
                damaged.append((steps[-1], problem, set_aside(self._dir(steps[-1]), self.dist)))
        if self.dist.main:
            then = f"resuming from step {found[0]}" if found else "starting from step 0"
            for step, problem, new in damaged:
                left = "" if found else "no intact checkpoint is left: "
                log.warning(
                    f"{self.name}: checkpoint step-{step:08d} is damaged ({problem}); "
                    f"set aside as {new}; {left}{then}"
                )
            for step in self._steps(complete=False):
                if step > (found[0] if found else -1):
                    log.warning(
                        f"{self.name}: checkpoint step-{step:08d} is incomplete "
                        f"(no {TRAIN_STATE}: an interrupted save); ignored; {then}"
                    )
            if found and "files" not in found[1]:
                log.info(
                    f"{self.name}: checkpoint step-{found[0]:08d} was written without checksums "
                    f"(no file list in {TRAIN_STATE}); loading it unverified"
                )
        return found

    def restore(self, models: dict[str, nn.Module], optim: torch.optim.Optimizer) -> dict | None:
        """Load the newest intact checkpoint into the models and optimizer; return its train state."""
        found = self.newest_intact()
        if found is None:
            return None
        step, marker = found
        where = self._dir(step)
        state = self._state(models, optim)
        dcp.load(state, storage_reader=_reader(where), no_dist=not self.dist.distributed)
        set_state_dict(
            self._root(models), optim, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
        return _strip(marker)


# ----------------------------------------------------------------------------- final/


def save_final(url: str, models: dict[str, nn.Module], done: dict, dist: Dist) -> None:
    """Write consolidated full weights `{name}.pt` (rank 0), then `done.json` listing them with their size
    and checksum: the stage's completion marker."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    files: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        sd = get_model_state_dict(model, options=opts)
        if dist.main:
            buf = io.BytesIO()
            torch.save(sd, buf)
            data = buf.getbuffer()
            files[f"{name}.pt"] = _entry(len(data), zlib.crc32(data))  # hashed as it is written
            write_bytes(f"{url}/{name}.pt", data)
            del data
    dist.barrier()
    if dist.main:
        write_json(f"{url}/{DONE}", seal(done, files))
    dist.barrier()


def final_intact(url: str, dist: Dist, stage: str) -> bool:
    """Whether a stage's final/ is complete and intact; a damaged one is reported and renamed aside."""
    url = url.rstrip("/")
    if not dist.broadcast_object(exists(f"{url}/{DONE}") if dist.main else None):
        if dist.main and exists(url):
            log.warning(f"{stage}: final/ has no {DONE} (an interrupted save); running the stage")
        return False
    marker, problem = verify_dir(url, DONE, dist)
    if problem is None:
        if dist.main and "files" not in marker:
            log.info(f"{stage}: final/ was written without checksums (no file list in {DONE}); not verified")
        return True
    new = set_aside(url, dist)
    if dist.main:
        log.warning(
            f"{stage}: final/ is damaged ({problem}); set aside as {new}; "
            "re-running the stage from its newest intact checkpoint"
        )
    return False


def read_done(url: str) -> dict[str, Any]:
    """The checked done.json of a final/ directory (without its file list); raises Damaged when it is not."""
    return _strip(read_marker(f"{url.rstrip('/')}/{DONE}"))


def load_final(url: str, name: str = "model") -> dict[str, torch.Tensor]:
    """Read consolidated weights written by `save_final`, verified against done.json (weights_only loading).

    Raises Damaged naming the file when done.json or `{name}.pt` is missing or does not match.
    """
    url = url.rstrip("/")
    marker = read_marker(f"{url}/{DONE}")
    fname = f"{name}.pt"
    expected = marker.get("files", {}).get(fname) if "files" in marker else None
    if "files" in marker and expected is None:
        raise Damaged(f"{fname}: not listed in {DONE}")
    buf, size, crc = io.BytesIO(), 0, 0
    try:
        with fsspec.open(f"{url}/{fname}", "rb") as f:
            while chunk := f.read(CHUNK):  # hashed while read: the file is read once
                buf.write(chunk)
                size += len(chunk)
                crc = zlib.crc32(chunk, crc)
    except FileNotFoundError:
        raise Damaged(f"{fname}: missing") from None
    if expected is not None and (problem := _compare(fname, _entry(size, crc), expected)):
        raise Damaged(problem)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=True)
