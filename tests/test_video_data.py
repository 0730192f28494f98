"""Tests of the video data: the synthetic moving-shapes generator and the PyAV manifest loader.

Synthetic: determinism and prefix stability, shapes, label ranges, motion labels invisible in frame 0 but
visible in the motion (centroid displacement, marker rotation, static scenes), appearance labels in the
pixels. Files: videos encoded with PyAV into a temporary directory (and a memory:// filesystem), including a
corrupt and a missing entry; frame step, padding, seeking, crops, flips and failure accounting.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.data.stream import counter_rng
from engine.data.video import ANGLES, PALETTE, Clip, Clips, Scenes, SyntheticVideo
from schemas.data import SyntheticVideo as SyntheticVideoConfig

SMALL = dict(frames=8, resolution=32)
FAST = settings(max_examples=15, deadline=None)


def gen(**kw: object) -> SyntheticVideo:
    """A generator for a config with the given fields (small clips unless told)."""
    return SyntheticVideo(SyntheticVideoConfig(**{**SMALL, **kw}))


def same(a: Clips, b: Clips) -> bool:
    """Whether two batches agree in video, labels and every metadata array."""
    if a.meta.keys() != b.meta.keys() or a.video.shape != b.video.shape:
        return False
    pairs = [(a.video, b.video), (a.labels, b.labels)] + [(a.meta[k], b.meta[k]) for k in a.meta]
    return all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in pairs)


def edit(s: Scenes, **fields: np.ndarray) -> Scenes:
    """A copy of scenes with some per-slot arrays replaced."""
    return dataclasses.replace(s, **fields)


def at_target(s: Scenes, array: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A copy of a [n, K] scene array with the target's entry of each clip set to `values`."""
    out = array.copy()
    out[np.arange(len(s.target)), s.target] = values
    return out


# ---- determinism, shapes, labels -----------------------------------------------------------------------


@FAST
@given(seed=st.integers(0, 2**63 - 1), n=st.integers(1, 12), split=st.sampled_from(["train", "eval"]))
def test_synthetic_is_deterministic_and_prefix_stable(seed: int, n: int, split: str) -> None:
    g = gen()
    a, b = g.sample(counter_rng(seed), n, split), g.sample(counter_rng(seed), n, split)
    assert same(a, b)
    assert not np.array_equal(a.video, g.sample(counter_rng(seed + 1), n, split).video)
    # clip i depends on row i only: a longer batch starts with the shorter one, a single clip equals clip 0
    assert same(g.sample(counter_rng(seed), n + 3, split).slice(0, n), a)
    assert same(g.sample(counter_rng(seed), 1, split), a.slice(0, 1))


@pytest.mark.parametrize(
    "fields",
    [
        {},
        dict(frames=16, resolution=64),
        dict(channels=1, label="shape"),
        dict(background="plain", objects=(2, 2)),
    ],
)
def test_synthetic_shapes_and_dtypes(fields: dict) -> None:
    g = gen(**fields)
    clips = g.sample(counter_rng(7), 5)
    assert clips.video.shape == (5, *g.cfg.clip_shape) and clips.video.dtype == np.uint8
    assert clips.video.flags.c_contiguous
    assert clips.labels.shape == (5,) and clips.labels.dtype == np.int64
    np.testing.assert_array_equal(clips.labels, clips.meta[g.cfg.label])
    assert set(SyntheticVideoConfig.TASKS) <= set(clips.meta)
    assert all(len(v) == 5 for v in clips.meta.values())
    assert ((clips.meta["objects"] >= g.cfg.objects[0]) & (clips.meta["objects"] <= g.cfg.objects[1])).all()
    assert clips.video.std() > 10  # not blank
    one = clips[2]
    assert isinstance(one, Clip) and one.video.shape == g.cfg.clip_shape and one.label == clips.labels[2]
    assert "direction=" in g.render(clips, 2) == g.render(one)
    assert len(Clips.concat([clips.slice(0, 2), clips.slice(2, 5)]).video) == 5


