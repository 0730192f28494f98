"""Video batches (`Clips`) and the synthetic moving-shapes generator (docs/papers/salt.md), numpy only.

A clip shows 1..k textured shapes over a static noisy background. The largest object is the *target*; the
labels describe it. Motion labels (direction, speed, rotation sense) are invisible in any single frame: the
target's position and orientation at frame 0 are uniform and drawn independently of its motion, so only the
change between frames tells them. Appearance labels (shape, colour, texture) are visible in every frame.

Objects bounce off the walls (the direction label is the direction at frame 0), turn cw or ccw by `spin` turns
over the clip (or not at all), and occlude each other in a random drawing order. Every object carries a small
marker in the complementary colour near its rim, so that turning is visible for discs and rings too.

Rendering is vectorised over the batch: sprites (shape x texture x size x angle) are pre-rendered once per
geometry, and each object of each frame is pasted into a packed-RGB canvas with one scatter per object slot.
The scene parameters of clip i are drawn from row i of one array of uniforms (and the background grain from
row i of another), so the first m clips of `sample(rng, n)` are `sample(rng, m)` for any n >= m.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.data import SyntheticVideo as SyntheticVideoConfig

from .base import UnknownSplit, cat_meta
from .stream import counter_rng

ANGLES = 48  # sprite orientations per turn (7.5 degrees apart)
SIZE_LEVELS = 4  # sprite diameters per object class, evenly spaced over the configured size range
BLOTCHES = 4  # background blotch grid (BLOTCHES x BLOTCHES, bilinearly upsampled)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 210, 215),
    "white": (240, 240, 240),
    "orange": (245, 140, 30),
}
CANVAS_BYTES = 4 << 20  # clips are rendered in chunks whose canvas fits in about this many bytes
SHADE = 0.55  # texture pattern: the object's colour darkened by this factor
BYTE_SHIFT = (0, 8, 16) if sys.byteorder == "little" else (24, 16, 8)  # RGB bytes of a packed RGBA uint32


@dataclass
class Clip:
    """One clip: `video` uint8 [C, T, H, W], its label and its metadata."""

    video: np.ndarray
    label: int
    meta: dict[str, Any]


@dataclass
class Clips:
    """A batch of n clips: `video` uint8 [n, C, T, H, W] (channels first, as a Conv3d reads it).

    `labels` int64 [n] are the configured task's labels; `meta` holds per-clip arrays (leading dimension n),
    such as the labels of every task.
    """

    video: np.ndarray
    labels: np.ndarray
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.video)

    def __getitem__(self, i: int) -> Clip:
        return Clip(self.video[i], int(self.labels[i]), {k: v[i] for k, v in self.meta.items()})

    def slice(self, start: int, stop: int) -> Clips:
        """Clips start..stop-1."""
        return Clips(
            self.video[start:stop], self.labels[start:stop], {k: v[start:stop] for k, v in self.meta.items()}
        )

    @staticmethod
    def concat(parts: list[Clips]) -> Clips:
        """The clips of `parts` in order (all of one clip shape; per-token meta of different widths padded)."""
        meta = {k: cat_meta([p.meta[k] for p in parts]) for k in parts[0].meta}
        return Clips(
            np.concatenate([p.video for p in parts]), np.concatenate([p.labels for p in parts]), meta
        )


@dataclass
class Scenes:
    """Everything the renderer needs, per clip and object slot ([n, K]; slots are drawn in order, 0 first).

    Absent slots (clips with fewer than K objects) have `present` False. Positions are object centres at
    frame 0 in pixels; `distance` is travelled over the clip in frame widths along `direction` (k * 45 degrees
    counter-clockwise from east); `rotation` is 0 none, 1 cw, 2 ccw; `angle` is the orientation at frame 0 in
    sprite bins (ANGLES per turn). The static background is `tint` + `blotches` (upsampled) + `grain`.
    `labels` holds the target's label of every task.
    """

    present: np.ndarray
    target: np.ndarray
    shape: np.ndarray
    colour: np.ndarray
    texture: np.ndarray
    size: np.ndarray
    y: np.ndarray
    x: np.ndarray
    direction: np.ndarray
    distance: np.ndarray
    rotation: np.ndarray
    angle: np.ndarray
    tint: np.ndarray  # background colour float [n, 3]
    blotches: np.ndarray  # background blotch grid float32 [n, BLOTCHES, BLOTCHES], added to every channel
    grain: np.ndarray | None  # background grain uint8 [n, H, W, 3] (low 4 bits used); None = no grain
    labels: dict[str, np.ndarray]


@dataclass(frozen=True)
class SpriteBank:
    """Pre-rendered sprites, `pixels` uint8 [shapes*textures*SIZE_LEVELS*ANGLES, S*S]: 0 = transparent,
    1 = colour, 2 = shade (texture), 3 = marker; `diameters` [SIZE_LEVELS] in pixels; S the sprite side."""

    pixels: np.ndarray
    diameters: np.ndarray
    side: int


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mask of a shape of radius 1 in local coordinates (u along the shape's heading)."""
    if shape == "disc":
        return u * u + v * v <= 1.0
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if shape == "triangle":  # equilateral, circumradius 1, a vertex on +u: inradius 0.5 along three normals
        inside = np.ones(u.shape, bool)
        for phi in (np.pi, np.pi / 3, -np.pi / 3):
            inside &= u * np.cos(phi) + v * np.sin(phi) <= 0.5
        return inside
    raise ValueError(f"unknown shape {shape!r}")


