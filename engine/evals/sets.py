"""The share of a fixed evaluation set that one rank evaluates."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, TypeVar

from engine.runtime.distributed import Dist


class Sliceable(Protocol):
    """A fixed set whose members can be counted and cut (Examples, Clips, top1's Videos)."""

    def __len__(self) -> int: ...

    def slice(self, start: int, stop: int) -> Sliceable: ...


Members = TypeVar("Members", bound=Sliceable)


def rank_share(draw: Callable[[int], Members], examples: int, dist: Dist) -> tuple[Members, int]:
    """This rank's share of a fixed set of `examples`, and how many of its members belong to the set.

    Every rank gets ceil(examples / world) members (FSDP forwards are collectives): `draw(n)` gives the set's
    first n members for n rounded up to a multiple of the world size, and the members past `examples` (drawn
    further, or repeated) pad the last ranks' shares.
    """
    per_rank = math.ceil(examples / dist.world)
    lo = dist.rank * per_rank
    return draw(per_rank * dist.world).slice(lo, lo + per_rank), max(0, min(per_rank, examples - lo))