@pytest.mark.parametrize("task", SyntheticVideoConfig.TASKS)
def test_every_label_in_range_and_every_class_drawn(task: str) -> None:
    g = gen(label=task)
    s = g.draw(counter_rng(3), 3000)  # the scene draw alone: cheap
    labels = s.labels[task]
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < g.cfg.num_classes
    np.testing.assert_array_equal(np.unique(labels), np.arange(g.cfg.num_classes))
    assert g.cfg.num_classes == {"direction": 9, "speed": 3, "rotation": 3, "shape": 5, "colour": 8}.get(
        task, 3
    )
    assert gen(label="direction", speeds=(0.2, 0.4)).cfg.num_classes == 8  # no static level, no static class
    assert (g.sample(counter_rng(3), 6).labels < g.cfg.num_classes).all()


def test_config_errors_say_how_to_fix() -> None:
    cases = [
        (dict(objects=(1, 4), colours=("red", "blue")), "distinct colours"),
        (dict(distractor_size=(0.1, 0.3)), "target must be the largest"),
        (dict(channels=1, label="colour"), "grey"),
        (dict(speeds=(0.0, 0.0)), "repeats"),
        (dict(spin=4.0), "half a turn"),
    ]
    for fields, message in cases:
        with pytest.raises(ValidationError, match=message):
            SyntheticVideoConfig(**{**SMALL, **fields})


# ---- motion labels: invisible in one frame, visible in the motion -------------------------------------


def test_motion_does_not_change_frame_zero() -> None:
    """Changing the target's direction, speed and rotation changes later frames but never frame 0."""
    g = gen(frames=8, resolution=48)
    s = g.draw(counter_rng(11), 64)
    rng = np.random.default_rng(0)
    n = len(s.target)
    moved = edit(
        s,
        direction=at_target(
            s, s.direction, (s.direction[np.arange(n), s.target] + rng.integers(1, 8, n)) % 8
        ),
        distance=at_target(s, s.distance, np.where(s.distance[np.arange(n), s.target] > 0, 0.0, 0.5)),
        rotation=at_target(s, s.rotation, (s.rotation[np.arange(n), s.target] + 1) % 3),
    )
    a, b = g.render_scenes(s), g.render_scenes(moved)
    np.testing.assert_array_equal(a[:, :, 0], b[:, :, 0])
    differs = (a[:, :, 1:] != b[:, :, 1:]).any(axis=(1, 2, 3, 4))
    assert differs.mean() > 0.95  # every clip changes after frame 0 (bar rare full occlusions)


def test_frame_zero_position_and_angle_independent_of_motion_labels() -> None:
    """Where the target starts and how it is turned at frame 0 do not depend on any motion label."""
    g = gen(frames=8, resolution=64)
    s = g.draw(counter_rng(5), 20000)
    rows = np.arange(len(s.target))
    start = {"y0": s.y[rows, s.target], "x0": s.x[rows, s.target], "angle": s.angle[rows, s.target]}
    centre = {"y0": 32.0, "x0": 32.0, "angle": ANGLES / 2}
    spread = {"y0": 64 * 0.19, "x0": 64 * 0.19, "angle": ANGLES * 0.29}  # std of the uniform start
    for task in ("direction", "speed", "rotation"):
        labels = s.labels[task]
        for c in np.unique(labels):
            pick = labels == c
            for name, values in start.items():
                tolerance = 5 * spread[name] / np.sqrt(pick.sum())
                assert abs(values[pick].mean() - centre[name]) < tolerance, (task, c, name)


def target_masks(g: SyntheticVideo, s: Scenes) -> np.ndarray:
    """bool [n, T, H, W]: pixels where the target is visible (the clip differs from the one without it)."""
    without = edit(s, present=at_target(s, s.present, False))
    return (g.render_scenes(s) != g.render_scenes(without)).any(axis=1)


