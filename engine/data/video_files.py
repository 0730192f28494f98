"""Labelled video files from a V-JEPA manifest, decoded with PyAV (docs/papers/salt.md); no torch.

The manifest (any fsspec URL) has one `path label` per line, space-separated as in V-JEPA's CSV files. A path
is a URL (`scheme://...`), an absolute path on the manifest's filesystem, or a path relative to the manifest's
directory. Lines that are empty or start with `#` are skipped.

A clip is `frames` frames taken every `frame_step` decoded frames, starting at a random frame in train and
at the centred start in eval. A video shorter than (frames - 1) * frame_step + 1 frames is padded by
repeating its last frame (as V-JEPA's loader does), so every clip has exactly `frames` frames. Train clips
get a random resized crop (torchvision's sampler: area `crop_scale`, aspect `crop_aspect`) and a horizontal
flip with probability 1/2; eval clips a centred square crop of `eval_crop` times the short side. The crop is
resized with numpy: a box filter by the integer part of the downscale factor, then bilinear.

A file that cannot be read or decoded is counted (`failures`), logged on logger "engine" and replaced by
another random entry; after `max_retries` consecutive failures for one clip the job stops with an error that
names the manifest. Each clip draws from its own counter-keyed generator, so a batch is a pure function of
the rng it is given (and of the files), whatever the thread scheduling or the failures.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import fsspec
import numpy as np

from schemas.data import VideoFiles as VideoFilesConfig

from .stream import counter_rng
from .video import Clip, Clips

try:
    import av
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("the video_files data kind needs PyAV: pip install 'engine[video]'") from e

log = logging.getLogger("engine")

SEEK_MIN_FRAMES = 48  # seek (instead of decoding from frame 0) when the clip starts at least this late


class DecodeError(Exception):
    """A file that opened but holds no decodable video frames."""


@dataclass(frozen=True)
class Entry:
    """One manifest line: the video's URL and its class label."""

    url: str
    label: int


def _protocol(url: str) -> str:
    """The fsspec protocol of a URL (`file` for plain paths)."""
    return url.split("://", 1)[0] if "://" in url else "file"


def resolve(manifest: str, path: str) -> str:
    """The URL of a manifest entry: URLs as given; absolute paths on the manifest's filesystem; else relative."""
    if "://" in path:
        return path
    protocol = _protocol(manifest)
    if path.startswith("/"):
        return path if protocol == "file" else f"{protocol}://{path}"
    return posixpath.join(posixpath.dirname(manifest), path)


def read_manifest(url: str, classes: int) -> list[Entry]:
    """The entries of a manifest; errors name the manifest and the line."""
    try:
        with fsspec.open(url, "rt") as f:
            lines = f.read().splitlines()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"video manifest {url} does not exist") from e
    entries = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path, _, label = line.rpartition(" ")
        if not path.strip() or not label.lstrip("-").isdigit():
            raise ValueError(f"{url}:{number}: expected `path label`, got {line!r}")
        if not 0 <= int(label) < classes:
            raise ValueError(f"{url}:{number}: label {label} is outside [0, {classes}); raise `classes`")
        entries.append(Entry(resolve(url, path.strip()), int(label)))
    if not entries:
        raise ValueError(f"video manifest {url} lists no videos")
    return entries


# ----------------------------------------------------------------------------- crops and resizing

Box = tuple[int, int, int, int]  # top, left, height, width in source pixels


