"""The multi-segment, multi-view probe evaluation of video files (top1's `segments`, `views`, `examples: null`):
where the windows and crops lie, how the probe reads them, how views are averaged, and its spec rules."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_probe_protocol import problems
from test_video_data import FRAMES, HEIGHT, WIDTH, brightness, files, videos  # noqa: F401 (a fixture)

from engine.data.video import Clips
from engine.evals.sets import rank_share
from engine.evals.top1 import Top1, eval_clips, eval_videos
from engine.objectives.probe import ProbeObjective
from engine.runtime.context import BuildContext
from engine.runtime.distributed import Dist
from schemas import load_spec
from schemas.evals import Top1 as Top1Config

# ----------------------------------------------------------------------------- windows and crops


def test_segment_starts_spread_from_the_first_frame_to_the_last() -> None:
    from engine.data.video_files import segment_starts

    span = (8 - 1) * 4 + 1  # 29 frames: 8 frames every 4th
    assert segment_starts(40, span, 1) == [5]  # one window: centred, as the single eval clip
    assert segment_starts(40, span, 2) == [0, 11]  # the last window ends at frame 39
    assert segment_starts(40, span, 3) == [0, 5, 11]
    assert segment_starts(40, span, 8) == [0, 1, 3, 4, 6, 7, 9, 11]
    assert segment_starts(29, span, 3) == [0, 0, 0]  # exactly one span long
    assert segment_starts(10, span, 3) == [0, 0, 0]  # shorter: all at 0, padded by its last frame


def test_view_boxes_spread_along_the_long_side() -> None:
    from engine.data.video_files import centre_box, view_boxes

    side = 42  # 0.875 of 48
    assert view_boxes(48, 64, 0.875, 3) == [(3, 0, side, side), (3, 11, side, side), (3, 22, side, side)]
    assert view_boxes(64, 48, 0.875, 3) == [(0, 3, side, side), (11, 3, side, side), (22, 3, side, side)]
    assert view_boxes(48, 64, 0.875, 1) == [centre_box(48, 64, 0.875)]
    assert view_boxes(48, 64, 1.0, 2) == [(0, 0, 48, 48), (0, 16, 48, 48)]
    assert view_boxes(32, 32, 1.0, 3) == [(0, 0, 32, 32)] * 3  # a square frame has one full crop


def test_files_load_every_view_of_every_segment_from_one_decode(videos: dict) -> None:  # noqa: F811
    """Clip (v * segments + s) of a video is view v of window s: its start frames and crop box as computed,
    and its pixels those of the window's frames in that box."""
    from engine.data.video_files import read_clips, resize_box, view_boxes

    loader = files(videos, resolution=24)
    ramp, moving = (loader.entries["eval"][i].url for i in (0, 1))
    clips = loader.load(np.array([0, 1]), np.array([0, 1]), "eval", segments=3, views=3)
    assert len(clips) == 18 and clips.labels.tolist() == [0] * 9 + [1] * 9
    starts, boxes = [0, 5, 11], view_boxes(HEIGHT, WIDTH, 0.875, 3)
    assert clips.meta["start"].tolist() == starts * 6
    assert [tuple(c) for c in clips.meta["crop"][:9]] == [b for b in boxes for _ in starts]
    levels = clips.video[:3].astype(float).mean(axis=(1, 3, 4))  # [segment, frame] of the ramp's first view
    expected = brightness(np.minimum(np.array(starts)[:, None] + 4 * np.arange(8), FRAMES - 1))
    assert np.abs(levels - expected).max() < 6
    windows, _ = read_clips(moving, 8, 4, lambda total: starts)
    for v, box in enumerate(boxes):
        for s in range(3):
            np.testing.assert_array_equal(clips.video[9 + v * 3 + s], resize_box(windows[s], box, 24))
    assert not np.array_equal(clips.video[9], clips.video[12]), "the views are different crops"
    with pytest.raises(ValueError, match="segments=2 and views=1 are eval clips; train clips are one each"):
        loader.load(np.array([0]), np.array([0]), "train", segments=2)