@functools.lru_cache(maxsize=16)
def sprite_bank(shapes: tuple[str, ...], textures: tuple[str, ...], diameters: tuple[int, ...]) -> SpriteBank:
    """Sprites of every shape, texture, diameter and orientation, centred in S x S (S = largest diameter + 2)."""
    side = max(diameters) + 2
    d = np.arange(side) + 0.5 - side / 2  # pixel centres relative to the sprite centre
    X, Y = d[None, None, :], -d[None, :, None]  # [1, 1, S], [1, S, 1]: x right, y up
    phi = (2 * np.pi * np.arange(ANGLES) / ANGLES)[:, None, None]  # [A, 1, 1]
    u0 = X * np.cos(phi) + Y * np.sin(phi)  # [A, S, S] along the heading
    v0 = -X * np.sin(phi) + Y * np.cos(phi)
    out = np.zeros((len(shapes), len(textures), len(diameters), ANGLES, side, side), np.uint8)
    for k, diameter in enumerate(diameters):
        radius = diameter / 2
        u, v = u0 / radius, v0 / radius
        marker_r = max(0.17, 0.8 / radius)
        for i, shape in enumerate(shapes):
            inside = _inside(shape, u, v)
            mu = 0.78 if shape == "ring" else 0.55
            marker = inside & ((u - mu) ** 2 + v * v <= marker_r**2)
            for j, texture in enumerate(textures):
                if texture == "stripes":
                    pattern = np.floor(u / 0.35) % 2 == 1
                elif texture == "checker":
                    pattern = (np.floor(u / 0.5) + np.floor(v / 0.5)) % 2 == 1
                else:
                    pattern = np.zeros(u.shape, bool)
                sprite = np.where(inside, np.where(pattern, 2, 1), 0)
                out[i, j, k] = np.where(marker, 3, sprite)
    pixels = out.reshape(-1, side * side)
    pixels.flags.writeable = False
    return SpriteBank(pixels, np.asarray(diameters), side)


def _reflect(q: np.ndarray, span: np.ndarray) -> np.ndarray:
    """q folded into [0, span] by mirror reflections at both ends (a bouncing coordinate)."""
    m = np.mod(q, 2 * span)
    return span - np.abs(m - span)


def _upsample_matrix(out: int, grid: int) -> np.ndarray:
    """[out, grid] bilinear interpolation weights from `grid` nodes spread over `out` pixels."""
    pos = np.linspace(0, grid - 1, out)
    lo = np.minimum(np.floor(pos).astype(int), grid - 2)
    frac = pos - lo
    m = np.zeros((out, grid), np.float32)
    m[np.arange(out), lo] = 1 - frac
    m[np.arange(out), lo + 1] = frac
    return m