def random_resized_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float],
    aspect: tuple[float, float],
    attempts: int = 10,
) -> Box:
    """A crop box as torchvision's RandomResizedCrop draws it: area fraction in `scale`, width/height in `aspect`.

    After `attempts` boxes that do not fit, the largest centred box whose aspect is clamped to `aspect`.
    """
    area = height * width
    log_lo, log_hi = np.log(aspect[0]), np.log(aspect[1])
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        ratio = float(np.exp(rng.uniform(log_lo, log_hi)))
        w = int(round(np.sqrt(target * ratio)))
        h = int(round(np.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    ratio = width / height
    if ratio < aspect[0]:
        w, h = width, int(round(width / aspect[0]))
    elif ratio > aspect[1]:
        h, w = height, int(round(height * aspect[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def centre_box(height: int, width: int, fraction: float) -> Box:
    """The centred square whose side is `fraction` of the short side."""
    side = max(1, int(round(min(height, width) * fraction)))
    return (height - side) // 2, (width - side) // 2, side, side


def _bilinear_taps(source: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lo, hi) and weight of hi for resampling `source` pixels to `out` (half-pixel centres)."""
    pos = np.clip((np.arange(out) + 0.5) * source / out - 0.5, 0, source - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, source - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def resize_box(frames: np.ndarray, box: Box, size: int) -> np.ndarray:
    """uint8 [C, T, size, size] (channels first): the `box` of frames [T, H, W, C], box-filtered, then bilinear.

    The box filter averages blocks of the integer part of the downscale factor (none when upscaling), so the
    bilinear step never shrinks by 2x or more. Frames are done one at a time, to stay in cache.
    """
    top, left, h, w = box
    ky, kx = max(1, h // size), max(1, w // size)
    h2, w2 = h // ky, w // kx  # the box after the box filter
    ylo, yhi, fy = _bilinear_taps(h2, size)
    xlo, xhi, fx = _bilinear_taps(w2, size)
    T, C = frames.shape[0], frames.shape[-1]
    out = np.empty((C, T, size, size), np.uint8)
    for t in range(T):
        src = frames[t, top : top + h2 * ky, left : left + w2 * kx]
        if ky > 1 or kx > 1:
            src = src.reshape(h2, ky, w2, kx, C).mean(axis=(1, 3), dtype=np.float32)
        rows = src[ylo].astype(np.float32)  # [size, w2, C]
        rows += (src[yhi] - rows) * fy[:, None, None]
        planes = np.ascontiguousarray(rows.transpose(2, 0, 1))  # [C, size, w2]
        pixels = planes[:, :, xlo]
        pixels += (planes[:, :, xhi] - pixels) * fx
        pixels += 0.5  # the assignment truncates: round to nearest
        out[:, t] = pixels
    return out


# ----------------------------------------------------------------------------- decoding


@contextlib.contextmanager
def _open(url: str) -> Iterator[Any]:
    """An open PyAV container: local files by path (FFmpeg's own I/O), anything else through fsspec."""
    if _protocol(url) == "file":
        with av.open(url.removeprefix("file://")) as container:
            yield container
    else:
        with fsspec.open(url, "rb") as f, av.open(f) as container:
            yield container


def clip_indices(total: int, frames: int, step: int, start: int) -> np.ndarray:
    """Frame indices of a clip: start + k * step, past the end clamped to the last frame (repeats it)."""
    return np.minimum(start + step * np.arange(frames), max(total, 1) - 1)


def read_clip(url: str, frames: int, step: int, choose_start: Callable[[int], int]) -> tuple[np.ndarray, int]:
    """uint8 [frames, H, W, 3] of one file and its start frame; `choose_start(total)` picks the start."""
    with _open(url) as container:
        if not container.streams.video:
            raise DecodeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        total = _frame_count(container, stream)
        start = choose_start(total)
        wanted = clip_indices(total, frames, step, start)
        picked = _decode_indices(container, stream, sorted(set(wanted.tolist())))
        return np.stack([picked[i] for i in wanted.tolist()]), start


def _rate(stream: Any) -> Fraction | None:
    """Frames per second of a stream, when the container says."""
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate) if rate else None


def _frame_count(container: Any, stream: Any) -> int:
    """Frames in the stream: the container's count, else its duration times the frame rate (an estimate)."""
    if stream.frames:
        return int(stream.frames)
    rate = _rate(stream)
    if rate and stream.duration and stream.time_base:
        return max(1, int(round(stream.duration * stream.time_base * rate)))
    if rate and container.duration:
        return max(1, int(round(Fraction(container.duration, 1_000_000) * rate)))
    raise DecodeError("the number of frames is unknown")


def _decode_indices(container: Any, stream: Any, targets: list[int]) -> dict[int, np.ndarray]:
    """RGB arrays of the frames at the sorted indices `targets`; past the end, the last frame decoded."""
    frames = None
    if targets[0] >= SEEK_MIN_FRAMES and _rate(stream) and stream.time_base:
        try:
            frames = _decode(_after_seek(container, stream, targets[0]), targets)
        except _Unseekable:
            frames = None
        if frames is None:  # no timestamps, or the seek landed past the first target: decode from the start
            container.seek(0, stream=stream, backward=True)
    if frames is None:
        frames = _decode(enumerate(container.decode(stream)), targets)
    if frames is None:
        raise DecodeError("no frames decoded")
    return frames


class _Unseekable(Exception):
    """Decoded frames without timestamps: their indices after a seek are unknown."""


def _after_seek(container: Any, stream: Any, first: int) -> Iterator[tuple[int, Any]]:
    """(index, frame) pairs from the key frame at or before frame `first`, indices from timestamps."""
    rate, base, origin = _rate(stream), stream.time_base, stream.start_time or 0
    container.seek(origin + int(first / (rate * base)), stream=stream, backward=True)
    for frame in container.decode(stream):
        if frame.pts is None:
            raise _Unseekable
        yield int(round((frame.pts - origin) * base * rate)), frame


def _decode(pairs: Iterator[tuple[int, Any]], targets: list[int]) -> dict[int, np.ndarray] | None:
    """Assign each target index the first decoded frame at or after it; None if the first frame is too late."""
    out: dict[int, np.ndarray] = {}
    pending = list(reversed(targets))
    shape: dict[str, int] = {}
    last = None
    for idx, frame in pairs:
        if last is None and idx > targets[0]:
            return None
        last = frame
        if idx < pending[-1]:
            continue
        if not shape:
            shape = {"width": frame.width, "height": frame.height}
        array = frame.to_ndarray(format="rgb24", **shape)
        while pending and idx >= pending[-1]:
            out[pending.pop()] = array
        if not pending:
            return out
    if last is None:
        return None
    array = last.to_ndarray(format="rgb24", **(shape or {"width": last.width, "height": last.height}))
    for i in pending:  # the video ended before these frames: repeat its last frame
        out[i] = array
    return out


# ----------------------------------------------------------------------------- the generator


class VideoFiles:
    """Clips of the videos of a manifest: `sample(rng, n, split) -> Clips` with `failures` counted."""

    chunk = 1  # a clip costs its own decode: key each clip, so that no rank decodes clips it does not use

    def __init__(self, cfg: VideoFilesConfig):
        self.cfg = cfg
        self.entries = {"train": read_manifest(cfg.manifest, cfg.classes)}
        self.entries["eval"] = (
            read_manifest(cfg.eval_manifest, cfg.classes) if cfg.eval_manifest else self.entries["train"]
        )
        self.failures = 0  # entries that could not be read, since construction
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def manifest(self, split: str) -> str:
        """The manifest URL of a split."""
        return (self.cfg.eval_manifest or self.cfg.manifest) if split == "eval" else self.cfg.manifest

    def sample(self, rng: np.random.Generator, n: int, split: str = "train") -> Clips:
        """n clips of random manifest entries; train clips are augmented, eval clips centre-cropped."""
        return self.sample_chunks([rng], n, split)

    def sample_chunks(self, rngs: list[np.random.Generator], n: int, split: str = "train") -> Clips:
        """n clips per generator in `rngs`, in order, decoded together (one pass through the worker threads)."""
        if split not in self.entries:
            raise AttributeError(f"no split {split!r}; video_files has train and eval")
        draws = [
            (rng.integers(0, len(self.entries[split]), size=n), rng.integers(0, 2**63, size=n))
            for rng in rngs
        ]
        return self.load(np.concatenate([e for e, _ in draws]), np.concatenate([k for _, k in draws]), split)

    def load(self, entries: np.ndarray, keys: np.ndarray, split: str = "eval") -> Clips:
        """The clips of the given manifest entries, clip i drawing from counter_rng(keys[i], attempt)."""
        jobs = [(int(e), int(k), split) for e, k in zip(entries, keys, strict=True)]
        if self.cfg.workers > 1 and len(jobs) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.cfg.workers, thread_name_prefix="video")
            results = list(self._pool.map(self._clip, jobs))
        else:
            results = [self._clip(job) for job in jobs]
        video = np.stack([r[0] for r in results])  # [n, 3, T, H, W]
        meta = {k: np.array([r[1][k] for r in results]) for k in results[0][1]} if results else {}
        labels = meta.get("label", np.zeros(0, np.int64)).astype(np.int64)
        return Clips(video, labels, meta)

    def _clip(self, job: tuple[int, int, str]) -> tuple[np.ndarray, dict[str, Any]]:
        """One clip, replacing unreadable entries by random others (at most `max_retries` in a row)."""
        entry, key, split = job
        entries, cfg = self.entries[split], self.cfg
        error: Exception | None = None
        for attempt in range(cfg.max_retries + 1):
            rng = counter_rng(key, attempt)
            if attempt:
                entry = int(rng.integers(0, len(entries)))
            try:
                return self._read(entries[entry], rng, split, entry, attempt)
            except (av.error.FFmpegError, OSError, DecodeError, EOFError) as e:
                error = e
                with self._lock:
                    self.failures += 1
                    failures = self.failures
                log.warning(
                    "video_files: cannot read %s (%s: %s); using another entry (%d failures so far)",
                    entries[entry].url,
                    type(e).__name__,
                    e,
                    failures,
                )
        raise RuntimeError(
            f"video_files: {cfg.max_retries + 1} entries in a row of manifest {self.manifest(split)} could not be"
            f" read (last: {entries[entry].url}: {error}); check the manifest and its files"
        ) from error

    def _read(
        self, item: Entry, rng: np.random.Generator, split: str, entry: int, attempt: int
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Decode, crop, resize and flip one entry: uint8 [3, T, R, R] and its metadata."""
        cfg = self.cfg
        span = (cfg.frames - 1) * cfg.frame_step + 1
        train = split == "train"

        def choose_start(total: int) -> int:
            room = max(0, total - span)
            return int(rng.integers(0, room + 1)) if train else room // 2

        frames, start = read_clip(item.url, cfg.frames, cfg.frame_step, choose_start)  # [T, H, W, 3]
        height, width = frames.shape[1:3]
        if train:
            box = random_resized_crop_box(rng, height, width, cfg.crop_scale, cfg.crop_aspect)
            flip = cfg.flip and bool(rng.integers(0, 2))
        else:
            box, flip = centre_box(height, width, cfg.eval_crop), False
        clip = resize_box(frames, box, cfg.resolution)  # [3, T, R, R]
        if flip:
            clip = np.ascontiguousarray(clip[..., ::-1])
        meta = dict(
            label=item.label,
            entry=entry,
            start=start,
            crop=np.array(box),
            source=np.array([height, width]),
            flip=flip,
            retries=attempt,
        )
        return clip, meta

    def render(self, clips: Clips | Clip, i: int = 0, split: str = "train") -> str:
        """One line describing clip i (or a single Clip): file, label, frames taken, crop and flip."""
        clip = clips if isinstance(clips, Clip) else clips[i]
        m, cfg = clip.meta, self.cfg
        top, left, h, w = (int(v) for v in m["crop"])
        entry = self.entries[split][int(m["entry"])]
        stop = int(m["start"]) + (cfg.frames - 1) * cfg.frame_step + 1
        return (
            f"{entry.url} label={clip.label} frames {int(m['start'])}:{stop}:{cfg.frame_step}"
            f" crop {h}x{w}+{top}+{left} of {int(m['source'][0])}x{int(m['source'][1])}"
            f" flip={bool(m['flip'])} video={tuple(clip.video.shape)}"
        )

    def close(self) -> None:
        """Stop the decoding threads."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
