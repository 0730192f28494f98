"""Configs of the video sources: procedural clips (`kind: synthetic_video`) and clips read from files
(`kind: video_files`)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from ..base import Problems
from .base import IntRange, Loading

FloatRange = Annotated[tuple[float, float], Field(description="Inclusive range [low, high].")]
VideoShape = Literal["disc", "square", "triangle", "ring", "cross"]
VideoColour = Literal["red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange"]
VideoTexture = Literal["solid", "stripes", "checker"]
VideoTask = Literal["direction", "speed", "rotation", "shape", "colour", "texture"]


def _distinct(p: Problems, name: str, values: tuple) -> None:
    """Record a problem when `values` is empty or repeats an item."""
    if not values:
        p.add(name, f"{name} is empty; list at least one")
    elif len(set(values)) != len(values):
        p.add(name, f"{name} {list(values)} repeats an item; list each once")


class SyntheticVideo(Loading):
    """Procedural clips (numpy): textured shapes that move, bounce and spin over a noisy background.

    The largest object is the target; motion labels (direction, speed, rotation) are invisible in any single
    frame, appearance labels (shape, colour, texture) are visible in every frame.
    """

    kind: Literal["synthetic_video"] = Field(
        "synthetic_video",
        description="Synthetic moving-shapes clips for SSL and probes (docs/papers/salt.md).",
    )
    frames: int = Field(16, ge=2, le=256, description="Frames per clip (T).")
    resolution: int = Field(64, ge=16, le=1024, description="Frame height and width in pixels (square).")
    channels: Literal[1, 3] = Field(3, description="3 = RGB, 1 = grey (luma).")
    objects: IntRange = Field((1, 3), description="Objects per clip, target included, inclusive [low, high].")
    shapes: tuple[VideoShape, ...] = Field(
        ("disc", "square", "triangle", "ring", "cross"), description="Shapes drawn from (classes of `shape`)."
    )
    colours: tuple[VideoColour, ...] = Field(
        ("red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange"),
        description="Palette; objects of one clip have distinct colours (classes of `colour`).",
    )
    textures: tuple[VideoTexture, ...] = Field(
        ("solid", "stripes", "checker"),
        description="Surface patterns, fixed to the object so they turn with it (classes of `texture`).",
    )
    speeds: tuple[float, ...] = Field(
        (0.0, 0.25, 0.5),
        description="Speed levels: distance travelled over the clip in frame widths; 0 = static (classes of `speed`).",
    )
    spin: float = Field(
        0.5, gt=0, description="Turns made over the clip by a rotating object (cw or ccw; 1/3 do not turn)."
    )
    target_size: FloatRange = Field(
        (0.25, 0.35), description="Diameter of the target as a fraction of the frame, [low, high]."
    )
    distractor_size: FloatRange = Field(
        (0.12, 0.2), description="Diameter of the other objects as a fraction of the frame, [low, high]."
    )
    distractors_move: bool = Field(
        True, description="Other objects move and spin at random too (false: they stand still)."
    )
    background: Literal["noise", "plain"] = Field(
        "noise", description="noise = smooth blotches plus per-pixel grain (static); plain = one flat colour."
    )
    label: VideoTask = Field(
        "direction",
        description="Label task of `labels` (all are in `meta`): direction (8, +static), speed, rotation, shape, colour, texture.",
    )

    TASKS: ClassVar[tuple[str, ...]] = ("direction", "speed", "rotation", "shape", "colour", "texture")
    DIRECTIONS: ClassVar[tuple[str, ...]] = ("E", "NE", "N", "NW", "W", "SW", "S", "SE", "static")
    ROTATIONS: ClassVar[tuple[str, ...]] = ("none", "cw", "ccw")

    @model_validator(mode="after")
    def _feasible(self) -> SyntheticVideo:
        p = Problems()
        lo, hi = self.objects
        if lo < 1 or lo > hi:
            p.add("objects", f"[{lo}, {hi}] is not a range of object counts; need 1 <= low <= high")
        for name in ("shapes", "colours", "textures", "speeds"):
            _distinct(p, name, getattr(self, name))
        if hi > len(self.colours):
            p.add(
                "objects",
                f"up to {hi} objects need {hi} distinct colours but `colours` has {len(self.colours)}; lower objects or add colours",
            )
        if any(s < 0 or s > 2 for s in self.speeds):
            p.add("speeds", f"speeds {list(self.speeds)} must lie in [0, 2] frame widths per clip")
        if self.spin / (self.frames - 1) >= 0.5:
            p.add(
                "spin",
                f"{self.spin} turns over {self.frames} frames is half a turn or more per frame (cw and ccw look alike); lower spin",
            )
        for name in ("target_size", "distractor_size"):
            s_lo, s_hi = getattr(self, name)
            if not 0 < s_lo <= s_hi <= 0.6:
                p.add(name, f"[{s_lo}, {s_hi}] is not a size range; need 0 < low <= high <= 0.6")
        if self.distractor_size[1] >= self.target_size[0]:
            p.add(
                "distractor_size",
                f"distractors up to {self.distractor_size[1]} are not smaller than the target (from {self.target_size[0]}); the target must be the largest object",
            )
        if self.target_size[0] * self.resolution < 6:
            p.add(
                "target_size",
                f"the target is under 6 px at resolution {self.resolution}; raise target_size or resolution",
            )
        if self.distractor_size[0] * self.resolution < 3 and hi > 1:
            p.add(
                "distractor_size",
                f"distractors are under 3 px at resolution {self.resolution}; raise distractor_size or resolution",
            )
        if self.label == "colour" and self.channels == 1:
            p.add("label", "colour cannot be told in grey clips; use channels: 3 or another label")
        p.check()
        return self

    def classes(self, task: str) -> int:
        """Number of classes of one label task."""
        return {
            "direction": 8 + (0.0 in self.speeds),
            "speed": len(self.speeds),
            "rotation": len(self.ROTATIONS),
            "shape": len(self.shapes),
            "colour": len(self.colours),
            "texture": len(self.textures),
        }[task]

    @property
    def num_classes(self) -> int:
        """Number of classes of the configured `label` task."""
        return self.classes(self.label)

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(C, T, H, W) of one clip."""
        return (self.channels, self.frames, self.resolution, self.resolution)