class SyntheticVideo:
    """Generator of synthetic clips: `sample(rng, n, split) -> Clips`; train and eval share one distribution."""

    chunk = 8  # rendering vectorises up to about 8 clips; the stream keys every 8 clips of a step together

    def __init__(self, cfg: SyntheticVideoConfig):
        self.cfg = cfg
        res = cfg.resolution

        def diameters(lo: float, hi: float) -> tuple[int, ...]:
            return tuple(max(2, round(res * s)) for s in np.linspace(lo, hi, SIZE_LEVELS))

        self.banks = (
            sprite_bank(cfg.shapes, cfg.textures, diameters(*cfg.distractor_size)),
            sprite_bank(cfg.shapes, cfg.textures, diameters(*cfg.target_size)),
        )  # index 1 = the target's
        self.pad = max(b.side for b in self.banks) // 2 + 2  # canvas margin: pasted sprites never leave it
        rgb = np.array([PALETTE[c] for c in cfg.colours], np.float64)  # [P, 3]
        lut = np.zeros((len(rgb), 4, 4), np.uint8)  # [colour, sprite value, RGBA]
        lut[:, 1, :3] = rgb
        lut[:, 2, :3] = np.round(rgb * SHADE)
        lut[:, 3, :3] = 255 - rgb
        self.lut = lut.view(np.uint32)[..., 0]  # [P, 4] packed pixels
        self.blotch = _upsample_matrix(res, BLOTCHES)

    # ------------------------------------------------------------------ scene parameters

    def draw(self, rng: np.random.Generator, n: int) -> Scenes:
        """Scene parameters of n clips; clip i depends only on row i of the draws (prefix-stable in n)."""
        cfg, res = self.cfg, self.cfg.resolution
        K = cfg.objects[1]
        params, grain_rng = (counter_rng(int(k)) for k in rng.integers(0, 2**63, size=2))
        widths = dict(count=1, target=1, perm=len(cfg.colours), base=4, blotch=BLOTCHES * BLOTCHES)
        widths.update({k: K for k in ("shape", "texture", "size", "y", "x", "dir", "speed", "rot", "angle")})
        u_all = params.random((n, sum(widths.values())))
        u, at = {}, 0
        for name, width in widths.items():
            u[name], at = u_all[:, at : at + width], at + width

        def pick(name: str, k: int) -> np.ndarray:
            return np.minimum((u[name] * k).astype(np.int64), k - 1)

        lo, hi = cfg.objects
        count = lo + pick("count", hi - lo + 1)[:, 0]  # [n]
        present = np.arange(K)[None, :] < count[:, None]  # [n, K]
        target = np.minimum((u["target"][:, 0] * count).astype(np.int64), count - 1)  # [n]
        is_target = np.arange(K)[None, :] == target[:, None]
        colour = np.argsort(u["perm"], axis=1)[:, :K]  # distinct colours within a clip
        size = pick("size", SIZE_LEVELS)
        diam = np.where(is_target, self.banks[1].diameters[size], self.banks[0].diameters[size])
        radius = diam / 2
        y = radius + u["y"] * (res - 2 * radius)  # uniform over the positions where the object fits
        x = radius + u["x"] * (res - 2 * radius)
        speed = pick("speed", len(cfg.speeds))
        distance = np.asarray(cfg.speeds)[speed]
        rotation = pick("rot", 3)
        if not cfg.distractors_move:
            distance = np.where(is_target, distance, 0.0)
            rotation = np.where(is_target, rotation, 0)
        direction = pick("dir", 8)
        shape, texture = pick("shape", len(cfg.shapes)), pick("texture", len(cfg.textures))

        rows = np.arange(n)
        t_dist = distance[rows, target]
        labels = {
            "direction": np.where(t_dist > 0, direction[rows, target], 8),
            "speed": speed[rows, target],
            "rotation": rotation[rows, target],
            "shape": shape[rows, target],
            "colour": colour[rows, target],
            "texture": texture[rows, target],
        }
        return Scenes(
            present=present,
            target=target,
            shape=shape,
            colour=colour,
            texture=texture,
            size=size,
            y=y,
            x=x,
            direction=direction,
            distance=distance,
            rotation=rotation,
            angle=u["angle"] * ANGLES,
            **self._background(u["base"], u["blotch"], grain_rng, n),
            labels={k: v.astype(np.int64) for k, v in labels.items()},
        )

    def _background(
        self, u_base: np.ndarray, u_blotch: np.ndarray, grain_rng: np.random.Generator, n: int
    ) -> dict[str, Any]:
        """Background parameters: a dim, slightly tinted grey, plus (for `noise`) blotches and grain."""
        res = self.cfg.resolution
        tint = 35 + 60 * u_base[:, :1] + 30 * (u_base[:, 1:] - 0.5)  # [n, 3]
        if self.cfg.background == "plain":
            return dict(tint=tint, blotches=np.zeros((n, BLOTCHES, BLOTCHES), np.float32), grain=None)
        blotches = (u_blotch.reshape(n, BLOTCHES, BLOTCHES).astype(np.float32) - 0.5) * 70
        words = -(-res * res * 3 // 8)  # grain bytes per clip, drawn as whole 64-bit words (prefix-stable)
        grain = grain_rng.bit_generator.random_raw(n * words).view(np.uint8).reshape(n, words * 8)
        return dict(tint=tint, blotches=blotches, grain=grain[:, : res * res * 3].reshape(n, res, res, 3))

    def background(self, s: Scenes, rows: slice) -> np.ndarray:
        """uint8 [m, H, W, 3]: the static backgrounds of clips `rows`."""
        img = (
            s.tint[rows].astype(np.float32)[:, None, None, :]
            + (self.blotch @ s.blotches[rows] @ self.blotch.T)[..., None]
        )
        if s.grain is not None:
            img += (s.grain[rows] & 15).astype(np.float32) - 7.5
        return np.clip(img, 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------ rendering

    def trajectory(self, s: Scenes, rows: np.ndarray, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """Centres (y, x) [m, T] in pixels of one slot's objects in clips `rows`, bouncing off the walls."""
        res, T = self.cfg.resolution, self.cfg.frames
        is_target = s.target[rows] == slot
        size = s.size[rows, slot]
        radius = np.where(is_target, self.banks[1].diameters[size], self.banks[0].diameters[size]) / 2
        span = (res - 2 * radius)[:, None]  # the centre stays in [radius, res - radius]
        v = (s.distance[rows, slot] * res / (T - 1))[:, None]  # pixels per frame
        theta = s.direction[rows, slot][:, None] * (np.pi / 4)
        t = np.arange(T)[None, :]
        r = radius[:, None]
        y = r + _reflect(s.y[rows, slot][:, None] - r - v * np.sin(theta) * t, span)  # screen y points down
        x = r + _reflect(s.x[rows, slot][:, None] - r + v * np.cos(theta) * t, span)
        return y, x

    def bounced(self, s: Scenes) -> np.ndarray:
        """bool [n]: whether the target hits a wall during the clip (then it leaves in another direction)."""
        res = self.cfg.resolution
        rows = np.arange(len(s.target))
        radius = self.banks[1].diameters[s.size[rows, s.target]] / 2
        travel = s.distance[rows, s.target] * res
        theta = s.direction[rows, s.target] * (np.pi / 4)
        y_end = s.y[rows, s.target] - travel * np.sin(theta)  # where the unreflected path ends
        x_end = s.x[rows, s.target] + travel * np.cos(theta)
        lo, hi = radius - 1e-9, res - radius + 1e-9
        return (y_end < lo) | (y_end > hi) | (x_end < lo) | (x_end > hi)

    def render_scenes(self, s: Scenes) -> np.ndarray:
        """uint8 [n, C, T, H, W]: the clips described by `s`, rendered a cache-sized chunk of clips at a time."""
        cfg, res, T, pad = self.cfg, self.cfg.resolution, self.cfg.frames, self.pad
        n = len(s.target)
        side = res + 2 * pad
        chunk = max(1, CANVAS_BYTES // (T * side * side * 4))
        canvas = np.empty((min(chunk, n), T, side, side), np.uint32)  # packed RGBA with a margin `pad`
        rgba = np.zeros((min(chunk, n), res, res, 4), np.uint8)
        out = np.empty((n, cfg.channels, T, res, res), np.uint8)
        for lo in range(0, n, chunk):
            rows = slice(lo, min(lo + chunk, n))
            m = rows.stop - lo
            rgba[:m, ..., :3] = self.background(s, rows)
            canvas[:m, :, pad : pad + res, pad : pad + res] = rgba[:m].view(np.uint32)[..., 0][:, None]
            self._paint(canvas[:m], s, lo)
            crop = canvas[:m, :, pad : pad + res, pad : pad + res]  # [m, T, H, W] packed
            if cfg.channels == 3:  # channel c is byte c of the packed pixel
                for c in range(3):
                    np.right_shift(crop, BYTE_SHIFT[c], out=out[rows, c], casting="unsafe")
            else:  # luma, BT.601 weights in 1/256
                r, g, b = ((crop >> BYTE_SHIFT[c]) & 255 for c in range(3))
                out[rows, 0] = (77 * r + 150 * g + 29 * b) >> 8
        return out

    def _paint(self, canvas: np.ndarray, s: Scenes, lo: int) -> None:
        """Paste the objects of clips lo..lo+m-1 into `canvas` [m, T, side, side], slot by slot (draw order)."""
        cfg, T, pad = self.cfg, self.cfg.frames, self.pad
        m, side = len(canvas), canvas.shape[-1]
        flat = canvas.reshape(-1)
        t = np.arange(T)
        spin = cfg.spin * ANGLES / (T - 1)  # sprite bins per frame
        sense = np.array([0.0, -1.0, 1.0])  # none, cw (heading turns clockwise on screen), ccw
        for slot in range(s.present.shape[1]):
            for which, bank in enumerate(self.banks):  # this slot's distractors, then its targets
                local = np.flatnonzero(
                    s.present[lo : lo + m, slot] & ((s.target[lo : lo + m] == slot) == bool(which))
                )
                if len(local) == 0:
                    continue
                rows = lo + local
                cy, cx = self.trajectory(s, rows, slot)  # [k, T]
                turn = sense[s.rotation[rows, slot]][:, None] * spin * t
                angle = np.rint(s.angle[rows, slot][:, None] + turn).astype(np.int64) % ANGLES
                kind = (s.shape[rows, slot] * len(cfg.textures) + s.texture[rows, slot]) * SIZE_LEVELS
                sprite = (kind + s.size[rows, slot])[:, None] * ANGLES + angle  # [k, T]
                S = bank.side
                top = np.floor(cy - S / 2 + 0.5).astype(np.int64) + pad
                left = np.floor(cx - S / 2 + 0.5).astype(np.int64) + pad
                base = ((local[:, None] * T + t) * side + top) * side + left  # [k, T] sprite origins
                offsets = (np.arange(S)[:, None] * side + np.arange(S)).reshape(-1)  # [S*S]
                values = bank.pixels[sprite.reshape(-1)].reshape(-1)  # [k*T*S*S] sprite values
                nz = np.flatnonzero(values)  # opaque pixels only
                frame, pixel = np.divmod(nz, S * S)
                colours = self.lut[s.colour[rows, slot]].reshape(-1)  # [k*4] packed, by sprite value
                flat[base.reshape(-1)[frame] + offsets[pixel]] = colours[(frame // T) * 4 + values[nz]]

    # ------------------------------------------------------------------ generator interface

    def sample(self, rng: np.random.Generator, n: int, split: str = "train") -> Clips:
        """n clips; `split` is train or eval (one distribution: disjoint counter keys make them disjoint)."""
        if split not in ("train", "eval"):
            raise UnknownSplit(f"no split {split!r}; synthetic_video has train and eval")
        s = self.draw(rng, n)
        rows = np.arange(n)
        t_y, t_x = s.y[rows, s.target], s.x[rows, s.target]
        meta = dict(s.labels)
        meta.update(objects=s.present.sum(1), bounced=self.bounced(s), y0=t_y, x0=t_x)
        return Clips(self.render_scenes(s), s.labels[self.cfg.label], meta)

    def render(self, clips: Clips | Clip, i: int = 0) -> str:
        """One line describing clip i (or a single Clip): its labels, object count and whether it bounces."""
        clip = clips if isinstance(clips, Clip) else clips[i]
        m, cfg = clip.meta, self.cfg
        speed = int(m["speed"])
        return (
            f"label {cfg.label}={clip.label}: direction={cfg.DIRECTIONS[int(m['direction'])]}"
            f" speed={speed} ({cfg.speeds[speed]:g} widths/clip) rotation={cfg.ROTATIONS[int(m['rotation'])]}"
            f" shape={cfg.shapes[int(m['shape'])]} colour={cfg.colours[int(m['colour'])]}"
            f" texture={cfg.textures[int(m['texture'])]} objects={int(m['objects'])}"
            f" bounced={bool(m['bounced'])} video={tuple(clip.video.shape)}"
        )
