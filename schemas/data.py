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


class KgExperts(TokenData):
    """Knowledge-graph experts (PAPERS.md §2): pretraining text from corrupted experts, cloze queries.

    A world (from `world_seed`) holds `entities` fictional one-token names in `clusters`, and `relations`
    functional typed relations, each with 2 sentence templates. Each expert sees a corrupted copy of the graph
    according to its per-cluster confidences. `train` = packed blocks of entity paragraphs written by sampled
    experts (loss on every token: pretraining text); `eval`/`test` = cloze queries `the <r> of X is` with the
    true object as the answer (loss on the answer only).
    """

    kind: Literal["kg_experts"] = Field(
        "kg_experts",
        description="Knowledge-graph experts and cloze queries (Taxonomy of Transcendence, PAPERS.md §2).",
    )
    mode: Literal["denoising", "selection", "generalization"] = Field(
        "denoising",
        description="denoising: confidences drawn from `confidences`; selection: confidences solve the knowledge-budget LP; generalization: two-hop queries.",
    )
    world_seed: int = Field(
        0, ge=0, description="Seed of the world: names, clusters, true graph, experts' graphs."
    )
    entities: int = Field(
        1000, ge=2, le=1_000_000, description="Fictional entities, one name token each (the paper: 10k)."
    )
    clusters: int = Field(
        10, ge=1, description="Clusters of entities; expertise is per cluster (the paper: 100)."
    )
    relations: int = Field(
        8,
        ge=1,
        le=40,
        description="Functional relations; every entity has one object per relation (the paper: 20).",
    )
    range_fraction: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Each relation's objects come from its own random range of this fraction of entities (its type).",
    )
    experts: int = Field(5, ge=1, description="Experts, each with its own corrupted copy of the graph.")
    entities_per_expert: int | None = Field(
        None,
        ge=1,
        description="Entities of the clusters each expert is confident on (greedy fill in random order); null = all (the paper's denoising).",
    )
    confidences: tuple[float, ...] = Field(
        (0.6, 0.8, 1.0),
        min_length=1,
        description="denoising/generalization: each chosen cluster's confidence c is drawn from these (one value = the authors' runs).",
    )
    knowledge_per_expert: float | None = Field(
        None,
        gt=0,
        description="selection: confidences maximise sum(c) subject to sum(|C|*c) = this; null = half of entities_per_expert.",
    )
    heldout_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="generalization: fraction of entities whose two-hop facts appear only in `test`.",
    )
    two_hop_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="generalization: fraction of training documents that state a two-hop fact (of a non-held-out entity).",
    )
    cot: bool = Field(
        False,
        description="generalization: two-hop answers first write the intermediate fact (chain of thought).",
    )
    text_len: int = Field(
        256,
        ge=2,
        le=65536,
        description="Tokens per training block (BOS, then paragraphs joined by EOS, cut; the paper: 512).",
    )

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "eval", "test")
    RELATION_NAMES: ClassVar[tuple[str, ...]] = (
        "mother", "father", "mentor", "rival", "employer", "neighbour", "doctor", "lawyer",
        "teacher", "partner", "landlord", "banker", "tailor", "barber", "coach", "agent",
        "sponsor", "guardian", "heir", "successor", "pupil", "patron", "friend", "boss",
        "editor", "publisher", "captain", "pilot", "chef", "gardener", "best friend", "old rival",
        "first teacher", "business partner", "favourite author", "piano teacher", "chess coach",
        "family doctor", "tax advisor", "personal trainer",
    )  # fmt: skip
    # Template words (relation words aside); S = subject, O = object, R = relation words, M = intermediate.
    WORDS: ClassVar[tuple[str, ...]] = ("the", "of", "is", "'s", "has", "as", "for", ",", "so")
    QUERY: ClassVar[tuple[str, ...]] = ("the", "R", "of", "S", "is", "O", ".")  # template 0 = the cloze form
    ALT_TEMPLATES: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("S", "'s", "R", "is", "O", "."),
        ("S", "has", "O", "as", "R", "."),
        ("for", "S", ",", "the", "R", "is", "O", "."),
    )  # template 1 of each relation: one of these, chosen by the world seed

    @model_validator(mode="after")
    def _feasible(self) -> KgExperts:
        p = Problems()
        n, k = self.entities, self.clusters
        if k > n:
            p.add(
                "clusters",
                f"clusters={k} exceeds entities={n}; every cluster needs an entity: lower clusters",
            )
        if self.experts > n:
            p.add("experts", f"experts={self.experts} exceeds entities={n}; lower experts or raise entities")
        bad = [c for c in self.confidences if not 0 <= c <= 1]
        if bad:
            p.add(
                "confidences",
                f"{bad} lie outside [0, 1]; a confidence is the probability that a fact survives",
            )
        largest = -(-n // max(k, 1))
        per = self.entities_per_expert
        if per is not None and per > n:
            p.add(
                "entities_per_expert", f"{per} exceeds entities={n}; lower it or leave it null (all entities)"
            )
        elif per is not None and per < largest and k <= n:
            p.add(
                "entities_per_expert",
                f"{per} is smaller than a cluster ({largest} entities), so an expert could get none; raise it to >= {largest}",
            )
        if self.mode == "selection" and not p.items:
            budget, least = self.knowledge_budget, self.selected_at_least
            if budget > least:
                p.add(
                    "knowledge_per_expert",
                    f"{budget:g} cannot be met: an expert's clusters may hold only {least} entities (sum |C|*c <= {least}); "
                    f"lower it to <= {least} or raise entities_per_expert",
                )
        if self.mode == "generalization":
            held = self.heldout_entities
            if held < 1 or held > n - 1:
                p.add(
                    "heldout_fraction",
                    f"{self.heldout_fraction} of {n} entities holds out {held}; need 1 <= held out <= {n - 1}",
                )
        elif self.cot:
            p.add(
                "cot",
                f"cot writes the intermediate fact of two-hop queries; mode {self.mode!r} has none (use generalization)",
            )
        p.check()
        return self

    @property
    def two_hop(self) -> bool:
        """Whether the queries are two-hop (generalization mode)."""
        return self.mode == "generalization"

    @property
    def heldout_entities(self) -> int:
        """Entities whose two-hop facts are held out of training (generalization)."""
        return round(self.heldout_fraction * self.entities)

    @property
    def cluster_sizes(self) -> tuple[int, int]:
        """(smallest, largest) cluster: clusters are balanced."""
        return self.entities // self.clusters, -(-self.entities // self.clusters)

    @property
    def expert_entities(self) -> int:
        """entities_per_expert, null resolved to all entities."""
        return self.entities if self.entities_per_expert is None else self.entities_per_expert

    @property
    def selected_at_least(self) -> int:
        """A guaranteed lower bound on the entities of an expert's clusters (greedy fill in random order).

        The fill skips a cluster only when it does not fit, so it ends within one cluster of the target: either
        every cluster is taken (all entities) or the total exceeds entities_per_expert minus the largest cluster.
        """
        per = self.expert_entities
        return self.entities if per >= self.entities else per - self.cluster_sizes[1] + 1

    @property
    def knowledge_budget(self) -> float:
        """knowledge_per_expert, null resolved to half of the expert's entities."""
        return self.expert_entities / 2 if self.knowledge_per_expert is None else self.knowledge_per_expert

    def relation_words(self) -> tuple[tuple[str, ...], ...]:
        """The words of each relation's name."""
        return tuple(tuple(name.split()) for name in self.RELATION_NAMES[: self.relations])

    def words(self) -> tuple[str, ...]:
        """The template words of the vocabulary, in id order after PAD, BOS, EOS (then '.', then names)."""
        seen = list(self.WORDS)
        for rel in self.relation_words():
            seen += [w for w in rel if w not in seen]
        return tuple(seen)

    @property
    def vocab_size(self) -> int:
        """PAD, BOS, EOS, template words, '.', one token per entity."""
        return 3 + len(self.words()) + 1 + self.entities

    def query_len(self, r1: int, r2: int | None = None) -> int:
        """Tokens of one query example: BOS, prompt, answer, EOS (r2 given: two-hop `the r2 of the r1 of X is`)."""
        w = self.relation_words()
        if r2 is None:
            return len(w[r1]) + 8  # BOS the R of X is Y . EOS
        if self.cot:  # ... is the R1 of X is M , so the R2 of M is Y . EOS
            return 2 * (len(w[r1]) + len(w[r2])) + 21
        return len(w[r1]) + len(w[r2]) + 10  # BOS the R2 of the R1 of X is Y . EOS

    def _query_lens(self) -> list[int]:
        r = range(self.relations)
        return (
            [self.query_len(a, b) for a in r for b in r] if self.two_hop else [self.query_len(a) for a in r]
        )

    def max_seq_len(self) -> int:
        """Training blocks are exactly text_len tokens; queries are at most the longest query."""
        return max(self.text_len, max(self._query_lens()))

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """Exact: blocks are text_len tokens; queries draw their relations uniformly."""
        ts = [self.text_len] if split == "train" else self._query_lens()
        return sum(ts) / len(ts), sum(t * (t + 1) for t in ts) / len(ts)


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
    KgExperts,
    SyntheticVideo,
    VideoFiles,
    default=None,
    description="The data generator of a stage, by `kind`.",
)