class VideoFiles(Loading):
    """Video files listed in a V-JEPA manifest (`path label` per line), decoded with PyAV (extra `video`)."""

    kind: Literal["video_files"] = Field("video_files", description="Decoded video files with class labels.")
    manifest: str = Field(
        description="Manifest URL (any fsspec URL): `path label` per line; relative paths start at its directory."
    )
    eval_manifest: str | None = Field(
        None, description="Manifest of the eval split; null = the same files as train."
    )
    classes: int = Field(gt=0, description="Number of classes; manifest labels lie in [0, classes).")
    frames: int = Field(16, ge=1, description="Frames per clip (T).")
    frame_step: int = Field(4, ge=1, description="Keep every frame_step-th decoded frame.")
    resolution: int = Field(224, ge=8, description="Output height and width in pixels (square).")
    crop_scale: FloatRange = Field(
        (0.3, 1.0), description="Train random-resized-crop area as a fraction of the frame, [low, high]."
    )
    crop_aspect: FloatRange = Field(
        (0.75, 1.35), description="Train random-resized-crop aspect ratio (width / height), [low, high]."
    )
    flip: bool = Field(True, description="Train: flip clips horizontally with probability 1/2.")
    eval_crop: float = Field(
        0.875,
        gt=0,
        le=1,
        description="Eval: side of the centred square crop as a fraction of the short side (224/256 as in V-JEPA).",
    )
    max_retries: int = Field(
        10, ge=1, description="Consecutive unreadable files tolerated for one clip before the job stops."
    )
    OPERATIONAL: ClassVar[frozenset[str]] = Loading.OPERATIONAL | {
        "threads"
    }  # threads do not change the clips
    threads: int = Field(4, ge=1, description="Threads decoding the clips of one batch (in each worker).")

    @model_validator(mode="after")
    def _ranges(self) -> VideoFiles:
        p = Problems()
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            p.add("crop_scale", f"[{lo}, {hi}] is not an area range; need 0 < low <= high <= 1")
        lo, hi = self.crop_aspect
        if not 0 < lo <= hi:
            p.add("crop_aspect", f"[{lo}, {hi}] is not an aspect range; need 0 < low <= high")
        p.check()
        return self

    @property
    def num_classes(self) -> int:
        """Number of classes of the labels."""
        return self.classes

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(C, T, H, W) of one clip."""
        return (3, self.frames, self.resolution, self.resolution)
