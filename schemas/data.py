"""Data generator configs, one class per `kind`; each knows its vocabulary size and sequence lengths."""

from __future__ import annotations

import functools
import math
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


class PhoneBook(TokenData):
    """A fixed phone book of `entries` unique name -> number pairs (memorisation, PAPERS.md §5).

    Entry i's name (first, last) and number are computed from i by keyed bijections, so a book of millions
    holds nothing per entry. train = documents of `lines_per_doc` lines `first last : d1..dD ;` (loss on every
    token: pretraining on the book); eval = closed-book queries `BOS first last : d1..dD EOS` over a fixed
    subset of `eval_entries` training entries (loss on the digits).
    """

    kind: Literal["phonebook"] = Field(
        "phonebook",
        description="Phone-book memorisation: names to numbers (Mixture of Parrots, PAPERS.md §5).",
    )
    entries: int = Field(100_000, ge=1, description="Entries N in the book (the paper: 1e5 to 2e6).")
    book_seed: int = Field(
        0, ge=0, description="Seed of the book: which names and numbers, and the eval subset."
    )
    name_pool: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="First-name and last-name tokens, each (names are pairs: name_pool**2 of them).",
    )
    digits: int = Field(10, ge=1, le=18, description="Digits per number, one token each.")
    lines_per_doc: int = Field(
        32, ge=1, description="Entries (`name : number ;` lines) per training document."
    )
    eval_entries: int | None = Field(
        None,
        ge=1,
        description="Size of the fixed subset of (training) entries that eval asks about; null = min(1000, entries).",
    )

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "eval")
    SPECIALS: ClassVar[tuple[str, ...]] = ("PAD", "BOS", "EOS", ":", ";", *(str(d) for d in range(10)))

    @model_validator(mode="after")
    def _feasible(self) -> PhoneBook:
        p = Problems()
        if self.entries > self.name_pool**2:
            p.add(
                "entries",
                f"{self.entries} entries need unique names but name_pool={self.name_pool} makes only "
                f"{self.name_pool**2} (name_pool**2); raise name_pool to >= {math.isqrt(self.entries - 1) + 1} or lower entries",
            )
        if self.entries > 10**self.digits:
            p.add(
                "entries",
                f"{self.entries} entries need unique numbers but {self.digits} digits make only "
                f"{10**self.digits}; raise digits to >= {len(str(self.entries - 1))} or lower entries",
            )
        if self.eval_entries is not None and self.eval_entries > self.entries:
            p.add(
                "eval_entries",
                f"eval_entries={self.eval_entries} exceeds the book's {self.entries} entries; lower it to <= {self.entries}",
            )
        p.check()
        return self

    @property
    def eval_size(self) -> int:
        """Entries in the eval subset: eval_entries, or min(1000, entries) (the paper's 1000) when unset."""
        return min(1000, self.entries) if self.eval_entries is None else self.eval_entries

    @property
    def vocab_size(self) -> int:
        """Specials, ':' ';', ten digits, then the first-name and last-name pools."""
        return len(self.SPECIALS) + 2 * self.name_pool

    def seq_len(self, split: str) -> int:
        """Tokens of one example: BOS + lines * (first last : digits ;) + EOS, or BOS first last : digits EOS."""
        return 2 + self.lines_per_doc * (self.digits + 4) if split == "train" else self.digits + 5

    def max_seq_len(self) -> int:
        """Longest example over all splits (every example of a split has the same length)."""
        return max(self.seq_len(s) for s in self.SPLITS)

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """Exact: each split has one length T."""
        t = self.seq_len(split)
        return float(t), float(t * (t + 1))


MIN_ACCEPT = 0.02  # least share of random graphs that must have a query pair at min_distance
SIM_SIZES = 8  # node counts simulated by _graph_stats (evenly spread over the range)
SIM_GRAPHS = 24  # graphs per simulated node count
SIM_SOURCES = 6  # BFS sources per simulated graph for the mean query distance


def _max_diameter(n: int, m: int) -> int:
    """The largest diameter of a connected graph of n nodes and m edges (Ore 1968: m <= D + (n-D-1)(n-D+4)/2)."""
    best = 1
    for d in range(2, n):
        if m <= d + (n - d - 1) * (n - d + 4) // 2:
            best = d
    return best


