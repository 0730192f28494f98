"""Benchmark: clips per second of the video data on one core, side by side with a straightforward renderer.

Synthetic clips (engine/data/video.py) are timed against a per-clip, per-frame, per-object renderer of the
same scenes (full-frame masks, the way such a generator is usually first written); the ratio is what the
vectorised sprite renderer buys. With --files, PyAV decoding of encoded clips (engine/data/video_files.py) is
timed too, with 1 and 2 decoding threads. The machine is shared and noisy: compare the columns of one run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: no BLAS threads in the background matmuls
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from engine.data.stream import counter_rng  # noqa: E402
from engine.data.video import ANGLES, PALETTE, SHADE, Scenes, SyntheticVideo, _inside  # noqa: E402
from schemas.data import SyntheticVideo as SyntheticVideoConfig  # noqa: E402


def naive_render(g: SyntheticVideo, s: Scenes) -> np.ndarray:
    """uint8 [n, 3, T, H, W]: the same scenes drawn clip by clip, frame by frame, object by object."""
    cfg, res, T = g.cfg, g.cfg.resolution, g.cfg.frames
    n, K = s.present.shape
    out = np.empty((n, 3, T, res, res), np.uint8)
    X, Y = np.meshgrid(np.arange(res) + 0.5, -(np.arange(res) + 0.5))
    for i in range(n):
        rows = slice(i, i + 1)
        background = g.background(s, rows)[0]
        for t in range(T):
            frame = background.copy()
            for k in range(K):
                if not s.present[i, k]:
                    continue
                bank = g.banks[int(s.target[i] == k)]
                radius = bank.diameters[s.size[i, k]] / 2
                cy, cx = (c[0, t] for c in g.trajectory(s, np.array([i]), k))
                turn = (0.0, -1.0, 1.0)[s.rotation[i, k]] * cfg.spin * ANGLES / (T - 1) * t
                phi = 2 * np.pi * np.rint(s.angle[i, k] + turn) / ANGLES
                dx, dy = X - cx, Y + cy
                u = (dx * np.cos(phi) + dy * np.sin(phi)) / radius
                v = (-dx * np.sin(phi) + dy * np.cos(phi)) / radius
                inside = _inside(cfg.shapes[s.shape[i, k]], u, v)
                colour = np.array(PALETTE[cfg.colours[s.colour[i, k]]])
                texture = cfg.textures[s.texture[i, k]]
                if texture == "stripes":
                    shade = np.floor(u / 0.35) % 2 == 1
                elif texture == "checker":
                    shade = (np.floor(u / 0.5) + np.floor(v / 0.5)) % 2 == 1
                else:
                    shade = np.zeros_like(inside)
                frame[inside] = colour
                frame[inside & shade] = np.round(colour * SHADE)
                frame[inside & ((u - 0.55) ** 2 + v * v <= 0.17**2)] = 255 - colour
            out[i, :, t] = frame.transpose(2, 0, 1)
    return out


def best_rate(fn: Callable[[], object], n: int, repeats: int) -> float:
    """Clips per second of the fastest of `repeats` calls producing n clips."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def bench_synthetic(repeats: int) -> None:
    """Table: synthetic clips/s and MB/s at three clip shapes, and the ratio to the naive renderer."""
    print(f"{'clip (T x H x W)':>18} {'clips/s':>10} {'MB/s':>8} {'naive clips/s':>14} {'ratio':>7}")
    for frames, res, n, n_naive in ((16, 64, 512, 16), (8, 32, 2048, 64), (16, 224, 48, 2)):
        g = SyntheticVideo(SyntheticVideoConfig(frames=frames, resolution=res))
        g.sample(counter_rng(0), 4)  # sprite banks built outside the timing
        ours = best_rate(lambda g=g, n=n: g.sample(counter_rng(1), n), n, repeats)
        scenes = g.draw(counter_rng(1), n_naive)
        naive = best_rate(lambda g=g, s=scenes: naive_render(g, s), n_naive, max(1, repeats // 2))
        mb = ours * 3 * frames * res * res / 1e6
        print(
            f"{f'{frames} x {res} x {res}':>18} {ours:>10.0f} {mb:>8.0f} {naive:>14.1f} {ours / naive:>6.0f}x"
        )


def bench_files(repeats: int) -> None:
    """Table: clips/s decoding 16 frames every 4 from 64-frame 256x340 H.264 files, cropped to 224 px."""
    import av

    from engine.data.video_files import VideoFiles
    from schemas.data import VideoFiles as VideoFilesConfig

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with tempfile.TemporaryDirectory() as root:
        rng = np.random.default_rng(0)
        lines = []
        for v in range(4):
            with av.open(f"{root}/{v}.mp4", "w") as container:
                stream = container.add_stream(codec, rate=25)
                stream.width, stream.height, stream.pix_fmt = 340, 256, "yuv420p"
                base = rng.integers(0, 256, (256, 340, 3), dtype=np.uint8)
                for i in range(64):
                    frame = av.VideoFrame.from_ndarray(np.roll(base, 3 * i, axis=1), format="rgb24")
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            lines.append(f"{v}.mp4 {v}")
        Path(root, "manifest.txt").write_text("\n".join(lines) + "\n")
        print(f"\n{codec} 256x340, 64 frames -> 16 x 224 x 224 (step 4)")
        print(f"{'split':>6} {'threads':>8} {'clips/s':>9}")
        for split in ("train", "eval"):
            for workers in (1, 2):
                cfg = VideoFilesConfig(manifest=f"{root}/manifest.txt", classes=4, workers=workers)
                loader = VideoFiles(cfg)
                rate = best_rate(
                    lambda loader=loader, s=split: loader.sample(counter_rng(2), 16, s), 16, repeats
                )
                loader.close()
                print(f"{split:>6} {workers:>8} {rate:>9.1f}")


def main() -> None:
    """Print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timed calls per row (the fastest counts)")
    p.add_argument("--files", action="store_true", help="also time PyAV decoding (needs the `video` extra)")
    a = p.parse_args()
    bench_synthetic(a.repeats)
    if a.files:
        bench_files(a.repeats)


if __name__ == "__main__":
    main()
