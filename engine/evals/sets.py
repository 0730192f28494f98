"""The share of a fixed evaluation set that one rank evaluates."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from engine.data.base import Examples
from engine.data.video import Clips
from engine.runtime.distributed import Dist

Members = TypeVar("Members", Examples, Clips)


def rank_share(draw: Callable[[int], Members], examples: int, dist: Dist) -> tuple[Members, int]:
    """This rank's share of a fixed set of `examples`, and how many of its members belong to the set.

    Every rank gets ceil(examples / world) members (FSDP forwards are collectives): `draw(n)` gives the set's
    first n members for n rounded up to a multiple of the world size, and the members past `examples` (drawn
    further, or repeated) pad the last ranks' shares.
    """
    per_rank = math.ceil(examples / dist.world)
    lo = dist.rank * per_rank
    return draw(per_rank * dist.world).slice(lo, lo + per_rank), max(0, min(per_rank, examples - lo))