def _bfs(adj: list[set[int]], s: int) -> dict[int, int]:
    """BFS distances from s."""
    depth, frontier = {s: 0}, [s]
    while frontier:
        nxt = []
        for u in frontier:
            for v in adj[u] - depth.keys():
                depth[v] = depth[u] + 1
                nxt.append(v)
        frontier = nxt
    return depth


@functools.lru_cache(maxsize=64)
def _graph_stats(
    lo: int, hi: int, edges: tuple[int, ...], min_distance: int
) -> tuple[dict[int, float], dict[int, float]]:
    """Simulate shortest_path's graphs in pure Python at up to SIM_SIZES node counts n of [lo, hi]: the share of
    graphs with a pair at distance >= min_distance, and the mean distance of a query (a pair at >= min_distance).

    The model of engine/data/shortest_path.py: a random recursive spanning tree plus uniform extra edges.
    Whether a graph has a far pair is judged by a double BFS sweep (exact on trees, a lower bound otherwise);
    the mean distance from SIM_SOURCES random sources. Seeded, so validation and plans are deterministic, and
    cheap (SIM_SIZES * SIM_GRAPHS graphs) whatever the node range.
    """
    rng = random.Random(0)
    sizes = sorted({lo + round(k * (hi - lo) / max(1, SIM_SIZES - 1)) for k in range(SIM_SIZES)})
    accept, dist = {}, {}
    for n in sizes:
        hits, total = 0, 0.0
        for _ in range(SIM_GRAPHS):
            adj: list[set[int]] = [set() for _ in range(n)]
            for k in range(1, n):
                u = rng.randrange(k)
                adj[k].add(u)
                adj[u].add(k)
            for _ in range(edges[n] - (n - 1)):  # uniform among the free pairs (validation leaves some)
                while True:
                    i, j = rng.sample(range(n), 2)
                    if j not in adj[i]:
                        break
                adj[i].add(j)
                adj[j].add(i)
            sweep = _bfs(adj, rng.randrange(n))
            if max(_bfs(adj, max(sweep, key=sweep.get)).values()) < min_distance:
                continue
            far = [d for s in rng.sample(range(n), min(n, SIM_SOURCES)) for d in _bfs(adj, s).values()]
            far = [d for d in far if d >= min_distance]
            if far:
                hits += 1
                total += sum(far) / len(far)
        accept[n] = hits / SIM_GRAPHS
        dist[n] = total / hits if hits else float(min_distance)
    return accept, dist


