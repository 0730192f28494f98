"""Data generator configs, one class per `kind`; each knows its vocabulary size and sequence lengths."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from .base import Problems, Strict, kinded, spec_error

IntRange = Annotated[tuple[int, int], Field(description="Inclusive range [low, high].")]


class LengthRanges(Strict):
    """Separate ranges of input lengths for training and for evaluation."""

    train: IntRange = Field(description="Input lengths seen in training, inclusive [low, high].")
    eval: IntRange = Field(description="Input lengths held out for evaluation, inclusive [low, high].")

    @model_validator(mode="after")
    def _ordered(self) -> LengthRanges:
        for split in ("train", "eval"):
            lo, hi = getattr(self, split)
            if lo < 1 or lo > hi:
                raise spec_error(split, f"[{lo}, {hi}] is not a range of lengths; need 1 <= low <= high")
        return self


class TokenData(Strict):
    """Base of the token generators' configs: what the plan, the validators and the evaluators ask of data.

    A subclass sets `kind`, `SPLITS` and implements `vocab_size`, `max_seq_len` and `length_stats` in pure
    Python (no numpy: validation and planning never run the generator). Generators with an input-length axis
    (`length: LengthRanges`) also give `length_bounds`, which `accuracy_by_length` needs.
    """

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "eval")

    @property
    def vocab_size(self) -> int:
        """Number of token ids the generator emits."""
        raise NotImplementedError

    def max_seq_len(self) -> int:
        """An upper bound on the tokens of one example over all splits (what a model's context must hold)."""
        raise NotImplementedError

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]) of the tokens T of one example of `split`: what FLOPs in the plan need."""
        raise NotImplementedError

    def length_bounds(self) -> tuple[int, int] | None:
        """Input lengths an evaluator may ask for, inclusive; None when the task has no length axis."""
        return None


class SparseParity(TokenData):
    """k-sparse parity: `BOS x1..xL = y EOS`; k planted bits are written `0*`/`1*`, y is their XOR."""

    kind: Literal["sparse_parity"] = Field(
        "sparse_parity", description="k-sparse planted parity (PAPERS.md §4)."
    )
    k: int | IntRange = Field(
        3, description="Planted positions per example: a fixed k, or [low, high] drawn uniformly per example."
    )
    length: LengthRanges = Field(
        default_factory=lambda: LengthRanges(train=(8, 32), eval=(33, 128)),
        description="Ranges of the bit-string length L for training and evaluation.",
    )
    window: int | None = Field(
        None,
        gt=0,
        description="Keep the planted positions inside a random span of this many bits (locality); null = anywhere.",
    )

    VOCAB: ClassVar[tuple[str, ...]] = ("PAD", "BOS", "EOS", "=", "0", "1", "0*", "1*")

    @model_validator(mode="after")
    def _feasible(self) -> SparseParity:
        p = Problems()
        k_lo, k_hi = (self.k, self.k) if isinstance(self.k, int) else self.k
        if k_lo < 1 or k_lo > k_hi:
            p.add("k", f"k={self.k} is not valid; need 1 <= k (and low <= high for a range)")
        shortest = min(self.length.train[0], self.length.eval[0])
        if k_hi > shortest:
            p.add(
                "k",
                f"k up to {k_hi} cannot be planted in strings of length {shortest}; raise the shortest length or lower k",
            )
        if self.window is not None and self.window < k_hi:
            p.add("window", f"window={self.window} cannot hold k={k_hi} planted bits; need window >= k")
        p.check()
        return self

    @property
    def k_range(self) -> tuple[int, int]:
        """k as an inclusive range."""
        return (self.k, self.k) if isinstance(self.k, int) else tuple(self.k)

    @property
    def vocab_size(self) -> int:
        """Number of token ids the generator emits."""
        return len(self.VOCAB)

    def seq_len(self, split: str, length: int) -> int:
        """Tokens of one example whose bit string has `length` bits: BOS, bits, '=', y, EOS."""
        return length + 4

    def max_seq_len(self) -> int:
        """Longest example over all splits (what the model's context must hold)."""
        return self.seq_len("eval", max(self.length.train[1], self.length.eval[1]))

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]) of the tokens T of one example of `split`: what FLOPs in the plan need."""
        lo, hi = getattr(self.length, split)
        ts = [self.seq_len(split, n) for n in range(lo, hi + 1)]
        return sum(ts) / len(ts), sum(t * (t + 1) for t in ts) / len(ts)

    def length_bounds(self) -> tuple[int, int]:
        """From k (the planted bits must fit) to the longest length of either range."""
        return self.k_range[1], max(self.length.train[1], self.length.eval[1])


class CopyTask(TokenData):
    """Shared fields of `copy` and `reverse`: `BOS x1..xn SEP y1..yn EOS`, y = x (copy) or x reversed."""

    symbols: int = Field(10, ge=2, description="Alphabet size: each x_i is one of this many symbols, i.i.d.")
    length: LengthRanges = Field(
        default_factory=lambda: LengthRanges(train=(1, 20), eval=(21, 40)),
        description="Ranges of the input length n for training and evaluation.",
    )
    max_position: int = Field(
        80,
        gt=0,
        description="P_max, the largest coupled position id; training offsets o ~ U{0..P_max-n-1}. "
        "At least 2x the longest eval length.",
    )

    SPECIALS: ClassVar[tuple[str, ...]] = ("PAD", "BOS", "EOS", "SEP")

    @model_validator(mode="after")
    def _feasible(self) -> CopyTask:
        p = Problems()
        longest_eval, longest = self.length.eval[1], max(self.length.train[1], self.length.eval[1])
        need = max(2 * longest_eval, longest + 1)
        if self.max_position < need:
            p.add(
                "max_position",
                f"max_position={self.max_position} is under 2 x the longest eval length ({longest_eval}) or "
                f"the longest length + 1 ({longest + 1}); set max_position >= {need}",
            )
        p.check()
        return self

    @property
    def reverse(self) -> bool:
        """Whether the answer is the input reversed."""
        return self.kind == "reverse"

    @property
    def vocab_size(self) -> int:
        """PAD BOS EOS SEP and the symbols."""
        return len(self.SPECIALS) + self.symbols

    def seq_len(self, split: str, length: int) -> int:
        """Tokens of one example of input length n: BOS, n symbols, SEP, n symbols, EOS."""
        return 2 * length + 3

    def max_seq_len(self) -> int:
        """Longest example over all splits."""
        return self.seq_len("eval", max(self.length.train[1], self.length.eval[1]))

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]) of T = 2n + 3 with n uniform over the split's range (exact)."""
        lo, hi = getattr(self.length, split)
        ts = [self.seq_len(split, n) for n in range(lo, hi + 1)]
        return sum(ts) / len(ts), sum(t * (t + 1) for t in ts) / len(ts)

    def length_bounds(self) -> tuple[int, int]:
        """From 1 to the longest length of either range."""
        return 1, max(self.length.train[1], self.length.eval[1])