def test_target_moves_in_its_labelled_direction_at_its_labelled_speed() -> None:
    g = gen(frames=8, resolution=64, objects=(1, 1), background="plain")
    s = g.draw(counter_rng(2), 400)
    clips_bounced = g.bounced(s)
    mask = target_masks(g, s)
    ys, xs = np.mgrid[:64, :64]
    area = mask.sum(axis=(2, 3))
    cy, cx = (mask * ys).sum(axis=(2, 3)) / area, (mask * xs).sum(axis=(2, 3)) / area  # [n, T]
    dx, dy = cx[:, -1] - cx[:, 0], -(cy[:, -1] - cy[:, 0])  # y up
    direction, speed = s.labels["direction"], s.labels["speed"]
    moving = (direction < 8) & ~clips_bounced
    assert moving.sum() > 100
    angle = np.degrees(np.arctan2(dy, dx))[moving]
    error = (angle - 45 * direction[moving] + 180) % 360 - 180
    assert np.abs(error).max() < 15
    travelled = np.hypot(dx, dy)[moving]
    expected = np.asarray(g.cfg.speeds)[speed[moving]] * 64
    assert np.abs(travelled - expected).max() < 2.5
    static = direction == 8
    assert static.sum() > 50 and np.hypot(dx, dy)[static].max() < 1.5  # turning only: the centroid stays


def test_static_scenes_have_identical_frames() -> None:
    g = gen(distractors_move=False)
    s = g.draw(counter_rng(4), 300)
    video = g.render_scenes(s)
    still = (s.labels["speed"] == 0) & (s.labels["rotation"] == 0)
    frozen = (video == video[:, :, :1]).all(axis=(1, 2, 3, 4))
    assert still.sum() > 10 and (~still).sum() > 10
    np.testing.assert_array_equal(frozen, still)


def test_rotation_sense_turns_the_marker() -> None:
    """cw turns the marker clockwise on screen, ccw counter-clockwise, by `spin` turns over the clip."""
    g = gen(frames=8, resolution=64, objects=(1, 1), background="plain", textures=("solid",), spin=0.5)
    s = g.draw(counter_rng(8), 120)
    n = len(s.target)
    s = edit(s, distance=np.zeros_like(s.distance), shape=np.zeros_like(s.shape))  # static discs
    video = g.render_scenes(s)
    marker = 255 - np.array([PALETTE[c] for c in g.cfg.colours])[s.colour[np.arange(n), s.target]]  # [n, 3]
    is_marker = (video == marker[:, :, None, None, None]).all(axis=1)  # [n, T, H, W]
    ys, xs = np.mgrid[:64, :64]
    count = is_marker.sum(axis=(2, 3))
    assert (count > 0).all()
    my, mx = (is_marker * ys).sum(axis=(2, 3)) / count, (is_marker * xs).sum(axis=(2, 3)) / count
    y0, x0 = s.y[np.arange(n), s.target][:, None] - 0.5, s.x[np.arange(n), s.target][:, None] - 0.5
    heading = np.unwrap(np.arctan2(-(my - y0), mx - x0), axis=1)  # [n, T], math convention
    turned = (heading[:, -1] - heading[:, 0]) / (2 * np.pi)
    expected = np.array([0.0, -0.5, 0.5])[s.labels["rotation"]]
    assert np.abs(turned - expected).max() < 0.08


# ---- appearance labels: in every frame --------------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["shape", "colour", "texture"])
def test_appearance_changes_the_pixels_of_frame_zero(attribute: str) -> None:
    g = gen()
    s = g.draw(counter_rng(9), 40)
    n = len(s.target)
    count = {"shape": len(g.cfg.shapes), "colour": len(g.cfg.colours), "texture": len(g.cfg.textures)}[
        attribute
    ]
    values = getattr(s, attribute)
    changed = edit(s, **{attribute: at_target(s, values, (values[np.arange(n), s.target] + 1) % count)})
    a, b = g.render_scenes(s), g.render_scenes(changed)
    assert (a[:, :, 0] != b[:, :, 0]).any(axis=(1, 2, 3)).mean() > 0.9