def test_one_segment_one_view_is_the_current_eval_set(videos: dict) -> None:  # noqa: F811
    """The manifest entries of the stage's eval set, loaded as one segment of one view each, are the clips
    top1 has always evaluated, pixel for pixel; and so score the same."""
    loader = files(videos, "truncated.txt", resolution=24)  # with bad files: retries must agree too
    kept = eval_clips(loader, 0, "probe", 70)
    decoded = loader.load(*vars(eval_videos(loader, 0, "probe", 70, 70)).values(), "eval", 1, 1)
    np.testing.assert_array_equal(decoded.video, kept.video)
    assert decoded.labels.tolist() == kept.labels.tolist()
    assert decoded.meta["entry"].tolist() == kept.meta["entry"].tolist()

    cfg, data = Top1Config(examples=70, batch=16), SimpleNamespace(num_classes=5)
    current = Top1(cfg, loader, data, 0, "probe", Dist())
    assert isinstance(current.set, Clips)
    lazy = Top1(cfg, loader, data, 0, "probe", Dist())
    lazy.set, lazy.members = rank_share(partial(eval_videos, loader, 0, "probe", 70), 70, Dist())
    assert lazy(Brightest(), 0) == current(Brightest(), 0)


class Brightest:
    """A classifier that reads its clips: class = the clip's mean level // 60 (segments: their mean)."""

    def classifier_report(self) -> dict[str, float]:
        return {}

    def collate(self, clips: Clips, device: torch.device) -> dict[str, torch.Tensor]:
        return {"video": torch.from_numpy(clips.video).float(), "labels": torch.from_numpy(clips.labels)}

    def logits(self, batch: dict[str, torch.Tensor], segments: int = 1) -> torch.Tensor:
        level = batch["video"].flatten(1).mean(1).unflatten(0, (-1, segments)).mean(1)
        return torch.nn.functional.one_hot((level // 60).long().clamp(max=4), 5).float()


# ----------------------------------------------------------------------------- averaging over views

VIEW_LOGITS = {  # per video: the logits of its 3 views; the labels are 1, 0, 1
    0: [[3.0, 0.0], [0.0, 1.0], [0.0, 1.0]],  # mean softmax -> 1 (hit); mean logits -> 0; first view -> 0
    1: [[0.0, 3.0], [1.0, 0.0], [1.0, 0.0]],  # mean softmax -> 0 (hit); mean logits -> 1; first view -> 1
    2: [[0.0, 1.0], [0.0, 1.0], [5.0, 0.0]],  # mean softmax -> 0 (miss); mean logits -> 0; first view -> 1
}
LABELS = [1, 0, 1]


class ThreeVideos:
    """Video files' eval interface over three videos whose clips carry (entry, view, segment) in their meta."""

    def videos(self, split: str) -> int:
        return 3

    def load(self, entries: np.ndarray, keys: np.ndarray, split: str, segments: int, views: int) -> Clips:
        grid = [(e, v, s) for e in entries.tolist() for v in range(views) for s in range(segments)]
        entry, view, segment = (np.array(c) for c in zip(*grid, strict=True))
        meta = {"entry": entry, "view": view, "segment": segment}
        return Clips(np.zeros((len(grid), 1, 1, 1, 1), np.uint8), np.array(LABELS)[entry], meta)


class KnownViews:
    """Per-view logits from VIEW_LOGITS, after checking that each example is one view's segments in order."""

    def classifier_report(self) -> dict[str, float]:
        return {"labelled": 6.0}

    def collate(self, clips: Clips, device: torch.device) -> dict[str, torch.Tensor]:
        return {
            "labels": torch.from_numpy(clips.labels),
            **{k: torch.from_numpy(v) for k, v in clips.meta.items()},
        }

    def logits(self, batch: dict[str, torch.Tensor], segments: int = 1) -> torch.Tensor:
        groups = {k: batch[k].unflatten(0, (-1, segments)) for k in ("entry", "view", "segment")}
        assert (groups["entry"] == groups["entry"][:, :1]).all() and (
            groups["view"] == groups["view"][:, :1]
        ).all()
        assert (groups["segment"] == torch.arange(segments)).all()
        return torch.tensor(
            [
                VIEW_LOGITS[e][v]
                for e, v in zip(groups["entry"][:, 0].tolist(), groups["view"][:, 0].tolist(), strict=True)
            ]
        )


@pytest.mark.parametrize("batch", [6, 12, 100])
def test_the_softmax_is_averaged_over_views(batch: int) -> None:
    """Two of three videos are right by the mean softmax of their views (none by the mean logits, one by the
    first view); on two simulated ranks (a padded share, no process group) the hits add up to the same."""
    cfg = Top1Config(examples=None, segments=2, views=3, batch=batch)
    data = SimpleNamespace(num_classes=2)
    alone = Top1(cfg, ThreeVideos(), data, 0, "probe", Dist())(KnownViews(), 0)
    assert alone == pytest.approx(
        {"top1": 2 / 3, "majority": 2 / 3, "chance": 0.5, "examples": 3.0, "labelled": 6.0}, abs=1e-12
    )
    ranks = [Top1(cfg, ThreeVideos(), data, 0, "probe", Dist(rank=r, world=2)) for r in range(2)]
    assert [(len(r.set), r.members) for r in ranks] == [(2, 2), (2, 1)]
    assert sum(r(KnownViews(), 0)["top1"] for r in ranks) == pytest.approx(2 / 3, abs=1e-12)


# ----------------------------------------------------------------------------- the probe objective

FILE_SPEC = """
run: {{name: views, output: {out}, seed: 3}}
stages:
  base:
    model: {{kind: vit, dim: 32, depth: 1, heads: 2, mlp: 64, frames: 4, resolution: 32, patch: 16, tubelet: 2}}
    predictor: {{kind: predictor, dim: 32, depth: 1, heads: 2, mlp: 64}}
    data: {data}
    objective: {{kind: pixel_reconstruction}}
    schedule: {{steps: 1}}
    batch: {{global: 4}}
  probe:
    kind: probe
    encoder: {{random: base}}
    probe: {probe}
    labelled: 8
    data: {data}
{schedule}    batch: {{global: 4}}
    evals: [{{kind: top1, examples: null, segments: 2, views: 3, batch: 12}}]
"""


def probe_objective(tmp_path: Path, manifest: Path, probe: str) -> ProbeObjective:
    """A probe on a random encoder of 4-frame 32-pixel clips of the manifest's videos (3 classes)."""
    data = f"{{kind: video_files, manifest: {manifest}, classes: 3, frames: 4, resolution: 32, threads: 1}}"
    path = tmp_path / "views.yaml"
    schedule = "    schedule: {steps: 1}\n"
    path.write_text(FILE_SPEC.format(out=tmp_path / "run", data=data, probe=probe, schedule=schedule))
    spec = load_spec(str(path))
    torch.manual_seed(0)
    return ProbeObjective(spec.stages["probe"], BuildContext(spec, "probe", spec.stages["probe"], Dist()))


VAL = [("ramp.mp4", 0), ("moving.mp4", 1), ("short.mp4", 1), ("sub/ramp2.mp4", 2)]  # one shorter than a span


def manifest_of(videos: dict, tmp_path: Path, lines: list[tuple[str, int]] = VAL) -> Path:  # noqa: F811
    """A manifest of the fixture's readable videos (default: four, labels 0, 1, 1, 2)."""
    path = tmp_path / "val.txt"
    path.write_text("".join(f"{videos['root'] / name} {label}\n" for name, label in lines))
    return path


@pytest.mark.parametrize("probe", ["{kind: attentive_probe, depth: 1, heads: 2}", "{kind: linear_probe}"])
def test_the_probe_reads_the_segments_tokens_concatenated(tmp_path: Path, videos: dict, probe: str) -> None:  # noqa: F811
    o = probe_objective(tmp_path, manifest_of(videos, tmp_path), probe)
    video = torch.randn(6, 3, 4, 32, 32)
    tokens = o.encoder(video)  # [6, N, D]
    joined = torch.cat(
        [tokens[0::3], tokens[1::3], tokens[2::3]], dim=1
    )  # [2, 3N, D]: each example's 3 clips
    features = joined.mean(1) if o.probe_cfg.pooled else joined
    want = o.probe.logits(o.probe(features))
    torch.testing.assert_close(o.logits({"video": video}, segments=3), want)


def test_the_whole_eval_manifest_is_scored_once(tmp_path: Path, videos: dict) -> None:  # noqa: F811
    """examples: null scores each manifest line once (count = lines), by the mean softmax over its views of
    the probe on its segments; two simulated ranks (one padded) add up to one process."""
    manifest = manifest_of(videos, tmp_path)
    o = probe_objective(tmp_path, manifest, "{kind: attentive_probe, depth: 1, heads: 2}")
    stage = o.stage
    gen = files(videos, str(manifest), frames=4, resolution=32, classes=3, threads=1)
    cfg = stage.evals[0]
    result = Top1(cfg, gen, stage.data, 3, "probe", Dist())(o, 0)
    hits = 0
    for entry, label in enumerate([0, 1, 1, 2]):
        clips = gen.load(np.array([entry]), np.array([0]), "eval", segments=2, views=3)
        assert clips.meta["entry"].tolist() == [entry] * 6
        batch = o.collate(clips, torch.device("cpu"))
        probs = [
            o.logits(o.collate(clips.slice(2 * v, 2 * v + 2), torch.device("cpu")), 2).softmax(-1)
            for v in range(3)
        ]
        hits += int(torch.stack(probs).mean(0).argmax(-1).item() == label)
        assert batch["labels"].tolist() == [label] * 6
    assert result == {"top1": hits / 4, "majority": 0.5, "chance": 1 / 3, "examples": 4.0, "labelled": 8.0}
    ranks = [Top1(cfg, gen, stage.data, 3, "probe", Dist(rank=r, world=3)) for r in range(3)]
    assert [r.members for r in ranks] == [2, 2, 0]
    assert sum(r(o, 0)["top1"] for r in ranks) == pytest.approx(result["top1"], abs=1e-12)


# ----------------------------------------------------------------------------- spec rules


def test_segments_views_and_the_whole_manifest_need_video_files(tmp_path: Path) -> None:
    at = "stages.linear.evals.0"
    evals = "stages.linear.evals=[{kind: top1, examples: null, segments: 2, views: 3}]"
    assert problems(tmp_path, evals) == [
        (
            f"{at}.segments",
            "segments: 2 applies to video_files (windows and crops of a held-out video); synthetic_video clips "
            "are one window of one view: remove segments or set it to 1",
        ),
        (
            f"{at}.views",
            "views: 3 applies to video_files (windows and crops of a held-out video); synthetic_video clips are "
            "one window of one view: remove views or set it to 1",
        ),
        (
            f"{at}.examples",
            "examples: null means every video of the eval manifest, which synthetic_video does not have; give a "
            "number of clips, at least 1024 (the default is 2048)",
        ),
    ]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_sharded_ranks_score_the_whole_manifest_as_one_process(tmp_path: Path, videos: dict) -> None:  # noqa: F811
    """A kNN probe on a random FSDP-sharded encoder, top1 over 5 videos x 2 segments x 3 views: 2 ranks (one
    share padded, every rank as many encoder forwards) score what one process scores."""
    from helpers import torchrun

    from engine.runtime.trainer import run_spec

    manifest = manifest_of(videos, tmp_path, [*VAL, ("ramp.mp4", 0)])
    data = f"{{kind: video_files, manifest: {manifest}, classes: 3, frames: 4, resolution: 32, threads: 1}}"
    path = tmp_path / "views.yaml"
    knn = "{kind: knn_probe, k: 3}"  # trains nothing: no schedule
    path.write_text(FILE_SPEC.format(out=tmp_path / "one", data=data, probe=knn, schedule=""))
    r = torchrun(
        "-m",
        "engine",
        str(path),
        f"run.output={tmp_path / 'two'}",
        "resources.procs_per_node=2",
        "--stage",
        "probe",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    run_spec(load_spec(str(path)), Dist(), only="probe")
    one, two = (json.loads((tmp_path / out / "probe" / "results.json").read_text()) for out in ("one", "two"))
    assert (one["examples"], one["top1"]) == (two["examples"], two["top1"]) and one["examples"] == 5
