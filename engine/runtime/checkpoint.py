"""Checkpoints with torch.distributed.checkpoint at any fsspec URL; `train_state.json` last marks completion."""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
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

from .distributed import Dist

log = logging.getLogger("engine")

# A single process saves and loads without a process group on purpose (no_dist=True); DCP warns regardless.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")

STEP_DIR = re.compile(r"step-(\d{8})$")
TRAIN_STATE = "train_state.json"


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
        tmp = path + ".tmp"
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    else:
        with fs.open(path, "wb") as f:
            f.write(data)


def write_json(url: str, obj: Any) -> None:
    """Write an object as indented JSON."""
    write_bytes(url, (json.dumps(obj, indent=2) + "\n").encode())


def _writer(url: str) -> dcp.StorageWriter:
    return dcp.FileSystemWriter(_fs(url)[1]) if is_local(url) else FsspecWriter(url)


def _reader(url: str) -> dcp.StorageReader:
    return dcp.FileSystemReader(_fs(url)[1]) if is_local(url) else FsspecReader(url)


class Checkpointer:
    """Saves and restores models + optimizer under `{url}/step-XXXXXXXX/`, keeping the newest `keep_last`."""

    def __init__(self, url: str, keep_last: int, dist: Dist):
        self.url, self.keep_last, self.dist = url.rstrip("/"), keep_last, dist

    def complete(self) -> list[int]:
        """Steps of the complete checkpoints (their train_state.json exists), oldest first."""
        fs, root = _fs(self.url)
        if not fs.exists(root):
            return []
        steps = []
        for entry in fs.ls(root, detail=False):
            m = STEP_DIR.search(entry.rstrip("/"))
            if m and fs.exists(f"{entry.rstrip('/')}/{TRAIN_STATE}"):
                steps.append(int(m.group(1)))
        return sorted(steps)

    def _dir(self, step: int) -> str:
        return f"{self.url}/step-{step:08d}"

    @staticmethod
    def _root(models: dict[str, nn.Module]) -> nn.Module:
        """One module holding every checkpointed model (keys `name.`), or the model itself when alone."""
        return next(iter(models.values())) if len(models) == 1 else nn.ModuleDict(models)

    def _state(self, models: dict[str, nn.Module], optim: torch.optim.Optimizer) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self._root(models), optim)
        return {"model": model_sd, "optim": optim_sd}

    def save(
        self, step: int, models: dict[str, nn.Module], optim: torch.optim.Optimizer, train_state: dict
    ) -> None:
        """Write a checkpoint of the state after `step` steps; train_state.json goes last, then old ones go."""
        where = self._dir(step)
        if self.dist.main:
            fs, path = _fs(where)
            if fs.exists(path):  # a leftover incomplete attempt at this step
                fs.rm(path, recursive=True)
            fs.makedirs(path, exist_ok=True)
        self.dist.barrier()
        dcp.save(self._state(models, optim), storage_writer=_writer(where), no_dist=not self.dist.distributed)
        self.dist.barrier()
        if self.dist.main:
            write_json(f"{where}/{TRAIN_STATE}", {**train_state, "step": step})
            self._prune()
        self.dist.barrier()

    def _prune(self) -> None:
        fs, root = _fs(self.url)
        keep = self.complete()[-self.keep_last :]
        newest = keep[-1] if keep else -1
        for entry in fs.ls(root, detail=False):
            m = STEP_DIR.search(entry.rstrip("/"))
            if m and int(m.group(1)) not in keep and int(m.group(1)) < newest:
                fs.rm(entry, recursive=True)

    def restore(self, models: dict[str, nn.Module], optim: torch.optim.Optimizer) -> dict | None:
        """Load the newest complete checkpoint into the models and optimizer; return its train state."""
        steps = self.complete()
        if not steps:
            return None
        where = self._dir(steps[-1])
        state = self._state(models, optim)
        dcp.load(state, storage_reader=_reader(where), no_dist=not self.dist.distributed)
        set_state_dict(
            self._root(models), optim, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
        return read_json(f"{where}/{TRAIN_STATE}")


def save_final(url: str, models: dict[str, nn.Module], done: dict, dist: Dist) -> None:
    """Write consolidated full weights `{name}.pt` (rank 0) and then `done.json`, the stage's completion marker."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    for name, model in models.items():
        sd = get_model_state_dict(model, options=opts)
        if dist.main:
            buf = io.BytesIO()
            torch.save(sd, buf)
            write_bytes(f"{url}/{name}.pt", buf.getvalue())
    dist.barrier()
    if dist.main:
        write_json(f"{url}/done.json", done)
    dist.barrier()


def load_final(url: str, name: str = "model") -> dict[str, torch.Tensor]:
    """Read consolidated weights written by `save_final` (weights_only: no code runs on load)."""
    url = url.rstrip("/")
    if not exists(f"{url}/done.json"):
        raise FileNotFoundError(f"{url} is not a complete final/ directory (no done.json)")
    with fsspec.open(f"{url}/{name}.pt", "rb") as f:
        return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