def test_colour_label_is_the_targets_colour() -> None:
    """Among the target's own pixels (found by removing it), the most frequent colour is its label's."""
    g = gen(resolution=64, objects=(3, 3), background="plain", textures=("solid",))
    s = g.draw(counter_rng(1), 40)
    video, mask = g.render_scenes(s), target_masks(g, s)
    for i in range(len(s.target)):
        pixels = video[i, :, 0][:, mask[i, 0]].T  # [visible target pixels, 3] of frame 0
        colours, counts = np.unique(pixels, axis=0, return_counts=True)
        expected = PALETTE[g.cfg.colours[s.labels["colour"][i]]]
        np.testing.assert_array_equal(colours[np.argmax(counts)], expected)


# ---- video files --------------------------------------------------------------------------------------------

FRAMES, HEIGHT, WIDTH = 40, 48, 64
SHORT = 10  # frames of short.mp4: a genuinely short video


def brightness(i: int) -> int:
    """Grey level of frame i of the ramp videos."""
    return 20 + 5 * i


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A directory with ramp, patterned and short videos, two truncated copies of the ramp (an mp4 whose header
    counts the frames, a Matroska file whose header gives a duration), a corrupt file, and manifests."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    root = tmp_path_factory.mktemp("videos")

    def encode(name: str, frames: np.ndarray, options: dict[str, str] | None = None) -> None:
        with av.open(str(root / name), "w", options=options or {}) as container:
            stream = container.add_stream(codec, rate=25)
            stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            stream.gop_size = 8  # key frames every 8 frames, so that seeking skips frames
            stream.options = {"crf": "12", "preset": "ultrafast"} if codec == "libx264" else {"qscale": "2"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    ramp = (
        np.zeros((FRAMES, HEIGHT, WIDTH, 3), np.uint8)
        + np.array([brightness(i) for i in range(FRAMES)], np.uint8)[:, None, None, None]
    )
    encode("ramp.mp4", ramp)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    pattern = np.stack([xx * 255 // WIDTH, yy * 255 // HEIGHT, np.zeros_like(xx)], -1).astype(np.uint8)
    moving = np.repeat(pattern[None], FRAMES, 0)
    for i in range(FRAMES):
        moving[i, 10:22, i : i + 12] = 255  # a white square moving right
    encode("moving.mp4", moving)
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (root / "sub").mkdir()
    encode("sub/ramp2.mp4", ramp)
    (root / "manifest.txt").write_text(
        f"ramp.mp4 0\n# a comment\n\nmoving.mp4 1\n{root / 'sub/ramp2.mp4'} 2\ncorrupt.mp4 3\nmissing.mp4 4\n"
    )
    (root / "bad_only.txt").write_text("corrupt.mp4 3\nmissing.mp4 4\n")

    def cut(name: str, keep: int) -> None:
        """Cut the file's bytes where the packet of frame `keep` starts: a download that stopped there."""
        with av.open(str(root / name)) as container:
            pos = [p.pos for p in container.demux(container.streams.video[0]) if p.size][keep]
        (root / f"cut_{name}").write_bytes((root / name).read_bytes()[:pos])

    encode("full.mp4", ramp, {"movflags": "faststart"})  # the index first, so that the cut file still opens
    cut("full.mp4", 4)
    encode("full.mkv", ramp)
    cut("full.mkv", 4)
    encode("short.mp4", ramp[:SHORT])
    (root / "truncated.txt").write_text(
        "ramp.mp4 0\ncut_full.mp4 1\ncut_full.mkv 2\nshort.mp4 3\ncorrupt.mp4 4\nmoving.mp4 1\nsub/ramp2.mp4 2\n"
    )
    return {"root": root, "codec": codec}


def files(videos: dict, manifest: str = "manifest.txt", **kw: object):
    """A VideoFiles loader over one of the fixture's manifests."""
    from engine.data.video_files import VideoFiles
    from schemas.data import VideoFiles as VideoFilesConfig

    fields = dict(frames=8, frame_step=4, resolution=32, classes=5, threads=2)
    url = manifest if "://" in manifest else str(videos["root"] / manifest)
    return VideoFiles(VideoFilesConfig(manifest=url, **{**fields, **kw}))


def test_files_shapes_labels_and_failures(videos: dict, caplog: pytest.LogCaptureFixture) -> None:
    loader = files(videos)
    assert [e.label for e in loader.entries["train"]] == [0, 1, 2, 3, 4]
    with caplog.at_level(logging.WARNING, logger="engine"):
        clips = loader.sample(counter_rng(0), 24)
    assert clips.video.shape == (24, 3, 8, 32, 32) and clips.video.dtype == np.uint8
    assert clips.labels.dtype == np.int64 and set(clips.labels.tolist()) <= {0, 1, 2}  # never 3 or 4
    bad = {3, 4}
    assert loader.failures > 0 and loader.failures == clips.meta["retries"].sum()
    logged = [r for r in caplog.records if r.name == "engine" and "cannot read" in r.getMessage()]
    assert len(logged) == len(loader.bad) == 2 < loader.failures  # once per file, not once per read
    assert sum(b.count for b in loader.bad.values()) == loader.failures
    assert {"corrupt.mp4" in r.getMessage() for r in logged} == {True, False}  # both kinds were hit
    assert all(loader.entries["train"][e].label not in bad for e in clips.meta["entry"])
    # the same rng gives the same clips, whatever the thread scheduling and the failures
    again = files(videos, threads=3).sample(counter_rng(0), 24)
    assert same(clips, again)
    assert "label=" in loader.render(clips, 0) and "crop" in loader.render(clips[0])


def test_files_too_many_failures_name_the_manifest(videos: dict) -> None:
    loader = files(videos, "bad_only.txt", max_retries=3, threads=1)
    with pytest.raises(RuntimeError, match="bad_only.txt"):
        loader.sample(counter_rng(0), 2)
    assert loader.failures == 4


def test_truncated_files_are_bad_even_where_the_clip_decodes(videos: dict) -> None:
    """A file cut after 4 of its 40 frames is refused whether the clip runs past the cut (decoding runs out)
    or lies before it (the stream's end is read); the uncut files read as before, padded past their end."""
    from engine.data.video_files import DecodeError, read_clips

    root = videos["root"]
    for name in ("full.mp4", "full.mkv"):
        for frames, step in ((8, 4), (2, 1)):
            with pytest.raises(DecodeError, match=f"truncated: its header says {FRAMES} frames but only 4 "):
                read_clips(str(root / f"cut_{name}"), frames, step, lambda total: [0])
        for frames, step, start in ((2, 1, 0), (16, 4, 0), (4, 3, 27)):
            (clip,), _ = read_clips(str(root / name), frames, step, lambda total, s=start: [s])
            levels = clip.astype(float).mean(axis=(1, 2, 3))
            expected = brightness(np.minimum(start + step * np.arange(frames), FRAMES - 1))
            assert np.abs(levels - expected).max() < 6


def test_truncated_files_never_make_clips_and_warn_once(
    videos: dict, caplog: pytest.LogCaptureFixture
) -> None:
    loader = files(videos, "truncated.txt")
    with caplog.at_level(logging.WARNING, logger="engine"):
        batches = [loader.sample(counter_rng(seed), 16) for seed in range(3)]
    used = np.concatenate([b.meta["entry"] for b in batches])
    assert set(used.tolist()) == {0, 3, 5, 6}  # never a cut or a corrupt file
    names = {url.rsplit("/", 1)[1]: bad for url, bad in loader.bad.items()}
    assert set(names) == {"cut_full.mp4", "cut_full.mkv", "corrupt.mp4"}
    assert all("truncated" in names[n].reason for n in ("cut_full.mp4", "cut_full.mkv"))
    logged = [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()]
    assert len(logged) == 3 < loader.failures == sum(b.count for b in loader.bad.values())
    for url, bad in loader.bad.items():  # one warning per file, with its path and the reason
        assert sum(url in m and bad.reason in m for m in logged) == 1
    # a batch is a pure function of its rng and the files, whatever the threads and the failures before it
    assert same(files(videos, "truncated.txt", threads=1).sample(counter_rng(2), 16), batches[2])


def test_genuinely_short_video_is_padded_not_bad(videos: dict) -> None:
    """short.mp4 has 10 frames and says so: a clip spanning 29 frames repeats its last frame."""
    loader = files(videos, "truncated.txt", flip=False)
    clips = loader.load(np.full(4, 3), np.arange(4), "train")
    assert (clips.meta["start"] == 0).all() and (clips.meta["retries"] == 0).all()
    assert not loader.bad and loader.failures == 0
    levels = clips.video.astype(float).mean(axis=(1, 3, 4))  # [n, T]
    expected = brightness(np.minimum(4 * np.arange(8), SHORT - 1))
    assert np.abs(levels - expected).max() < 6 and (levels[:, 3:] == levels[:, 3:4]).all()


def test_bad_files_are_listed_in_the_stage_directory(videos: dict, tmp_path) -> None:
    from engine.data.video_files import read_bad_clips

    def listed(name: str) -> dict[str, dict]:
        lines = (tmp_path / name).read_text().splitlines()
        return {row["path"]: row for row in map(json.loads, lines)}

    rank0 = files(videos, "truncated.txt")
    rank0.report_to(str(tmp_path), 0)
    rank0.load(np.zeros(2, int), np.arange(2), "train")
    assert not list(tmp_path.iterdir()), "nothing is written while no file is bad"
    rank0.sample(counter_rng(0), 16)
    rows = listed("bad_clips.jsonl")
    assert list(rows) == sorted(rank0.bad) and len(rows) == 3
    assert {p: r["count"] for p, r in rows.items()} == {p: b.count for p, b in rank0.bad.items()}
    assert all(r["reason"] == rank0.bad[p].reason for p, r in rows.items())
    rank1 = files(videos, "truncated.txt")
    rank1.report_to(str(tmp_path), 1)
    rank1.sample(counter_rng(1), 16)
    assert set(listed("bad_clips.rank1.jsonl")) == set(rank1.bad)
    merged = {r["path"]: r["count"] for r in read_bad_clips(str(tmp_path))}
    assert merged == {p: rank0.bad[p].count + rank1.bad[p].count for p in rank0.bad}
    # a resumed attempt keeps the list the earlier one left and adds its own reads to the counts
    resumed = files(videos, "truncated.txt")
    resumed.report_to(str(tmp_path), 0)
    resumed.sample(counter_rng(2), 16)
    counts = {p: r["count"] for p, r in listed("bad_clips.jsonl").items()}
    assert counts == {p: rank0.bad[p].count + resumed.bad[p].count for p in rank0.bad}


TINY_VIT = {"dim": 32, "depth": 1, "heads": 2, "mlp": 64}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_training_stage_lists_bad_clips(videos: dict, tmp_path, workers: int) -> None:
    """The trainer hands the generator its stage directory: a stage over a manifest with bad files lists them,
    each data worker in its own file."""
    from engine.data.video_files import read_bad_clips
    from engine.runtime.distributed import Dist
    from engine.runtime.trainer import run_spec
    from schemas import load_spec

    manifest = videos["root"] / "truncated.txt"
    data = f"{{kind: video_files, manifest: {manifest}, classes: 5, frames: 8, resolution: 32, workers: {workers}}}"
    spec = load_spec(
        str(Path(__file__).parent.parent / "specs" / "salt_tiny.yaml"),
        [
            f"run.output={tmp_path}",
            f"stages.teacher.data={data}",
            "stages.teacher.schedule.steps=2",
            "stages.teacher.schedule.warmup=1",
            "stages.teacher.batch.global=8",
            *(f"stages.teacher.{m}.{k}={v}" for m in ("model", "predictor") for k, v in TINY_VIT.items()),
            "stages.teacher.logging.every=1",
        ],
    )
    run_spec(spec, Dist(), only="teacher")
    names = sorted(p.name for p in (tmp_path / "teacher").glob("bad_clips*.jsonl"))
    # the training process draws step 0 for the example text, each worker its own steps
    assert names == ["bad_clips.jsonl"] + [f"bad_clips.worker{w}.jsonl" for w in range(workers)]
    rows = read_bad_clips(str(tmp_path / "teacher"))
    assert {r["path"].rsplit("/", 1)[1] for r in rows} <= {"cut_full.mp4", "cut_full.mkv", "corrupt.mp4"}
    assert rows and all(r["count"] >= 1 and r["reason"] for r in rows)


def test_files_frame_step_start_and_padding(videos: dict) -> None:
    for step in (4, 2):
        loader = files(videos, frame_step=step, flip=False)
        clips = loader.load(np.zeros(6, int), np.arange(6), "train")  # entry 0: the ramp, random starts
        levels = clips.video.astype(float).mean(axis=(1, 3, 4))  # [n, T]
        starts = clips.meta["start"]
        assert len(set(starts.tolist())) > 1 and (starts <= FRAMES - 7 * step - 1).all()
        expected = brightness(starts[:, None] + step * np.arange(8))
        assert np.abs(levels - expected).max() < 6
    ev = files(videos).load(np.zeros(3, int), np.arange(3), "eval")
    assert (ev.meta["start"] == (FRAMES - 29) // 2).all()  # centred
    # 16 frames every 4 need 61 frames: the clip runs to the last frame and repeats it
    long = files(videos, frames=16).load(np.zeros(1, int), np.arange(1), "eval")
    levels = long.video.astype(float).mean(axis=(1, 3, 4))[0]
    assert np.abs(levels[:10] - brightness(4 * np.arange(10))).max() < 6
    assert np.abs(levels[10:] - brightness(FRAMES - 1)).max() < 6 and (levels[10:] == levels[10]).all()


def test_files_seek_matches_decoding_from_the_start(videos: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.data.video_files as vf

    url = str(videos["root"] / "moving.mp4")
    for start in (9, 17, 20):
        plain, _ = vf.read_clips(url, 4, 3, lambda total, s=start: [s])
        monkeypatch.setattr(vf, "SEEK_MIN_FRAMES", 0)
        seek, _ = vf.read_clips(url, 4, 3, lambda total, s=start: [s])
        monkeypatch.setattr(vf, "SEEK_MIN_FRAMES", 10**9)
        np.testing.assert_array_equal(plain, seek)


def test_random_resized_crop_box_stays_in_range() -> None:
    from engine.data.video_files import random_resized_crop_box

    rng = np.random.default_rng(0)
    for height, width, scale, aspect in [
        (48, 64, (0.3, 1.0), (0.75, 1.35)),
        (240, 320, (0.1, 0.5), (0.5, 2.0)),
    ]:
        boxes = np.array([random_resized_crop_box(rng, height, width, scale, aspect) for _ in range(2000)])
        top, left, h, w = boxes.T
        assert (
            (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
        )
        area, ratio = h * w / (height * width), w / h
        slack = 3 / min(h.min(), w.min())  # rounding of h and w to whole pixels
        assert area.min() > scale[0] * (1 - 2 * slack) and area.max() < scale[1] * (1 + 2 * slack)
        assert ratio.min() > aspect[0] * (1 - 2 * slack) and ratio.max() < aspect[1] * (1 + 2 * slack)
        assert area.min() < scale[0] + 0.05 and area.max() > scale[1] - 0.15  # the whole range is used
        assert ratio.min() < aspect[0] + 0.1 and ratio.max() > aspect[1] - 0.15
        assert len(set(zip(top.tolist(), left.tolist(), strict=True))) > 100  # positions vary
    first = [
        random_resized_crop_box(np.random.default_rng(1), 48, 64, (0.3, 1), (0.75, 1.35)) for _ in range(2)
    ]
    assert first[0] == first[1]


def test_resize_box() -> None:
    from engine.data.video_files import resize_box

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    identity = frames[:, 5:35, 7:37].transpose(3, 0, 1, 2)  # no scaling; channels first
    np.testing.assert_array_equal(resize_box(frames, (5, 7, 30, 30), 30), identity)
    ramp = np.broadcast_to(np.arange(200, dtype=np.uint8)[None, None, :, None], (1, 120, 200, 3))
    out = resize_box(ramp, (10, 0, 100, 200), 50)  # 4x down: box filter, then bilinear
    assert out.shape == (3, 1, 50, 50)
    np.testing.assert_allclose(out[1, 0, 7], 4 * np.arange(50) + 1.5, atol=1)
    assert (resize_box(np.full((1, 9, 9, 3), 77, np.uint8), (0, 0, 9, 9), 32) == 77).all()  # upscaling
    noise = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)  # 4x down exactly: the 4 x 4 block means
    blocks = noise.reshape(1, 16, 4, 16, 4, 3).astype(np.float32).mean(axis=(2, 4))
    expected = np.floor(blocks + 0.5).astype(np.uint8).transpose(3, 0, 1, 2)  # halves round up
    np.testing.assert_array_equal(resize_box(noise, (0, 0, 64, 64), 16), expected)


def test_files_eval_centre_crop_and_train_crop_flip(videos: dict) -> None:
    from engine.data.video_files import centre_box, read_clips, resize_box

    loader = files(videos, resolution=24)
    url = loader.entries["train"][1].url  # the patterned video
    ev = loader.load(np.ones(4, int), np.arange(4), "eval")
    assert (ev.video == ev.video[:1]).all()  # deterministic: the key does not matter
    box = centre_box(HEIGHT, WIDTH, 0.875)
    assert tuple(ev.meta["crop"][0]) == box == (3, 11, 42, 42)
    (frames,), _ = read_clips(url, 8, 4, lambda total: [int(ev.meta["start"][0])])
    np.testing.assert_array_equal(ev.video[0], resize_box(frames, box, 24))
    tr = loader.load(np.ones(16, int), np.arange(16), "train")
    assert tr.meta["flip"].any() and not tr.meta["flip"].all()
    assert len({tuple(c) for c in tr.meta["crop"]}) == 16
    for i in range(16):
        (frames,), _ = read_clips(url, 8, 4, lambda total, i=i: [int(tr.meta["start"][i])])
        expected = resize_box(frames, tuple(tr.meta["crop"][i]), 24)
        if tr.meta["flip"][i]:
            expected = expected[..., ::-1]
        np.testing.assert_array_equal(tr.video[i], expected)


def test_files_from_a_memory_filesystem(videos: dict) -> None:
    import fsspec

    memory = fsspec.filesystem("memory")
    root = videos["root"]
    for name in ("ramp.mp4", "moving.mp4", "corrupt.mp4", "sub/ramp2.mp4"):
        memory.pipe(f"/videos/{name}", (root / name).read_bytes())
    memory.pipe(
        "/videos/manifest.txt",
        b"ramp.mp4 0\nmoving.mp4 1\n/videos/sub/ramp2.mp4 2\ncorrupt.mp4 3\nmissing.mp4 4\n",
    )
    remote = files(videos, "memory://videos/manifest.txt")
    assert remote.entries["train"][2].url == "memory:///videos/sub/ramp2.mp4"
    local = files(videos)
    a, b = remote.sample(counter_rng(5), 10), local.sample(counter_rng(5), 10)
    assert same(a, b) and remote.failures == local.failures > 0
