"""Mask configs for masked video modelling: V-JEPA's 3D multi-block masks (docs/papers/salt.md).

A `MultiBlock` holds several `MaskGenerator`s; each clip gets one (context, target) pair per generator, and
the encoder and predictor run once per generator. The default is V-JEPA 2's: short-range (8 blocks at spatial
scale 0.15) and long-range (2 blocks at 0.7), both spanning the whole clip in time, aspect ratio in
[0.75, 1.5]. The runtime lives in `engine/data/masks.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Problems, Strict


class MaskGenerator(Strict):
    """One mask config: `blocks` spatio-temporal blocks whose union is the target; the rest is the context."""

    blocks: int = Field(description="Blocks placed per clip; their union is the prediction target.")
    spatial_scale: float = Field(
        description="Fraction of the h*w token grid covered by one block, in (0, 1] (V-JEPA 2: 0.15 or 0.7)."
    )
    temporal_scale: float = Field(
        1.0,
        description="Fraction of the temporal token grid spanned by one block, in (0, 1] (1.0 = all frames).",
    )
    aspect: tuple[float, float] = Field(
        (0.75, 1.5),
        description="Range [low, high] of a block's height/width ratio, drawn uniformly once per batch.",
    )
    min_context: int = Field(
        1,
        description=(
            "Resample a clip's block placements while its context has fewer tokens than this "
            "(1 = only an empty context, as V-JEPA 2; I-JEPA's min_keep is 4)."
        ),
    )

    @model_validator(mode="after")
    def _ranges(self) -> MaskGenerator:
        p = Problems()
        if self.blocks < 1:
            p.add("blocks", f"blocks={self.blocks} places no target; need blocks >= 1")
        for name in ("spatial_scale", "temporal_scale"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                p.add(name, f"{name}={value} is not a fraction of the grid; need 0 < {name} <= 1")
        low, high = self.aspect
        if not 0.0 < low <= high:
            p.add("aspect", f"aspect={[low, high]} is not a range of ratios; need 0 < low <= high")
        if self.min_context < 1:
            p.add(
                "min_context",
                f"min_context={self.min_context} allows an empty context; need min_context >= 1",
            )
        p.check()
        return self


def _vjepa2_masks() -> list[MaskGenerator]:
    """V-JEPA 2's pair of mask configs: short-range and long-range multi-block."""
    return [
        MaskGenerator(blocks=8, spatial_scale=0.15, temporal_scale=1.0, aspect=(0.75, 1.5)),
        MaskGenerator(blocks=2, spatial_scale=0.7, temporal_scale=1.0, aspect=(0.75, 1.5)),
    ]


class MultiBlock(Strict):
    """V-JEPA multi-block masking: one (context, target) pair per mask config for every clip."""

    kind: Literal["multi_block"] = Field(
        "multi_block", description="3D multi-block masks (V-JEPA; docs/papers/salt.md)."
    )
    masks: list[MaskGenerator] = Field(
        default_factory=_vjepa2_masks,
        description="The mask configs; default V-JEPA 2's short-range (8 x 0.15) and long-range (2 x 0.7).",
    )
    group: int | None = Field(
        None,
        gt=0,
        description="Clips that share a block shape and are cut to their smallest counts together (V-JEPA "
        "does this per GPU batch); default: the per-rank micro-batch under the spec's resources. A step's "
        "masks are drawn per group, so they do not depend on the world size the run is launched with.",
    )
    truncation: Literal["first", "random"] = Field(
        "random",
        description=(
            "Which indices survive the cut to the batch's smallest count: 'random' (default) a uniform "
            "subset; 'first' the lowest indices, as V-JEPA 2's code, which biases the kept context towards "
            "early frames (mean kept frame 1.14 of 0-7 instead of 3.5); use it only for parity with V-JEPA 2."
        ),
    )

    @model_validator(mode="after")
    def _some(self) -> MultiBlock:
        p = Problems()
        if not self.masks:
            p.add("masks", "no mask configs; give at least one {blocks, spatial_scale} entry")
        p.check()
        return self
