"""Tests of V-JEPA 3D multi-block masking (docs/papers/salt.md): configs, index invariants, block geometry.

Hypothesis draws mask configs, token grids, batch sizes and seeds; each property holds for every draw.
The last test measures the masking ratios of the default (V-JEPA 2) configs at 224 px, 16 frames (grid
8x14x14) and prints them (run with `-s`; they are also attached to the test report with `record_property`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.data.masks import MultiBlockMasks, block_shape, block_shapes, masking_ratio
from engine.data.stream import counter_rng
from schemas.masks import MaskGenerator, MultiBlock

GRID = (8, 14, 14)  # 16 frames / tubelet 2, 224 px / patch 16
SEEDS = st.integers(0, 2**63 - 1)
FAST = settings(max_examples=60, deadline=None)


@st.composite
def generators(draw: st.DrawFn) -> MaskGenerator:
    """A valid mask config: few blocks, any scales in (0, 1], an aspect range inside [0.2, 4]."""
    low = draw(st.floats(0.2, 3.0))
    return MaskGenerator(
        blocks=draw(st.integers(1, 4)),
        spatial_scale=draw(st.floats(0.01, 1.0)),
        temporal_scale=draw(st.floats(0.05, 1.0)),
        aspect=(low, draw(st.floats(low, 4.0))),
        min_context=draw(st.integers(1, 3)),
    )


GRIDS = st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9))


def build(cfg: MultiBlock, grid: tuple[int, int, int]) -> MultiBlockMasks:
    """The sampler, or a rejected example when the config cannot fit `grid` (a documented ValueError)."""
    try:
        return MultiBlockMasks(cfg, grid)
    except ValueError:
        reject()


def guarded(fn: Callable[[], object]) -> object:
    """`fn()`, rejecting the example when placements keep leaving too little context (a documented error)."""
    try:
        return fn()
    except RuntimeError:
        reject()


# ---- configs -----------------------------------------------------------------------------------------------


def test_defaults_are_vjepa2() -> None:
    """Short-range 8 x 0.15 and long-range 2 x 0.7, whole clip in time, aspect [0.75, 1.5]; the cut to the
    batch's smallest count is random, not V-JEPA 2's lowest indices (which favour early frames)."""
    cfg = MultiBlock()
    got = [(m.blocks, m.spatial_scale, m.temporal_scale, m.aspect, m.min_context) for m in cfg.masks]
    assert got == [(8, 0.15, 1.0, (0.75, 1.5), 1), (2, 0.7, 1.0, (0.75, 1.5), 1)]
    assert cfg.truncation == "random" and cfg.kind == "multi_block"


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"blocks": 0}, "blocks", "need blocks >= 1"),
        ({"spatial_scale": 0.0}, "spatial_scale", "need 0 < spatial_scale <= 1"),
        ({"spatial_scale": 1.5}, "spatial_scale", "need 0 < spatial_scale <= 1"),
        ({"temporal_scale": -0.5}, "temporal_scale", "need 0 < temporal_scale <= 1"),
        ({"aspect": (1.5, 0.75)}, "aspect", "need 0 < low <= high"),
        ({"aspect": (0.0, 1.0)}, "aspect", "need 0 < low <= high"),
        ({"min_context": 0}, "min_context", "need min_context >= 1"),
    ],
)
def test_invalid_generator(fields: dict, field: str, message: str) -> None:
    """Each out-of-range value is an error at its own field, with the rule that fixes it."""
    with pytest.raises(ValidationError) as err:
        MaskGenerator(**{"blocks": 2, "spatial_scale": 0.5, **fields})
    [(where, what)] = err.value.errors()[0]["ctx"]["problems"]
    assert where == field and message in what


def test_nan_scale_is_refused_at_its_field() -> None:
    """NaN compares false with everything, so no range rule could catch it: no spec field takes it."""
    with pytest.raises(ValidationError) as err:
        MaskGenerator(blocks=2, spatial_scale=float("nan"))
    [e] = err.value.errors()
    assert e["loc"] == ("spatial_scale",) and e["type"] == "finite_number"


def test_every_problem_reported_at_once() -> None:
    """Several wrong fields are all reported, not only the first."""
    with pytest.raises(ValidationError) as err:
        MaskGenerator(blocks=0, spatial_scale=2.0, aspect=(2.0, 1.0))
    fields = [f for f, _ in err.value.errors()[0]["ctx"]["problems"]]
    assert fields == ["blocks", "spatial_scale", "aspect"]


def test_multiblock_needs_a_mask_and_known_keys() -> None:
    """An empty list of mask configs and an unknown key are both errors."""
    with pytest.raises(ValidationError, match="at least one"):
        MultiBlock(masks=[])
    with pytest.raises(ValidationError, match="Extra inputs"):
        MultiBlock(masks=[{"blocks": 1, "spatial_scale": 0.5, "scale": 0.3}])


def test_infeasible_grid_is_refused() -> None:
    """A block that covers the whole grid leaves no context whatever its placement: refused when built."""
    with pytest.raises(ValueError, match="fewer than min_context"):
        MultiBlockMasks(
            MultiBlock(masks=[{"blocks": 1, "spatial_scale": 1.0, "aspect": (1.0, 1.0)}]), (2, 4, 4)
        )
    with pytest.raises(ValueError, match="fewer than min_context"):
        MultiBlockMasks(MultiBlock(), (1, 1, 1))
    with pytest.raises(ValueError, match="positive"):
        MultiBlockMasks(MultiBlock(), (8, 0, 14))


# ---- index invariants --------------------------------------------------------------------------------------


@FAST
@given(
    st.lists(generators(), min_size=1, max_size=3),
    GRIDS,
    st.sampled_from(["first", "random"]),
    st.integers(1, 12),
    SEEDS,
)
def test_indices_partition_the_grid(
    gens: list[MaskGenerator], grid: tuple[int, int, int], truncation: str, batch: int, seed: int
) -> None:
    """Per config: rectangular int64 arrays, sorted unique in-range indices, context and target disjoint,
    each a subset of the clip's untrimmed context/target, cut to exactly the batch's smallest count."""
    masks = build(MultiBlock(masks=gens, truncation=truncation), grid)
    pairs = guarded(lambda: masks.sample(counter_rng(seed), batch))
    draws = masks.draw(counter_rng(seed), batch)  # the same draws: `sample` trims what `draw` returns
    n = math.prod(grid)
    assert len(pairs) == len(gens) == len(draws)
    for gen, (context, target), d in zip(gens, pairs, draws, strict=True):
        for idx in (context, target):
            assert idx.dtype == np.int64 and idx.ndim == 2 and idx.shape[0] == batch
            assert idx.shape[1] >= 1 and idx.min() >= 0 and idx.max() < n
            assert (np.diff(idx, axis=1) > 0).all()  # sorted, no duplicates
        counts = d.target.sum(1)
        assert target.shape[1] == counts.min() and context.shape[1] == (n - counts).min()
        assert context.shape[1] >= gen.min_context
        for b in range(batch):
            assert not np.intersect1d(context[b], target[b]).size
            assert d.target[b, target[b]].all() and not d.target[b, context[b]].any()


@FAST
@given(st.lists(generators(), min_size=1, max_size=2), GRIDS, st.integers(1, 12), SEEDS)
def test_first_truncation_keeps_lowest_indices(
    gens: list[MaskGenerator], grid: tuple[int, int, int], batch: int, seed: int
) -> None:
    """`truncation: first` (V-JEPA 2) keeps each clip's lowest target and context indices."""
    masks = build(MultiBlock(masks=gens, truncation="first"), grid)
    pairs = guarded(lambda: masks.sample(counter_rng(seed), batch))
    for (context, target), d in zip(pairs, masks.draw(counter_rng(seed), batch), strict=True):
        for b in range(batch):
            assert np.array_equal(target[b], np.flatnonzero(d.target[b])[: target.shape[1]])
            assert np.array_equal(context[b], np.flatnonzero(~d.target[b])[: context.shape[1]])


