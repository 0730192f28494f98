"""Data generator configs, one class per `kind`; each knows its vocabulary size and sequence lengths."""

from __future__ import annotations

import random
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


class Countdown(TokenData):
    """CountDown: reach a target from `count` inputs with +, x, larger-smaller, exact larger/smaller.

    Text = `START trace END` with the paper's 46-token vocabulary (digits one token each, no whitespace
    tokens); the prompt is START plus the trace's first line `Current State: T:[inputs], Operations: []`.
    """

    kind: Literal["countdown"] = Field("countdown", description="CountDown search traces (PAPERS.md §6).")
    trace: Literal["optimal", "dfs"] = Field(
        "optimal",
        description="optimal = the direct path to a solution; dfs = the heuristic DFS with backtracking.",
    )
    count: int = Field(4, ge=3, le=5, description="Input numbers per problem (the paper: 4).")
    max_number: int = Field(99, ge=12, le=999, description="Inputs are drawn uniformly from 1..max_number.")
    targets: IntRange = Field((10, 100), description="Targets, inclusive [low, high], drawn uniformly.")
    held_out_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the targets held out of train and eval (split held_out)."
    )
    target_seed: int = Field(
        4, ge=0, description="Seed of the held-out targets (Python's random.shuffle; 4 = the paper's data)."
    )
    max_len: int = Field(
        4096,
        gt=0,
        description="Context limit in tokens: a longer DFS trace is cut after its last whole line, then END.",
    )

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "eval", "held_out")
    WORDS: ClassVar[tuple[str, ...]] = (
        "Exploring", "found", "Solution", "solution", "equal", "unequal", "Resulting", "to", "Operations",
        "Reached", "No", "Current", "Operation", "Node", "Moving", "Generated", "from", "State", "Numbers",
        "Goal",
    )  # fmt: skip
    VOCAB: ClassVar[tuple[str, ...]] = ("PAD", "START", "END", *"0123456789", *WORDS, *"+-*/=[]#,:.'", "UNK")

    @model_validator(mode="after")
    def _feasible(self) -> Countdown:
        p = Problems()
        lo, hi = self.targets
        if not 2 <= lo <= hi <= 1000:
            p.add("targets", f"[{lo}, {hi}] is not a range of targets; need 2 <= low <= high <= 1000")
        elif hi > (self.count - 1) * self.max_number:
            p.add(
                "targets",
                f"targets up to {hi} have few or no problems with {self.count} inputs <= {self.max_number} "
                f"(the limit is (count - 1) * max_number = {(self.count - 1) * self.max_number}); "
                "lower targets or raise max_number or count",
            )
        else:
            held, n = self.held_out_count, hi - lo + 1
            if not 1 <= held < n:
                p.add(
                    "held_out_fraction",
                    f"{self.held_out_fraction} of {n} targets holds out {held}; need 1 to {n - 1} "
                    "held-out targets: widen targets or change the fraction",
                )
        if not p.items and self.max_len < self.optimal_bound():
            p.add(
                "max_len",
                f"{self.max_len} tokens cannot hold the longest optimal trace ({self.optimal_bound()}); "
                f"set max_len >= {self.optimal_bound()}",
            )
        p.check()
        return self

    @property
    def held_out_count(self) -> int:
        """How many targets are held out: floor(fraction * number of targets), as the paper's len // 10."""
        return int(self.held_out_fraction * (self.targets[1] - self.targets[0] + 1) + 1e-9)

    def held_out_targets(self) -> tuple[int, ...]:
        """The held-out targets, sorted: the first ones of the target range shuffled by `target_seed`.

        The paper's generator does the same with Python's `random` (seed 4 gives its held-out targets).
        """
        order = list(range(self.targets[0], self.targets[1] + 1))
        random.Random(self.target_seed).shuffle(order)
        return tuple(sorted(order[: self.held_out_count]))

    @property
    def vocab_size(self) -> int:
        """Number of token ids the generator emits (the paper's 46)."""
        return len(self.VOCAB)

    def _digits(self, inputs: int) -> int:
        """Most digits of a value built from `inputs` inputs: v + 1 <= (max_number + 1) ** inputs."""
        return len(str((self.max_number + 1) ** inputs - 1))

    def _list_digits(self, level: int) -> int:
        """Most digits of the c - level numbers after `level` operations (one group of inputs each)."""
        parts = self.count - level
        return max(sum(self._digits(j) for j in p) for p in _partitions(self.count, parts))

    def _op_len(self, level: int) -> int:
        """Most tokens of `a?b=r` at a level: the operands come from at most level + 1 inputs together."""
        best = max(
            self._digits(a) + self._digits(b) + self._digits(a + b)
            for a in range(1, level + 1)
            for b in range(1, level + 2 - a)
        )
        return best + 2

    def _line_bounds(self, level: int) -> dict[str, int]:
        """Most tokens of each line kind about a node after `level` operations (0 = the inputs)."""
        dt = len(str(self.targets[1]))
        nums = 2 + self._list_digits(level) + self.count - level - 1  # [a, b, c]
        ops = 2 + sum(self._op_len(k) + 2 for k in range(1, level + 1)) + max(level - 1, 0)
        branch = [0] + [2 * (self.count - k + 1) * (self.count - k) for k in range(1, self.count)]
        idx = 1 + sum(1 + len(str(branch[k] - 1)) for k in range(1, level + 1))  # 0,r1,r2
        op = self._op_len(level) if level else 0
        return {
            "current": 3 + dt + 1 + nums + 3 + ops,  # Current State: T:[..], Operations: [..]
            "exploring": 3 + op + 4 + nums,  # Exploring Operation: op, Resulting Numbers: [..]
            "generated_dfs": 3
            + idx
            + 1
            + dt
            + 1
            + nums
            + 2
            + op,  # Generated Node #0,1: T:[..] Operation: op
            "generated_opt": 3 + len(str(level + 1)) + 1 + nums + 3 + op,  # Generated Node #2: [..] from ..
            "moving": 4 + idx,  # Moving to Node #0,1
            "end": self._digits(self.count) + 1 + dt + 4,  # r,T equal: Goal Reached | unequal: No Solution
        }

    def optimal_bound(self) -> int:
        """Most tokens of an optimal-trace example: START, the first line, count - 1 steps, END."""
        b = [self._line_bounds(k) for k in range(self.count)]
        steps = sum(
            b[k]["exploring"] + b[k]["generated_opt"] + b[k]["current"] for k in range(1, self.count - 1)
        )
        return 1 + b[0]["current"] + steps + b[-1]["exploring"] + b[-1]["end"] + 1

    def dfs_bound(self) -> int:
        """Most tokens of an uncut DFS example: every node of the full tree with all its lines."""
        total, nodes = 2 + self._line_bounds(0)["current"], 1
        for k in range(1, self.count):
            nodes *= 2 * (self.count - k + 1) * (self.count - k)
            b, up = self._line_bounds(k), self._line_bounds(k - 1)
            enter = b["exploring"] + (
                b["end"] if k == self.count - 1 else b["generated_dfs"] + b["moving"] + b["current"]
            )
            total += nodes * (enter + up["moving"] + up["current"])
        return total

    def max_seq_len(self) -> int:
        """Longest example over all splits: the optimal bound, or a DFS trace cut to max_len."""
        if self.trace == "optimal":
            return self.optimal_bound()
        return min(self.max_len, self.dfs_bound())

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]) of tokens per example: an estimate from lengths measured by the generator.

        `_LENGTH_QUANTILES` holds 32 quantiles of the uncut length per count and trace, measured at the
        paper's ranges (inputs 1..99, targets 10..100); DFS lengths are capped at max_len. Other ranges reuse
        them (rougher). Splits differ little, so every split gets the same estimate.
        """
        qs = _LENGTH_QUANTILES[self.trace][self.count]
        ts = [min(q, self.max_len) for q in qs]
        return sum(ts) / len(ts), sum(t * (t + 1) for t in ts) / len(ts)


def _partitions(total: int, parts: int) -> list[tuple[int, ...]]:
    """The ways to write `total` as `parts` positive integers (non-increasing)."""
    if parts == 1:
        return [(total,)]
    out = []
    for first in range(total - parts + 1, 0, -1):
        out += [(first, *rest) for rest in _partitions(total - first, parts - 1) if rest[0] <= first]
    return out


# Tokens per example (START..END, DFS uncut) at the quantiles (k + 0.5) / 32 of 20,000 train examples per count
# (5,000 for count 5) made by engine/data/countdown.py at the paper's ranges; tests check them against samples.
# fmt: off
_LENGTH_QUANTILES: dict[str, dict[int, tuple[int, ...]]] = {
    "optimal": {
        3: (109, 113, 115, 117, 117, 117, 117, 117, 117, 119, 119, 120, 120, 120, 120, 120, 124, 124, 124,
            124, 124, 124, 124, 124, 124, 124, 124, 127, 131, 131, 131, 131),
        4: (196, 201, 202, 203, 206, 208, 208, 209, 209, 210, 212, 213, 213, 213, 213, 213, 213, 215, 215,
            218, 220, 220, 220, 220, 223, 224, 227, 229, 231, 234, 238, 254),
        5: (303, 309, 312, 315, 317, 319, 319, 321, 322, 323, 325, 326, 327, 329, 329, 329, 332, 333, 336,
            337, 339, 341, 343, 346, 348, 350, 354, 357, 364, 370, 376, 386),
    },
    "dfs": {
        3: (23, 122, 127, 128, 128, 128, 128, 128, 130, 130, 131, 135, 135, 135, 135, 135, 265, 301, 329,
            339, 396, 432, 471, 488, 533, 543, 557, 659, 756, 921, 1127, 1461),
        4: (25, 25, 26, 26, 26, 231, 238, 239, 246, 470, 490, 590, 656, 734, 966, 1272, 1621, 1896, 2111,
            2429, 2922, 3557, 4299, 5299, 6435, 7906, 9638, 11375, 13358, 15637, 18441, 23585),
        5: (27, 28, 28, 29, 29, 29, 29, 374, 821, 1777, 3065, 5301, 8052, 11276, 14934, 18443, 22083,
            27844, 33999, 41096, 48788, 59455, 72163, 85886, 105592, 133755, 162853, 203743, 255012,
            314763, 404088, 533814),
    },
}
# fmt: on


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
    Countdown,
    SyntheticVideo,
    VideoFiles,
    default=None,
    description="The data generator of a stage, by `kind`.",
)
