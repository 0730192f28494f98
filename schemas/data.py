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


class Sudoku(TokenData):
    """Sudoku (To Backtrack or Not, PAPERS.md §6): the givens, the strategy solver's trace, the solved grid.

    Example = `START original : n` + one `(r, c) = v n` line per given + `solving n` (the prompt), the trace
    lines, `SOL_S n` + 81 `(r, c) = v n` lines + `SOL_E END`; the loss covers everything after the prompt.
    Lengths: 6 + 4 per given (prompt), 4 per line of the shortcut trace (one per empty cell), 328 (answer).
    """

    kind: Literal["sudoku"] = Field(
        "sudoku", description="Sudoku with strategy-solver traces (PAPERS.md §6)."
    )
    clues: IntRange = Field(
        (22, 36),
        description="Givens per puzzle, drawn uniformly from [low, high]; fewer is harder (20 <= low <= high <= 80).",
    )
    tries: int = Field(
        100,
        ge=1,
        description="Local-search rounds per puzzle to reach its clue count; fewer than 27 givens need more (see TRIES).",
    )
    trace: Literal["full", "shortcut", "none"] = Field(
        "shortcut",
        description="Trace before the answer: full (guesses, dead ends, reverts), shortcut (reverted branches dropped), none.",
    )
    max_tokens: int = Field(
        4096,
        ge=1,
        description="Context limit per example: a puzzle whose full trace makes it longer is redrawn.",
    )

    VOCAB: ClassVar[tuple[str, ...]] = (
        *("MASK", "START", "END", *"0123456789"),
        *("original", "solving", "guess", "revert", "nocand", "invalid", "=", ":", "[", "]"),
        *(f"({r}, {c})" for r in range(9) for c in range(9)),
        *(",", "n", "none", "SOL_S", "SOL_E"),
    )
    STRATEGIES: ClassVar[tuple[str, ...]] = (
        *("lone_single", "hidden_single", "naked_pair", "naked_triplet", "locked_candidate", "xy_wing"),
        *("unique_rectangle", "guess"),
    )
    PROMPT: ClassVar[int] = 6  # START original : n ... solving n, plus 4 per given
    ANSWER: ClassVar[int] = 328  # SOL_S n, 81 lines of 4, SOL_E END
    SHORTCUT: ClassVar[int] = 658  # PROMPT + 4 * 81 + ANSWER: every cell is one line, given or solved
    FULL_MIN: ClassVar[int] = 1024  # smallest max_tokens for full traces
    # Rounds that 99% of puzzles need to reach a clue count (measured over 300 puzzles per count, 150 below
    # 22, times ~1.25); counts of 27 and more are reached by the first removal pass.
    TRIES: ClassVar[dict[int, int]] = {20: 2200, 21: 190, 22: 52, 23: 32, 24: 10, 25: 4, 26: 2}
    # Full traces: (E[X], E[X^2]) of the tokens X beyond SHORTCUT (guess, nocand, revert lines and the
    # assignments of dead branches) per clue count, measured over 400 puzzles each (150 at 20-21) without a
    # token limit; about none from 38 givens up. A max_tokens that cuts the tail makes these a little high.
    FULL_EXTRA: ClassVar[dict[int, tuple[float, float]]] = {
        20: (32.5, 11838), 21: (32.2, 8229), 22: (32.3, 10779), 23: (43.2, 18769), 24: (46.4, 19698),
        25: (44.5, 22753), 26: (27.3, 6228), 27: (21.2, 6007), 28: (16.8, 4128), 29: (12.0, 2980),
        30: (5.5, 885), 31: (5.5, 834), 32: (2.7, 518), 33: (2.1, 245), 34: (1.1, 99), 35: (0.7, 68),
        36: (0.4, 40), 37: (0.3, 49),
    }  # fmt: skip

    @model_validator(mode="after")
    def _feasible(self) -> Sudoku:
        p = Problems()
        lo, hi = self.clues
        if lo < 17:
            p.add(
                "clues",
                f"[{lo}, {hi}]: no sudoku with fewer than 17 givens has a unique solution; raise the low end",
            )
        elif lo < 20:
            p.add(
                "clues",
                f"[{lo}, {hi}]: random removal with local search does not reach fewer than 20 givens in practice; raise the low end to >= 20",
            )
        if lo > hi or hi > 80:
            p.add("clues", f"[{lo}, {hi}] is not a range of clue counts; need 20 <= low <= high <= 80")
        need = self.TRIES.get(lo, 1) if lo >= 20 else None
        if need is not None and self.tries < need:
            p.add(
                "tries",
                f"tries={self.tries} cannot reliably reach {lo} givens: {lo} needs tries >= {need} (99% of puzzles get there in that many rounds); raise tries or the low end of clues",
            )
        floor = self.FULL_MIN if self.trace == "full" else self.seq_len(hi)
        if self.max_tokens < floor:
            why = {
                "full": "full traces are 658 tokens plus their guesses, and a shorter limit redraws most puzzles that need one",
                "shortcut": "every shortcut example is 658 tokens",
                "none": f"an answer-only example with {hi} givens is {floor} tokens",
            }[self.trace]
            p.add(
                "max_tokens", f"max_tokens={self.max_tokens} is too small: {why}; set max_tokens >= {floor}"
            )
        p.check()
        return self

    @property
    def vocab_size(self) -> int:
        """Number of token ids the generator emits."""
        return len(self.VOCAB)

    def seq_len(self, clues: int) -> int:
        """Tokens of an example with `clues` givens and a shortcut trace or none (full traces are longer)."""
        return self.SHORTCUT if self.trace != "none" else self.PROMPT + 4 * clues + self.ANSWER

    def max_seq_len(self) -> int:
        """Longest example: 658 (shortcut trace), 334 + 4 * high (none), max_tokens (full)."""
        return self.max_tokens if self.trace == "full" else self.seq_len(self.clues[1])

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """(E[T], E[T*(T+1)]), clue counts uniform: exact for shortcut and none, from FULL_EXTRA for full."""
        lo, hi = self.clues
        counts = range(lo, hi + 1)
        if self.trace != "full":
            ts = [self.seq_len(c) for c in counts]
            return sum(ts) / len(ts), sum(t * (t + 1) for t in ts) / len(ts)
        t0 = self.SHORTCUT
        ex = [self.FULL_EXTRA.get(c, (0.0, 0.0)) for c in counts]
        mean = sum(m for m, _ in ex) / len(ex)
        square = sum(m2 for _, m2 in ex) / len(ex)
        return t0 + mean, t0 * (t0 + 1) + (2 * t0 + 1) * mean + square


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
    Sudoku,
    SyntheticVideo,
    VideoFiles,
    default=None,
    description="The data generator of a stage, by `kind`.",
)