class Copy(CopyTask):
    """Copy with coupled positions (PAPERS.md §4): y_j = x_j; y_j shares x_j's position id."""

    kind: Literal["copy"] = Field("copy", description="Copy the input after SEP (PAPERS.md §4).")


class Reverse(CopyTask):
    """Reverse with coupled positions (PAPERS.md §4): y_j = x_{n+1-j}; y_j shares x_{n+1-j}'s position id."""

    kind: Literal["reverse"] = Field(
        "reverse", description="Write the input reversed after SEP (PAPERS.md §4)."
    )


class VariableAssignment(TokenData):
    """Pointer chasing (PAPERS.md §4 pointer_chase): m shuffled statements `a = b ;` / `a = 7 ;`, query `? v =`.

    The answer follows the chain from v to its value: `v u ... 7 EOS`. Every statement defines a distinct
    variable; the statements outside the queried chain form distractor chains.
    """

    kind: Literal["variable_assignment"] = Field(
        "variable_assignment", description="Pointer chasing over variable assignments (PAPERS.md §4)."
    )
    names: int = Field(
        128,
        ge=1,
        description="Variable-name tokens (a..z, aa, ab, ...); each statement defines a distinct one, so names >= the longest m.",
    )
    length: LengthRanges = Field(
        default_factory=lambda: LengthRanges(train=(4, 16), eval=(17, 64)),
        description="Ranges of the statement count m for training and evaluation.",
    )
    hops: int | IntRange | None = Field(
        None,
        description="Statements in the queried chain (answer = that many variables, the value, EOS): fixed, "
        "[low, high], or null = uniform in 1..m.",
    )
    max_position: int = Field(
        520,
        gt=0,
        description="P_max, the largest coupled position id; training offsets o ~ U{0..P_max-4m-3}. "
        "At least 4 x the longest m + 3.",
    )

    SPECIALS: ClassVar[tuple[str, ...]] = ("PAD", "BOS", "EOS", "=", ";", "?")
    VALUES: ClassVar[int] = 10  # digit values 0..9

    @model_validator(mode="after")
    def _feasible(self) -> VariableAssignment:
        p = Problems()
        longest = max(self.length.train[1], self.length.eval[1])
        shortest = min(self.length.train[0], self.length.eval[0])
        if self.names < longest:
            p.add(
                "names",
                f"{self.names} names cannot give {longest} statements distinct variables; set names >= {longest}",
            )
        if self.hops is not None:
            h_lo, h_hi = self.hops_range
            if h_lo < 1 or h_lo > h_hi:
                p.add("hops", f"hops={self.hops} is not valid; need 1 <= hops (and low <= high for a range)")
            elif h_hi > shortest:
                p.add(
                    "hops",
                    f"a chain of up to {h_hi} statements does not fit in the shortest m ({shortest}); raise the shortest length or lower hops",
                )
        need = 4 * longest + 3
        if self.max_position < need:
            p.add(
                "max_position",
                f"max_position={self.max_position} cannot number {longest} statements and the query "
                f"(4 x {longest} + 3 ids); set max_position >= {need}",
            )
        p.check()
        return self

    @property
    def hops_range(self) -> tuple[int, int]:
        """hops as an inclusive range (read only when hops is set)."""
        h = self.hops
        return (h, h) if isinstance(h, int) else tuple(h)

    @property
    def vocab_size(self) -> int:
        """PAD BOS EOS = ; ?, the 10 digits and the names."""
        return len(self.SPECIALS) + self.VALUES + self.names

    def chain_range(self, m: int) -> tuple[int, int]:
        """Inclusive range of the queried chain's statement count c for m statements."""
        return (1, m) if self.hops is None else self.hops_range

    def seq_len(self, m: int, c: int) -> int:
        """Tokens of one example: BOS, 4 per statement, `? v =`, c variables, the value, EOS."""
        return 4 * m + 6 + c

    def max_seq_len(self) -> int:
        """Longest example over all splits."""
        longest = max(self.length.train[1], self.length.eval[1])
        return self.seq_len(longest, self.chain_range(longest)[1])

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]) of T = 4m + 6 + c, m uniform over the split's range, c uniform given m (exact)."""
        lo, hi = getattr(self.length, split)
        e_t = e_tt = 0.0
        for m in range(lo, hi + 1):
            a, b = self.chain_range(m)
            e_c = (a + b) / 2
            e_cc = (_squares(b) - _squares(a - 1)) / (b - a + 1)
            base = 4 * m + 6  # T = base + c
            e_t += base + e_c
            e_tt += base * base + base + (2 * base + 1) * e_c + e_cc
        count = hi - lo + 1
        return e_t / count, e_tt / count

    def length_bounds(self) -> tuple[int, int]:
        """From the longest chain (statements must hold it) to the longest m of either range."""
        low = 1 if self.hops is None else self.hops_range[1]
        return low, max(self.length.train[1], self.length.eval[1])


def _squares(x: int) -> int:
    """1^2 + ... + x^2."""
    return x * (x + 1) * (2 * x + 1) // 6


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


class SyntheticVideo(Strict):
    """Procedural clips (numpy): textured shapes that move, bounce and spin over a noisy background.

    The largest object is the target; motion labels (direction, speed, rotation) are invisible in any single
    frame, appearance labels (shape, colour, texture) are visible in every frame.
    """

    kind: Literal["synthetic_video"] = Field(
        "synthetic_video", description="Synthetic moving-shapes clips for SSL and probes (PAPERS.md §1)."
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


class VideoFiles(Strict):
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
    workers: int = Field(4, ge=1, description="Threads decoding the clips of one batch.")

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


Data = kinded(
    SparseParity,
    Copy,
    Reverse,
    VariableAssignment,
    SyntheticVideo,
    VideoFiles,
    default=None,
    description="The data generator of a stage, by `kind`.",
)