def test_random_truncation_is_not_first() -> None:
    """`truncation: random` keeps subsets that are not the lowest indices, reaching late frames too."""
    first = MultiBlockMasks(MultiBlock(truncation="first"), GRID).sample(counter_rng(3), 64)
    rand = MultiBlockMasks(MultiBlock(truncation="random"), GRID).sample(counter_rng(3), 64)
    for (c1, t1), (c2, t2) in zip(first, rand, strict=True):
        assert c1.shape == c2.shape and t1.shape == t2.shape
        assert not np.array_equal(t1, t2)
        assert t2.mean() > t1.mean()  # the cut no longer drops only the highest indices


def test_random_truncation_keeps_context_from_every_frame_alike() -> None:
    """The default cut keeps the long-range context centred in time (mean frame ~3.5 of 0-7 at 8x14x14, group
    24); V-JEPA 2's `first` keeps mostly early frames (~1.2), the bias that made `random` the default."""
    mean_frame = {}
    for truncation in ("first", "random"):
        masks = MultiBlockMasks(MultiBlock(truncation=truncation), GRID)
        frames = [masks.sample(counter_rng(4, s), 24)[1][0] // (14 * 14) for s in range(8)]
        mean_frame[truncation] = float(np.mean(np.concatenate([f.ravel() for f in frames])))
    assert abs(mean_frame["random"] - 3.5) < 0.2 and mean_frame["first"] < 1.6, mean_frame


def test_context_resampled_until_large_enough() -> None:
    """Clips whose context would be below min_context are redrawn; without the knob such clips occur."""
    gen = {"blocks": 2, "spatial_scale": 0.5, "aspect": (1.0, 1.0)}  # 3x3 blocks on 4x4: context 2..7
    grid = (1, 4, 4)
    plain = MultiBlockMasks(MultiBlock(masks=[gen]), grid).draw(counter_rng(0), 500)[0]
    assert (16 - plain.target.sum(1) < 5).any()
    picky = MultiBlockMasks(MultiBlock(masks=[{**gen, "min_context": 5}]), grid)
    assert (16 - picky.draw(counter_rng(0), 500)[0].target.sum(1) >= 5).all()
    (context, _) = picky.sample(counter_rng(0), 500)[0]
    assert context.shape[1] >= 5
    # two 1x1 blocks on 2 tokens: half of the first placements leave an empty context
    pair = MultiBlockMasks(MultiBlock(masks=[{"blocks": 2, "spatial_scale": 0.5}]), (1, 1, 2))
    assert (pair.draw(counter_rng(1), 200)[0].target.sum(1) == 1).all()


def test_hopeless_context_is_an_error() -> None:
    """When redraws keep covering the whole grid the sampler stops with an error rather than looping."""
    crowd = MultiBlock(masks=[{"blocks": 200, "spatial_scale": 0.05, "aspect": (1.0, 1.0)}])
    with pytest.raises(RuntimeError, match="redraws"):
        MultiBlockMasks(crowd, (1, 1, 20)).sample(counter_rng(0), 64)


# ---- block geometry ----------------------------------------------------------------------------------------


def aspect_interval(side: int, root_of: Callable[[float], float], limit: int) -> tuple[float, float]:
    """The aspect ratios a for which a side computed as clip(round(root_of(a)), 1, limit) can equal `side`."""
    lo, hi = side - 0.5, side + 0.5
    if side == 1:
        lo = 0.0
    if side == limit:
        hi = math.inf
    return root_of(lo), root_of(hi)


@FAST
@given(generators(), GRIDS, st.integers(1, 16), SEEDS)
def test_single_block_follows_scales(
    gen: MaskGenerator, grid: tuple[int, int, int], batch: int, seed: int
) -> None:
    """One block: the target is a t x h x w box with t = floor(T*temporal_scale), h*w = keep within rounding,
    and some aspect in the configured range rounds to (h, w)."""
    gen = gen.model_copy(update={"blocks": 1})
    masks = build(MultiBlock(masks=[gen]), grid)
    d = guarded(lambda: masks.draw(counter_rng(seed), batch))[0]
    T, H, W = grid
    t, h, w = d.shape
    keep = int(H * W * gen.spatial_scale)
    assert t == max(1, int(T * gen.temporal_scale))
    assert 1 <= h <= H and 1 <= w <= W
    if 1 < h < H and 1 < w < W:  # unclipped: |h - sqrt(keep a)| <= 1/2 and |w - sqrt(keep / a)| <= 1/2
        assert abs(h * w - keep) <= 0.5 * (h + w) + 0.25
    # h pins a to [(h-1/2)^2, (h+1/2)^2] / keep and w to keep / [(w+1/2)^2, (w-1/2)^2]; both meet the range
    if keep > 0:
        a_h = aspect_interval(h, lambda s: s * s / keep, H)
        a_w = aspect_interval(w, lambda s: keep / (s * s) if s > 0 else math.inf, W)[::-1]
        low = max(a_h[0], a_w[0], gen.aspect[0])
        high = min(a_h[1], a_w[1], gen.aspect[1])
        assert low <= high * (1 + 1e-9)
    else:
        assert (h, w) == (1, 1)
    assert d.shape in block_shapes(gen, grid)
    assert (d.target.sum(1) == t * h * w).all()
    for b in range(batch):  # the covered tokens form one box: their bounding box has the block's extent
        coords = np.unravel_index(np.flatnonzero(d.target[b]), grid)
        assert tuple(int(c.max() - c.min() + 1) for c in coords) == (t, h, w)


def test_corners_uniform_over_valid_positions() -> None:
    """Every position where a 2x2 block fits on a 1x5x5 grid is used, about equally often (16 positions)."""
    gen = {"blocks": 1, "spatial_scale": 4 / 25, "aspect": (1.0, 1.0)}
    d = MultiBlockMasks(MultiBlock(masks=[gen]), (1, 5, 5)).draw(counter_rng(0), 4000)[0]
    assert d.shape == (1, 2, 2)
    counts = np.bincount(d.target.argmax(1), minlength=25).reshape(5, 5)  # a clip's first token: its corner
    assert (counts[4] == 0).all() and (counts[:, 4] == 0).all()  # the block would not fit there
    assert counts[:4, :4].min() > 4000 / 16 * 0.7 and counts[:4, :4].max() < 4000 / 16 * 1.3


def test_block_shape_defaults() -> None:
    """At 8x14x14 short blocks hold ~29 tokens per frame (keep = 29), long ones ~137, over all frames."""
    short, long = MultiBlock().masks
    assert block_shape(short, GRID, 1.0) == (8, 5, 5) and block_shape(long, GRID, 1.0) == (8, 12, 12)
    assert block_shapes(short, GRID) == {(8, 5, 5), (8, 5, 6), (8, 6, 4), (8, 6, 5), (8, 7, 4)}
    assert max(h for _, h, _ in block_shapes(long, GRID)) == 14  # a = 1.5: round(sqrt(205.5)) = 14, clipped


# ---- determinism -------------------------------------------------------------------------------------------


@FAST
@given(st.lists(generators(), min_size=1, max_size=2), GRIDS, st.sampled_from(["first", "random"]), SEEDS)
def test_same_rng_same_masks(
    gens: list[MaskGenerator], grid: tuple[int, int, int], truncation: str, seed: int
) -> None:
    """Equal generator states give identical masks (two samplers, two generators)."""
    cfg = MultiBlock(masks=gens, truncation=truncation)
    a = guarded(lambda: build(cfg, grid).sample(counter_rng(seed, 7), 5))
    b = build(cfg, grid).sample(counter_rng(seed, 7), 5)
    for (c1, t1), (c2, t2) in zip(a, b, strict=True):
        assert np.array_equal(c1, c2) and np.array_equal(t1, t2)


def test_different_rng_different_masks() -> None:
    """Different keys give different masks; later calls on one generator differ from earlier ones."""
    masks = MultiBlockMasks(MultiBlock(), GRID)
    a, b = masks.sample(counter_rng(0, 1), 8), masks.sample(counter_rng(0, 2), 8)
    rng = counter_rng(0, 1)
    masks.sample(rng, 8)
    c = masks.sample(rng, 8)
    for x, y, z in zip(a, b, c, strict=True):
        assert not np.array_equal(x[1], y[1]) and not np.array_equal(x[1], z[1])


# ---- the number for the report -----------------------------------------------------------------------------


def test_default_masking_ratio(record_property: Callable[[str, object], None]) -> None:
    """Mean target fraction per clip of the V-JEPA 2 defaults at grid 8x14x14, printed and recorded.

    Rigorous band, per config with k blocks of area A (tokens per frame) out of 196: at least one block
    (A_min/196), at most 1 - (1 - A_max/196)^k, since the union's mean coverage is a mean over tokens of
    1 - (1 - p_x)^k, concave in p_x whose mean is the block area / 196 (Jensen). Also within 0.05 of the
    per-clip fractions docs/papers/salt.md gives as implied (0.63 short, 0.82 long).
    """
    cfg = MultiBlock()
    report = {
        b: masking_ratio(cfg, GRID, counter_rng(0, b), batches=max(8, 4096 // b), batch=b) for b in (32, 256)
    }
    lines = ["masking ratio, defaults at grid 8x14x14 (fraction of 1568 tokens; mean over clips):"]
    for b, r in report.items():
        for i, name in enumerate(("short 8x0.15", "long 2x0.7")):
            lines.append(
                f"  batch {b:3d}  {name:13s} target {r['target'][i]:.3f}  after trim: target "
                f"{r['target_trimmed'][i]:.3f} context {r['context_trimmed'][i]:.3f}"
            )
            record_property(f"b{b}_{name.split()[0]}", {k: round(v[i], 4) for k, v in r.items()})
    print("\n" + "\n".join(lines))

    for i, (gen, implied) in enumerate(zip(cfg.masks, (0.63, 0.82), strict=True)):
        areas = [h * w / 196 for _, h, w in block_shapes(gen, GRID)]
        for r in report.values():
            assert min(areas) <= r["target"][i] <= 1 - (1 - max(areas)) ** gen.blocks
            assert abs(r["target"][i] - implied) < 0.05
            assert r["target_trimmed"][i] <= r["target"][i] and r["context_trimmed"][i] <= 1 - r["target"][i]
