"""Labelled video files from a V-JEPA manifest, decoded with PyAV (docs/papers/salt.md); no torch.

The manifest (any fsspec URL) has one `path label` per line, space-separated as in V-JEPA's CSV files. A path
is a URL (`scheme://...`), an absolute path on the manifest's filesystem, or a path relative to the manifest's
directory. Lines that are empty or start with `#` are skipped.

A clip is `frames` frames taken every `frame_step` decoded frames, starting at a random frame in train and
at the centred start in eval. Train clips get a random resized crop (torchvision's sampler: area
`crop_scale`, aspect `crop_aspect`) and a horizontal flip with probability 1/2; eval clips a centred square
crop of `eval_crop` times the short side. An evaluator may ask for several clips of each eval video (`load`
with `segments` and `views`, V-JEPA 2's multi-view protocol): `segments` windows spread evenly from the
video's start to its end (`segment_starts`), each cut in `views` squares of the same size spread evenly along
the long side (`view_boxes`), all from one decode of the file. The crop is resized with numpy: a box filter by the integer part of
the downscale factor, then bilinear.

Short and truncated videos. The header gives a file's length: the container's frame count (exact), else its
duration times the frame rate (an estimate). A video whose decodable frames match its header but number
fewer than the clip's span (frames - 1) * frame_step + 1 is genuinely short: its clip is padded by repeating
its last frame, as V-JEPA's loader does, so every clip has exactly `frames` frames. A video that holds fewer
frames than its header says, by more than 1 frame (exact count) or max(2 frames, 5%) (estimate), is
truncated, and bad: every clip of it is refused, also one whose own frames all decode. Unless decoding the
clip reached the end of the stream, the reader then seeks to the key frame before the header's last frame
and reads the packets from there (decoding none) to find where the stream ends. Two cases cannot be checked:
MPEG-TS, whose duration is estimated from the bytes present, and a file whose only duration is the
container's while it holds other streams (audio may outlast the video), whose length is measured from the
video's packets instead; their clips are padded as for a short video.

A bad file (unreadable, undecodable or truncated) is replaced by another random entry; after `max_retries`
consecutive failures for one clip the job stops with an error that names the manifest. Failed reads are
counted (`failures`, and per file in `bad`); a file's first failure is logged on logger "engine" with its
path and reason, later ones are not. With `report_to(stage_url, rank)` (the trainer calls it) the list of
bad files (path, reason, count) is kept in the stage directory, `bad_clips.jsonl` (one file per rank;
`read_bad_clips` merges them). Each clip draws from its own counter-keyed generator and a file's verdict
depends on its bytes only (never on what was read before), so a batch is a pure function of the rng it is
given and of the files, whatever the thread scheduling or the failures.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import fsspec
import numpy as np

from schemas.data import VideoFiles as VideoFilesConfig

from .base import UnknownSplit, worker
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


@dataclass
class BadFile:
    """A file that could not be used: its URL, why (the first failure), and how many reads failed."""

    path: str
    reason: str
    count: int = 0


def read_bad_clips(stage_url: str) -> list[dict[str, Any]]:
    """The bad files all ranks of a stage reported (`bad_clips*.jsonl`), by path, counts summed."""
    fs, root = fsspec.core.url_to_fs(stage_url)
    merged: dict[str, dict[str, Any]] = {}
    for name in sorted(fs.glob(f"{root.rstrip('/')}/bad_clips*.jsonl")):
        for line in fs.cat_file(name).decode().splitlines():
            row = json.loads(line)
            if row["path"] in merged:
                merged[row["path"]]["count"] += row["count"]
            else:
                merged[row["path"]] = row
    return [merged[k] for k in sorted(merged)]


def _write(url: str, data: bytes) -> None:
    """Replace a file whole: local files through a temporary file and a rename, others in one write."""
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    target = f"{path}.tmp" if "file" in fs.protocol else path
    with fs.open(target, "wb") as f:
        f.write(data)
    if target != path:
        os.replace(target, path)


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


def view_boxes(height: int, width: int, fraction: float, views: int) -> list[Box]:
    """`views` squares of side `fraction` of the short side, spread evenly along the long side (the width of a
    square frame), centred across it: first at the long side's start, last at its end (3: left, centre, right,
    or top, centre, bottom for portrait frames), as V-JEPA's multi-view eval. One view is `centre_box`."""
    top, left, side, _ = centre_box(height, width, fraction)
    if views == 1:
        return [(top, left, side, side)]
    if height > width:  # portrait: along the height
        return [(i * (height - side) // (views - 1), left, side, side) for i in range(views)]
    return [(top, i * (width - side) // (views - 1), side, side) for i in range(views)]


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


def segment_starts(total: int, span: int, segments: int) -> list[int]:
    """Start frames of `segments` windows of `span` frames spread evenly over a video of `total` frames: the
    first at frame 0, the last ending at the last frame (one window: the centred one). A video shorter than the
    span starts them all at 0 (`clip_indices` repeats its last frame)."""
    room = max(0, total - span)
    if segments == 1:
        return [room // 2]
    return [i * room // (segments - 1) for i in range(segments)]


def read_clips(
    url: str, frames: int, step: int, choose_starts: Callable[[int], list[int]]
) -> tuple[np.ndarray, list[int]]:
    """uint8 [windows, frames, H, W, 3] of one file and the windows' start frames; `choose_starts(total)` picks
    them. The frames of all windows are decoded in one pass.

    Raises DecodeError for a truncated file: one whose video stream holds fewer frames than its header says,
    beyond the slack of `_frame_count` (checked even when the clip's own frames all decode).
    """
    with _open(url) as container:
        if not container.streams.video:
            raise DecodeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        total, slack = _frame_count(container, stream)
        starts = choose_starts(total)
        wanted = np.stack([clip_indices(total, frames, step, start) for start in starts])  # [windows, frames]
        picked, ended = _decode_indices(container, stream, sorted(set(wanted.ravel().tolist())))
        if slack is not None:
            present = ended if ended is not None else _stream_end(container, stream, total)
            if present is not None and present < total - slack:
                raise DecodeError(f"truncated: its header says {total} frames but only {present} can be read")
        return np.stack([[picked[i] for i in row] for row in wanted.tolist()]), starts


def _rate(stream: Any) -> Fraction | None:
    """Frames per second of a stream, when the container says."""
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate) if rate else None


def _frame_count(container: Any, stream: Any) -> tuple[int, int | None]:
    """Frames in the stream by its header, and how many fewer may decode before the file counts as truncated.

    The container's frame count is exact (slack 1 frame). Else the duration times the frame rate estimates it
    (slack max(2, 5%)): the stream's own duration, or the container's when the video is its only stream. With
    other streams the container's duration may be theirs (audio outlasting the video): the video's packets
    are measured instead, which leaves nothing to check them against (slack None).
    """
    if stream.frames:
        return int(stream.frames), 1
    rate = _rate(stream)
    if rate and stream.duration and stream.time_base:
        total = max(1, int(round(stream.duration * stream.time_base * rate)))
        return total, max(2, total // 20)
    if rate and container.duration:
        total = max(1, int(round(Fraction(container.duration, 1_000_000) * rate)))
        if len(container.streams) == 1:
            return total, max(2, total // 20)
        measured = _stream_end(container, stream, total)
        container.seek(0, stream=stream, backward=True)
        return max(1, measured or total), None
    raise DecodeError("the number of frames is unknown")


def _decode_indices(
    container: Any, stream: Any, targets: list[int]
) -> tuple[dict[int, np.ndarray], int | None]:
    """RGB arrays of the frames at the sorted indices `targets`, and the stream's length if it ended first.

    Targets past the end of the stream get its last frame; the length is then 1 + the index of that frame.
    """
    if targets[0] >= SEEK_MIN_FRAMES and _rate(stream) and stream.time_base:
        try:
            found = _decode(_after_seek(container, stream, targets[0]), targets)
        except _Unseekable:
            found = None
        if found is not None:
            return found
        container.seek(0, stream=stream, backward=True)  # no timestamps, or it landed past the first target
    found = _decode(enumerate(_frames(container, stream)), targets)
    if found is None:
        raise DecodeError("no frames decoded")
    return found


def _frames(container: Any, stream: Any) -> Iterator[Any]:
    """The decoded frames of the stream from the demuxer's position, packet by packet."""
    for packet in container.demux(stream):
        yield from packet.decode()


class _Unseekable(Exception):
    """Decoded frames without timestamps: their indices after a seek are unknown."""


def _index(stream: Any) -> Callable[[int], Fraction]:
    """Timestamp -> (fractional) frame index of a stream with a frame rate and a time base."""
    rate, base, origin = _rate(stream), stream.time_base, stream.start_time or 0
    return lambda pts: (pts - origin) * base * rate


def _timestamp(stream: Any, index: int) -> int:
    """The timestamp of frame `index` of a stream with a frame rate and a time base."""
    return (stream.start_time or 0) + int(index / (_rate(stream) * stream.time_base))


def _after_seek(container: Any, stream: Any, first: int) -> Iterator[tuple[int, Any]]:
    """(index, frame) pairs from the key frame at or before frame `first`, indices from timestamps."""
    container.seek(_timestamp(stream, first), stream=stream, backward=True)
    index = _index(stream)
    for frame in _frames(container, stream):
        if frame.pts is None:
            raise _Unseekable
        yield int(round(index(frame.pts))), frame


def _decode(
    pairs: Iterator[tuple[int, Any]], targets: list[int]
) -> tuple[dict[int, np.ndarray], int | None] | None:
    """Assign each target index the first decoded frame at or after it; None if the first frame is too late.

    With the frames, the stream's length (1 + the index of its last frame) when it ended before a target.
    """
    out: dict[int, np.ndarray] = {}
    pending = list(reversed(targets))
    shape: dict[str, int] = {}
    last, last_idx = None, -1
    for idx, frame in pairs:
        if last is None and idx > targets[0]:
            return None
        last, last_idx = frame, idx
        if idx < pending[-1]:
            continue
        if not shape:
            shape = {"width": frame.width, "height": frame.height}
        array = frame.to_ndarray(format="rgb24", **shape)
        while pending and idx >= pending[-1]:
            out[pending.pop()] = array
        if not pending:
            return out, None
    if last is None:
        return None
    array = last.to_ndarray(format="rgb24", **(shape or {"width": last.width, "height": last.height}))
    for i in pending:  # the video ended before these frames: repeat its last frame
        out[i] = array
    return out, last_idx + 1


def _stream_end(container: Any, stream: Any, total: int) -> int | None:
    """How many frames the stream's intact packets cover (None: no timestamps to tell), decoding nothing.

    Seeks to the key frame before the header's last frame and reads the packets from there to the end of the
    file; when there are none (the file ends before that key frame), reads all the packets from the start.
    """
    if not (_rate(stream) and stream.time_base):
        return None
    index, per_tick = _index(stream), stream.time_base * _rate(stream)
    for target in (_timestamp(stream, total - 1), None):
        try:
            if target is None:
                container.seek(0, stream=stream, backward=True)
            else:
                container.seek(target, stream=stream, backward=True)
        except av.error.FFmpegError:  # a file that cannot seek: only a clip reaching its end tells
            return None
        end = None
        for packet in container.demux(stream):
            stamp = packet.pts if packet.pts is not None else packet.dts
            if packet.size == 0 or packet.is_corrupt or stamp is None:
                continue
            covered = index(stamp) + (packet.duration * per_tick if packet.duration else 1)
            end = covered if end is None else max(end, covered)
        if end is not None:
            return int(round(end))
    return 0


# ----------------------------------------------------------------------------- the generator


class VideoFiles:
    """Clips of the videos of a manifest: `sample(rng, n, split) -> Clips`, with unreadable files recorded."""

    chunk = 1  # a clip costs its own decode: key each clip, so that no rank decodes clips it does not use

    def __init__(self, cfg: VideoFilesConfig):
        self.cfg = cfg
        self.entries = {"train": read_manifest(cfg.manifest, cfg.classes)}
        self.entries["eval"] = (
            read_manifest(cfg.eval_manifest, cfg.classes) if cfg.eval_manifest else self.entries["train"]
        )
        self.failures = 0  # reads that failed, since construction
        self.bad: dict[str, BadFile] = {}  # the files that failed, by URL
        self.report_url: str | None = None  # where `report_to` asked for the list of bad files
        self._earlier: dict[str, dict[str, Any]] = {}  # the list found there (an earlier attempt's)
        self._reported = (0, 0)  # (files, failures) in the last report written
        self._report_at = ("", 0)  # (stage URL, rank) given to `report_to`
        self._report_pid = 0  # the process `report_url` was chosen in
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0  # the process the pool's threads run in (a forked data worker has none of them)

    def __getstate__(self) -> dict[str, Any]:
        """What a data worker process receives: all but the thread pool and the lock (it makes its own)."""
        state = dict(self.__dict__)
        state.update(_pool=None, _pool_pid=0, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def manifest(self, split: str) -> str:
        """The manifest URL of a split."""
        return (self.cfg.eval_manifest or self.cfg.manifest) if split == "eval" else self.cfg.manifest

    def report_to(self, stage_url: str, rank: int = 0) -> None:
        """List the bad files in the stage directory: bad_clips.jsonl (rank r > 0: bad_clips.rank{r}.jsonl; data
        worker w of the rank adds `.worker{w}` before `.jsonl`: each process lists the files it met).

        One JSON object per file (path, reason, count of failed reads), sorted by path, rewritten whole after
        a batch that met a new bad file or doubled the failures since the last write. The list an earlier
        attempt of the stage left there (a resumed run) is kept, its counts added to.
        """
        self._report_at = (stage_url.rstrip("/"), rank)
        self._retarget()

    def _retarget(self) -> None:
        """Point the list at this process's file (a forked data worker starts its own, from no bad files)."""
        stage_url, rank = self._report_at
        name = "bad_clips" if rank == 0 else f"bad_clips.rank{rank}"
        index = worker()
        if index is not None:
            name += f".worker{index}"
            self.bad, self.failures = {}, 0  # the parent's were its own to list
        self.report_url = f"{stage_url}/{name}.jsonl"
        fs, path = fsspec.core.url_to_fs(self.report_url)
        lines = fs.cat_file(path).decode().splitlines() if fs.exists(path) else []
        self._earlier = {row["path"]: row for row in map(json.loads, lines)}
        self._reported = (0, 0)
        self._report_pid = os.getpid()

    def sample(self, rng: np.random.Generator, n: int, split: str = "train") -> Clips:
        """n clips of random manifest entries; train clips are augmented, eval clips centre-cropped."""
        return self.sample_chunks([rng], n, split)

    def sample_chunks(self, rngs: list[np.random.Generator], n: int, split: str = "train") -> Clips:
        """n clips per generator in `rngs`, in order, decoded together (one pass through the worker threads)."""
        draws = [self.draw(rng, n, split) for rng in rngs]
        return self.load(np.concatenate([e for e, _ in draws]), np.concatenate([k for _, k in draws]), split)

    def videos(self, split: str) -> int:
        """How many videos the split's manifest lists."""
        if split not in self.entries:
            raise UnknownSplit(f"no split {split!r}; video_files has train and eval")
        return len(self.entries[split])

    def draw(self, rng: np.random.Generator, n: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """What `sample(rng, n, split)` loads: n random manifest entries and each clip's key."""
        return rng.integers(0, self.videos(split), size=n), rng.integers(0, 2**63, size=n)

    def load(
        self, entries: np.ndarray, keys: np.ndarray, split: str = "eval", segments: int = 1, views: int = 1
    ) -> Clips:
        """The clips of the given manifest entries, entry i drawing from counter_rng(keys[i], attempt).

        Eval entries give `segments` x `views` clips each (`segment_starts`, `view_boxes`), in the order
        entry, view, segment: clip (i * views + v) * segments + s. Train entries give one augmented clip.
        """
        if split == "train" and segments * views > 1:
            raise ValueError(
                f"segments={segments} and views={views} are eval clips; train clips are one each"
            )
        if self.report_url is not None and self._report_pid != os.getpid():  # first batch in a data worker
            self._retarget()
        jobs = [(int(e), int(k), split, segments, views) for e, k in zip(entries, keys, strict=True)]
        try:
            if self.cfg.threads > 1 and len(jobs) > 1:
                if self._pool is None or self._pool_pid != os.getpid():
                    self._pool = ThreadPoolExecutor(self.cfg.threads, thread_name_prefix="video")
                    self._pool_pid = os.getpid()
                results = list(self._pool.map(self._clips, jobs))
            else:
                results = [self._clips(job) for job in jobs]
        finally:
            self._report()
        clips = [clip for result in results for clip in result]
        video = np.stack([c[0] for c in clips])  # [n * views * segments, 3, T, H, W]
        meta = {k: np.array([c[1][k] for c in clips]) for k in clips[0][1]} if clips else {}
        labels = meta.get("label", np.zeros(0, np.int64)).astype(np.int64)
        return Clips(video, labels, meta)

    def _clips(self, job: tuple[int, int, str, int, int]) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """The clips of one entry, replacing an unreadable entry by random others (at most `max_retries` in a
        row; all its clips come from the one that reads)."""
        entry, key, split, segments, views = job
        entries, cfg = self.entries[split], self.cfg
        error: Exception | None = None
        for attempt in range(cfg.max_retries + 1):
            rng = counter_rng(key, attempt)
            if attempt:
                entry = int(rng.integers(0, len(entries)))
            try:
                return self._read(entries[entry], rng, split, entry, attempt, segments, views)
            except (av.error.FFmpegError, OSError, DecodeError, EOFError) as e:
                error = e
                self._failed(entries[entry].url, e)
        raise RuntimeError(
            f"video_files: {cfg.max_retries + 1} entries in a row of manifest {self.manifest(split)} could not be"
            f" read (last: {entries[entry].url}: {error}); check the manifest and its files"
        ) from error

    def _failed(self, url: str, error: Exception) -> None:
        """Count a failed read; a file's first failure is logged with its reason, later ones are not."""
        with self._lock:
            self.failures += 1
            record = self.bad.get(url)
            first = record is None
            if first:
                record = self.bad[url] = BadFile(url, f"{type(error).__name__}: {error}")
            record.count += 1
        if first:
            log.warning(
                "video_files: cannot read %s (%s); other entries stand in for it (logged once per file)",
                url,
                record.reason,
            )

    def _report(self) -> None:
        """Rewrite the list of bad files if a file was added or the failures doubled since the last write."""
        if self.report_url is None:
            return
        if self._report_pid != os.getpid():
            self._retarget()
        with self._lock:
            files, failures = len(self.bad), self.failures
            if files == self._reported[0] and failures < 2 * max(1, self._reported[1]):
                return
            rows = {path: dict(row) for path, row in self._earlier.items()}
            for b in self.bad.values():
                if b.path in rows:
                    rows[b.path]["count"] += b.count
                else:
                    rows[b.path] = asdict(b)
            self._reported = (files, failures)
        _write(self.report_url, "".join(json.dumps(rows[k]) + "\n" for k in sorted(rows)).encode())

    def _read(
        self,
        item: Entry,
        rng: np.random.Generator,
        split: str,
        entry: int,
        attempt: int,
        segments: int = 1,
        views: int = 1,
    ) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """Decode, crop, resize and flip one entry: its clips, uint8 [3, T, R, R] each, and their metadata (one
        augmented clip in train; in eval `segments` x `views`, view-major)."""
        cfg = self.cfg
        span = (cfg.frames - 1) * cfg.frame_step + 1
        train = split == "train"

        def choose_starts(total: int) -> list[int]:
            if train:
                return [int(rng.integers(0, max(0, total - span) + 1))]
            return segment_starts(total, span, segments)

        windows, starts = read_clips(item.url, cfg.frames, cfg.frame_step, choose_starts)  # [S, T, H, W, 3]
        height, width = windows.shape[2:4]
        if train:
            boxes = [random_resized_crop_box(rng, height, width, cfg.crop_scale, cfg.crop_aspect)]
            flip = cfg.flip and bool(rng.integers(0, 2))
        else:
            boxes, flip = view_boxes(height, width, cfg.eval_crop, views), False
        out = []
        for box in boxes:
            for frames, start in zip(windows, starts, strict=True):
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
                out.append((clip, meta))
        return out

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
