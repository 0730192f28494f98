"""V-JEPA 3D multi-block masks (docs/papers/salt.md): per clip, token indices of context and target.

Tokens are numbered in (t, h, w) order over a grid of `T x H x W` tubelets: `index = t*H*W + row*W + col`.
For each mask config, and for a whole batch at once:

1. Block shape, once per batch: keep = floor(H*W*spatial_scale), a ~ U[aspect], h = round(sqrt(keep*a)),
   w = round(sqrt(keep/a)), t = max(1, floor(T*temporal_scale)), each clipped to [1, grid side].
2. Per clip: `blocks` blocks placed uniformly (start frame, top row and left column uniform over the positions
   where the block fits). Their union is the target, the rest the context. A clip whose context has fewer
   than `min_context` tokens redraws all its placements (at most `MAX_ROUNDS` times, then an error).
3. Trim: every clip keeps as many context (target) indices as the clip with the fewest, so the batch stacks
   into rectangular arrays. `truncation: random` (the default) keeps a uniform subset; `first` keeps the
   lowest indices (as V-JEPA 2's code, which drops late frames and bottom rows first, so the kept context
   leans towards early frames). Kept indices stay sorted.

Numpy only. Everything random comes from the `rng` passed in, so equal generator states give equal masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from schemas.masks import MaskGenerator, MultiBlock

MAX_ROUNDS = 100  # redraws of the clips whose context is too small before giving up


@dataclass(frozen=True)
class Draw:
    """One mask config's untrimmed draw for a batch: the block shape and the target of every clip."""

    shape: tuple[int, int, int]  # (t, h, w) of every block in this batch
    target: np.ndarray  # bool [B, T*H*W]: True where a token is in the union of the blocks


def block_shape(gen: MaskGenerator, grid: tuple[int, int, int], aspect: float) -> tuple[int, int, int]:
    """The (t, h, w) extent of one block of `gen` on `grid` for the aspect ratio (height/width) `aspect`."""
    T, H, W = grid
    keep = int(H * W * gen.spatial_scale)
    t = max(1, int(T * gen.temporal_scale))
    h = min(max(1, round(math.sqrt(keep * aspect))), H)
    w = min(max(1, round(math.sqrt(keep / aspect))), W)
    return t, h, w


def block_shapes(gen: MaskGenerator, grid: tuple[int, int, int]) -> set[tuple[int, int, int]]:
    """Every block shape that `gen` can draw on `grid` (exact: h and w change only where a root is a half)."""
    T, H, W = grid
    keep = int(H * W * gen.spatial_scale)
    low, high = gen.aspect
    points = {low, high}
    if keep > 0:
        n = np.arange(max(H, W) + 1) + 0.5
        breaks = np.concatenate([n**2 / keep, keep / n**2])
        inside = np.sort(breaks[(breaks > low) & (breaks < high)])
        edges = np.concatenate([[low], inside, [high]])
        points |= set(inside.tolist()) | set(((edges[1:] + edges[:-1]) / 2).tolist())
    return {block_shape(gen, grid, a) for a in points}