class ShortestPath(TokenData):
    """Shortest paths in random connected graphs: `BOS u v u v ... | s t ? s ... t EOS` (PAPERS.md §5).

    A graph of n ~ U[nodes] nodes has a random spanning tree plus uniform extra edges, max(n-1,
    round(mean_degree*n/2)) edges in all, labelled by n distinct tokens of `labels`; the query (s, t) is uniform
    over ordered pairs at distance >= min_distance, the answer a shortest path (loss on it and EOS). A labelled
    graph belongs to eval iff a hash of its edge set falls below `eval_fraction`, so no eval graph is trained on.
    """

    kind: Literal["shortest_path"] = Field(
        "shortest_path", description="Shortest path in a random graph (Mixture of Parrots, PAPERS.md §5)."
    )
    nodes: IntRange = Field((10, 20), description="Nodes per graph, inclusive [low, high], uniform.")
    labels: int = Field(64, ge=2, description="Node-label tokens; a graph's nodes get distinct labels.")
    mean_degree: float = Field(
        3.0, gt=0, description="Mean degree: a graph of n nodes has round(mean_degree*n/2) edges."
    )
    min_distance: int = Field(
        2, ge=1, description="Least BFS distance between the query's source and target."
    )
    eval_fraction: float = Field(
        0.1,
        ge=0.01,
        le=0.99,
        description="Share of labelled graphs (by a hash of the edge set) that only eval shows; train never does.",
    )
    tie_break: Literal["smallest", "random"] = Field(
        "smallest",
        description="The generator's path among equal shortest ones: each hop to the smallest label, or random.",
    )

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "eval")
    SPECIALS: ClassVar[tuple[str, ...]] = ("PAD", "BOS", "EOS", "|", "?")

    @model_validator(mode="after")
    def _feasible(self) -> ShortestPath:
        p = Problems()
        lo, hi = self.nodes
        if lo < 2 or lo > hi:
            p.add("nodes", f"[{lo}, {hi}] is not a range of node counts; need 2 <= low <= high")
            p.check()
        if self.labels < hi:
            p.add(
                "labels",
                f"{self.labels} labels cannot name the {hi} nodes of the largest graph; need labels >= {hi}",
            )
        least = 2 * (hi - 1) / hi
        if self.mean_degree < least:
            p.add(
                "mean_degree",
                f"{self.mean_degree} is below {least:.3g} = 2(n-1)/n, the least a connected graph of {hi} nodes has; raise it",
            )
        over = [n for n in range(lo, hi + 1) if self.edges(n) > n * (n - 1) // 2 - (self.min_distance > 1)]
        if over:
            n = over[0]
            p.add(
                "mean_degree",
                f"{self.mean_degree} asks {self.edges(n)} edges of a graph of {n} nodes, which has "
                + (f"{n * (n - 1) // 2} pairs" if self.min_distance == 1 else "no pair at distance >= 2 then")
                + f"; lower mean_degree below {n - 1}",
            )
        elif self.min_distance > 1:
            reach = {n: _max_diameter(n, self.edges(n)) for n in range(lo, hi + 1)}
            short = [n for n, d in reach.items() if d < self.min_distance]
            if short:
                n = short[0]
                p.add(
                    "min_distance",
                    f"{self.min_distance} is impossible for graphs of {n} nodes and {self.edges(n)} edges: no two "
                    f"nodes are more than {reach[n]} apart (Ore's bound); lower min_distance, raise nodes or lower "
                    "mean_degree",
                )
            elif self.min_distance > 2:  # possible; check that random graphs reach it often enough to sample
                shares = _graph_stats(lo, hi, self.edges_table(), self.min_distance)[0]
                accept = sum(shares.values()) / len(shares)
                if accept < MIN_ACCEPT:
                    p.add(
                        "min_distance",
                        f"only {accept:.1%} of random graphs with nodes [{lo}, {hi}] and mean_degree "
                        f"{self.mean_degree} have a pair at distance >= {self.min_distance} (need "
                        f"{MIN_ACCEPT:.0%}); lower min_distance, raise nodes or lower mean_degree",
                    )
        p.check()
        return self

    def edges(self, n: int) -> int:
        """Edges of a graph of n nodes: round(mean_degree * n / 2), at least a spanning tree's n - 1."""
        return max(n - 1, math.floor(self.mean_degree * n / 2 + 0.5))

    def edges_table(self) -> tuple[int, ...]:
        """edges(n) for n = 0 .. nodes[1] (what the generator indexes)."""
        return tuple(self.edges(n) if n >= 1 else 0 for n in range(self.nodes[1] + 1))

    @property
    def vocab_size(self) -> int:
        """Specials ('|', '?') then one token per label."""
        return len(self.SPECIALS) + self.labels

    def seq_len(self, nodes: int, distance: int) -> int:
        """Tokens of one example: BOS, 2 per edge, '| s t ?', the d+1 path nodes, EOS."""
        return 2 * self.edges(nodes) + distance + 7

    def max_seq_len(self) -> int:
        """A path visits at most every node once: distance <= nodes - 1."""
        hi = self.nodes[1]
        return self.seq_len(hi, hi - 1)

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """Estimate from a small seeded pure-Python simulation of the graphs (cached, see _graph_stats): node
        counts weighted by their simulated share of graphs with a query pair (the generator redraws the others),
        the path by its simulated mean length at that node count.

        Both splits draw the same graphs (the split hash does not depend on size); a test checks the estimate
        against 2000 sampled examples.
        """
        lo, hi = self.nodes
        accept, dist = _graph_stats(lo, hi, self.edges_table(), self.min_distance)
        weights = accept if any(accept.values()) else dict.fromkeys(accept, 1.0)
        total = sum(weights.values())
        ts = {n: self.seq_len(n, 0) + dist[n] for n in weights}
        mean = sum(w * ts[n] for n, w in weights.items()) / total
        return mean, sum(w * ts[n] * (ts[n] + 1) for n, w in weights.items()) / total


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
    PhoneBook,
    ShortestPath,
    SyntheticVideo,
    VideoFiles,
    default=None,
    description="The data generator of a stage, by `kind`.",
)
