"""Process group and device mesh from torchrun's environment (gloo on CPU; nccl plus a gloo group on GPU)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

log = logging.getLogger("engine")


class LaunchError(RuntimeError):
    """The job cannot start as launched (wrong device, world size incompatible with the spec)."""


@dataclass
class Dist:
    """This process's place in the job: rank, world size, device, mesh, and a CPU group for host collectives."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    mesh: DeviceMesh | None = None
    cpu_group: dist.ProcessGroup | None = None

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the one that logs and writes metadata)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group is in use (torchrun with any world size)."""
        return self.mesh is not None

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.distributed:
            dist.barrier(group=self.cpu_group)

    def all_reduce(self, t: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
        """Reduce a host tensor over ranks in place over the CPU group and return it."""
        if self.distributed:
            dist.all_reduce(t, op=op, group=self.cpu_group)
        return t

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any rank (every rank must call it)."""
        if not self.distributed:
            return flag
        return bool(self.all_reduce(torch.tensor([float(flag)]))[0] > 0)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's picklable `obj`, in rank order, on every rank (over the CPU group; `[obj]` alone)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj, group=self.cpu_group)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s picklable `obj` on every rank (what the other ranks pass is ignored)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src, group=self.cpu_group)
        return box[0]

    def close(self) -> None:
        """Tear down the process group."""
        if dist.is_initialized():
            dist.barrier(group=self.cpu_group)  # no rank may tear down gloo while a peer still talks to it
            dist.destroy_process_group()


def init(device: str) -> Dist:
    """Join the job torchrun started (or run alone when not under torchrun) on `device` (cpu | cuda)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise LaunchError(
            "resources.device is cuda but no CUDA device is visible; set resources.device=cpu to run on CPU"
        )
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        dev = torch.device("cuda", 0) if device == "cuda" else torch.device("cpu")
        if device == "cuda":
            torch.cuda.set_device(dev)
        return Dist(device=dev)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", device_id=dev)
        cpu_group = dist.new_group(backend="gloo")
    else:
        dev = torch.device("cpu")
        dist.init_process_group("gloo")
        cpu_group = None  # the default group is already gloo
    mesh = init_device_mesh(dev.type, (world,), mesh_dim_names=("dp",))
    return Dist(rank, world, local_rank, dev, mesh, cpu_group)


def device_memory_bytes(d: Dist) -> int:
    """Memory this rank may use: its GPU's on CUDA; on CPU the machine's RAM shared by the ranks on this node."""
    if d.device.type == "cuda":
        return torch.cuda.get_device_properties(d.device).total_memory
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ram // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