class MultiBlockMasks:
    """Samples V-JEPA multi-block (context, target) index pairs for a batch of clips on a fixed token grid."""

    def __init__(self, cfg: MultiBlock, grid: tuple[int, int, int]):
        if len(grid) != 3 or any(int(g) < 1 for g in grid):
            raise ValueError(f"grid={tuple(grid)} must be three positive sizes (t, h, w) in tokens")
        self.cfg = cfg
        self.grid: tuple[int, int, int] = tuple(int(g) for g in grid)  # type: ignore[assignment]
        self.tokens = math.prod(self.grid)
        for i, gen in enumerate(cfg.masks):
            t, h, w = max(block_shapes(gen, self.grid), key=math.prod)
            if self.tokens - t * h * w < gen.min_context:
                raise ValueError(
                    f"masks[{i}]: a {t}x{h}x{w} block leaves {self.tokens - t * h * w} of {self.tokens} "
                    f"tokens on grid {self.grid}, fewer than min_context={gen.min_context}; lower "
                    "spatial_scale, temporal_scale or min_context"
                )

    def sample(self, rng: np.random.Generator, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per mask config, (context, target) token indices: int64 [batch, Kc], [batch, Kt], rows sorted."""
        return [self.trim(d.target, rng) for d in self.draw(rng, batch)]

    def extras(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """The masks of one group of n clips as a batch's extra arrays: `context_i`, `target_i` per mask config.

        Groups are fixed by the spec (`masks.group`, V-JEPA's per-GPU batch) and drawn by their index in the
        global batch, so every world size trains on the same masked tokens.
        """
        out = {}
        for i, (context, target) in enumerate(self.sample(rng, n)):
            out[f"context_{i}"], out[f"target_{i}"] = context, target
        return out

    def draw(self, rng: np.random.Generator, batch: int) -> list[Draw]:
        """Per mask config, the untrimmed targets of `batch` clips (what `sample` trims, same draws)."""
        return [self._draw(i, gen, rng, batch) for i, gen in enumerate(self.cfg.masks)]

    def trim(self, target: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(context, target) indices of bool targets [B, N], each cut to the batch's smallest count."""
        return self._keep(~target, rng), self._keep(target, rng)

    def _draw(self, i: int, gen: MaskGenerator, rng: np.random.Generator, batch: int) -> Draw:
        """The block shape of this batch and the union of `gen.blocks` uniformly placed blocks per clip."""
        shape = block_shape(gen, self.grid, float(rng.uniform(*gen.aspect)))
        target = self._place(shape, gen.blocks, rng, batch)
        todo = np.flatnonzero(self.tokens - target.sum(1) < gen.min_context)
        for _ in range(MAX_ROUNDS):
            if todo.size == 0:
                return Draw(shape, target)
            target[todo] = self._place(shape, gen.blocks, rng, todo.size)
            todo = todo[self.tokens - target[todo].sum(1) < gen.min_context]
        if todo.size == 0:
            return Draw(shape, target)
        raise RuntimeError(
            f"masks[{i}]: {gen.blocks} blocks of {'x'.join(map(str, shape))} on grid {self.grid} left "
            f"fewer than min_context={gen.min_context} context tokens in {todo.size} clip(s) after "
            f"{MAX_ROUNDS} redraws; lower blocks, spatial_scale or min_context"
        )

    def _place(
        self, shape: tuple[int, int, int], blocks: int, rng: np.random.Generator, n: int
    ) -> np.ndarray:
        """Bool [n, T*H*W]: per clip, the union of `blocks` blocks of `shape` placed uniformly."""
        (T, H, W), (t, h, w) = self.grid, shape
        start = rng.integers(0, T - t + 1, size=(n, blocks, 1))
        top = rng.integers(0, H - h + 1, size=(n, blocks, 1))
        left = rng.integers(0, W - w + 1, size=(n, blocks, 1))

        def span(first: np.ndarray, extent: int, size: int) -> np.ndarray:
            """Float [n, blocks, size]: 1 where the coordinate lies in [first, first + extent)."""
            ax = np.arange(size)
            return ((ax >= first) & (ax < first + extent)).astype(np.float32)

        rows, cols = span(top, h, H), span(left, w, W)
        area = (rows[:, :, :, None] * cols[:, :, None, :]).reshape(n, blocks, H * W)  # [n, k, H*W]
        frames = span(start, t, T).transpose(0, 2, 1)  # [n, T, k]
        return (frames @ area > 0).reshape(n, T * H * W)  # block k covers (t, pixel) iff both spans hold

    def _keep(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Int64 [B, m]: per row, m of the True positions (m = the smallest row count), in ascending order."""
        B, N = mask.shape
        m = int(mask.sum(1).min())
        if self.cfg.truncation == "random":
            keys = np.where(mask, rng.random((B, N)), 2.0)  # False positions sort last
            kept = np.argpartition(keys, m - 1, axis=1)[:, :m] if m < N else np.argsort(keys, axis=1)
            return np.sort(kept, axis=1).astype(np.int64)
        first = mask & (np.cumsum(mask, axis=1) <= m)  # the m lowest True positions of each row
        return np.nonzero(first)[1].reshape(B, m).astype(np.int64)


def masking_ratio(
    cfg: MultiBlock, grid: tuple[int, int, int], rng: np.random.Generator, batches: int = 8, batch: int = 256
) -> dict[str, list[float]]:
    """Per mask config, mean fractions of the grid: target untrimmed, target and context after trimming."""
    masks = MultiBlockMasks(cfg, grid)
    k = len(cfg.masks)
    totals = {"target": [0.0] * k, "target_trimmed": [0.0] * k, "context_trimmed": [0.0] * k}
    for _ in range(batches):
        for i, d in enumerate(masks.draw(rng, batch)):
            context, target = masks.trim(d.target, rng)
            totals["target"][i] += float(d.target.mean())
            totals["target_trimmed"][i] += target.shape[1] / masks.tokens
            totals["context_trimmed"][i] += context.shape[1] / masks.tokens
    return {key: [v / batches for v in values] for key, values in totals.items()}
