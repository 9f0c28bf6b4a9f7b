"""ShapesWorld rendering: procedural shapes, textures and backgrounds (pure numpy + OpenCV, seeded).

Layouts:
    image: uint8 array (H, W, 3), RGB.
    alpha / mask: float32 (H, W) coverage in [0, 1] / bool (H, W).

Shapes are drawn at ``SUPERSAMPLE``x resolution and area-averaged down, which gives anti-aliased edges (the images
look natural to a CNN/ViT) while the binary masks (coverage > 0.5) stay exact for the annotation formats.
Everything takes a :class:`numpy.random.Generator`; nothing reads global random state.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math

import cv2
import numpy as np

SUPERSAMPLE = 4


def _regular(n: int, start: float = math.pi / 2) -> np.ndarray:
    ang = start + np.arange(n) * 2 * math.pi / n
    return np.stack([np.cos(ang), -np.sin(ang)], 1)


def _star(n: int = 5, inner: float = 0.45) -> np.ndarray:
    ang = math.pi / 2 + np.arange(2 * n) * math.pi / n
    rad = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([rad * np.cos(ang), -rad * np.sin(ang)], 1)


def _heart(n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    pts = np.stack([x, -y], 1) / 17.0
    return pts - pts.mean(0)


def _poly(*xy: float) -> np.ndarray:
    return np.asarray(xy, dtype=np.float64).reshape(-1, 2)


# Each shape is a list of (polygon in unit coordinates, +1 to fill / 0 to cut a hole); "circle" polygons are
# fine enough at 48 vertices for images up to a few hundred pixels.
SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_regular(48), 1)],
    "triangle": [(_regular(3) * 1.1 + [0, 0.15], 1)],
    "square": [(_regular(4, math.pi / 4) * 1.05, 1)],
    "pentagon": [(_regular(5), 1)],
    "hexagon": [(_regular(6), 1)],
    "star": [(_star(5), 1)],
    "cross": [
        (
            _poly(
                -0.3,
                -1,
                0.3,
                -1,
                0.3,
                -0.3,
                1,
                -0.3,
                1,
                0.3,
                0.3,
                0.3,
                0.3,
                1,
                -0.3,
                1,
                -0.3,
                0.3,
                -1,
                0.3,
                -1,
                -0.3,
                -0.3,
                -0.3,
            ),
            1,
        )
    ],
    "heart": [(_heart(), 1)],
    "crescent": [(_regular(48), 1), (_regular(48) * 0.85 + [0.45, -0.1], 0)],
    "arrow": [(_poly(-1, -0.25, 0.2, -0.25, 0.2, -0.7, 1, 0, 0.2, 0.7, 0.2, 0.25, -1, 0.25), 1)],
    # second domain (transfer)
    "ring": [(_regular(48), 1), (_regular(48) * 0.55, 0)],
    "diamond": [(_poly(0, -1, 0.55, 0, 0, 1, -0.55, 0), 1)],
    "lshape": [(_poly(-0.7, -1, -0.15, -1, -0.15, 0.45, 0.7, 0.45, 0.7, 1, -0.7, 1), 1)],
    "tshape": [(_poly(-1, -1, 1, -1, 1, -0.45, 0.28, -0.45, 0.28, 1, -0.28, 1, -0.28, -0.45, -1, -0.45), 1)],
}

MAIN_CLASSES = ("circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "heart", "crescent", "arrow")
TRANSFER_SHAPES = ("ring", "diamond", "lshape", "tshape")
TRANSFER_PATTERNS = ("striped", "dotted")
TRANSFER_CLASSES = tuple(f"{s}-{p}" for s in TRANSFER_SHAPES for p in TRANSFER_PATTERNS)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a shape goes: centre (x, y) in pixels, radius in pixels, rotation in radians, aspect (x stretch)."""

    cx: float
    cy: float
    radius: float
    angle: float
    aspect: float = 1.0


def shape_alpha(name: str, place: Placement, height: int, width: int) -> np.ndarray:
    """Coverage of a shape, float32 (H, W) in [0, 1], anti-aliased by supersampling."""
    s = SUPERSAMPLE
    canvas = np.zeros((height * s, width * s), np.uint8)
    rot = np.array([[math.cos(place.angle), -math.sin(place.angle)], [math.sin(place.angle), math.cos(place.angle)]])
    for poly, fill in SHAPES[name]:
        pts = poly * [place.aspect, 1.0] @ rot.T * place.radius + [place.cx, place.cy]
        pts = np.round((pts + 0.5) * s - 0.5).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 255 if fill else 0, lineType=cv2.LINE_8)
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def hsv_color(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255.0


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], float32 (H, W): a random grid upsampled bicubically."""
    grid = rng.random((cells + 3, cells + 3)).astype(np.float32)
    big = cv2.resize(grid, (width + width // cells * 3, height + height // cells * 3), interpolation=cv2.INTER_CUBIC)
    oy, ox = height // cells, width // cells
    return np.clip(big[oy : oy + height, ox : ox + width], 0.0, 1.0)


def background(rng: np.random.Generator, height: int, width: int, palette: str = "natural") -> np.ndarray:
    """A textured background, float32 (H, W, 3) in [0, 255].

    ``palette="natural"``: earthy two-colour blends with fine grain; ``"pastel"``: light, low-saturation colours with
    diagonal bands (the second domain has different colour and texture statistics on purpose).
    """
    if palette == "natural":
        c1 = hsv_color(rng.uniform(0.05, 0.45), rng.uniform(0.15, 0.6), rng.uniform(0.25, 0.75))
        c2 = hsv_color(rng.uniform(0.0, 1.0), rng.uniform(0.1, 0.5), rng.uniform(0.2, 0.8))
        mix = smooth_noise(rng, height, width, int(rng.integers(2, 6)))[..., None]
        img = c1 * mix + c2 * (1 - mix)
        img += rng.normal(0, rng.uniform(3, 12), (height, width, 1)).astype(np.float32)
    else:
        c1 = hsv_color(rng.uniform(0, 1), rng.uniform(0.05, 0.25), rng.uniform(0.8, 1.0))
        c2 = hsv_color(rng.uniform(0, 1), rng.uniform(0.05, 0.25), rng.uniform(0.7, 0.95))
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        period = rng.uniform(6, 18)
        theta = rng.uniform(0, math.pi)
        band = (np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period) > 0)[..., None]
        img = np.where(band, c1, c2).astype(np.float32)
        img += rng.normal(0, 2.0, (height, width, 3)).astype(np.float32)
    return img


def fill_texture(
    rng: np.random.Generator, height: int, width: int, color: np.ndarray, pattern: str | None = None
) -> np.ndarray:
    """An object's fill, float32 (H, W, 3): solid, gradient, noisy, striped or dotted around ``color``."""
    pattern = pattern or str(rng.choice(["solid", "gradient", "noisy", "striped"], p=[0.35, 0.3, 0.2, 0.15]))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.broadcast_to(color, (height, width, 3)).astype(np.float32)
    if pattern == "solid":
        return base.copy()
    if pattern == "gradient":
        theta = rng.uniform(0, 2 * math.pi)
        ramp = (xx * math.cos(theta) + yy * math.sin(theta)) / max(height, width)
        return base * (0.75 + 0.5 * ramp[..., None])
    if pattern == "noisy":
        return base * (0.8 + 0.4 * smooth_noise(rng, height, width, int(rng.integers(4, 10)))[..., None])
    other = 255.0 - color * rng.uniform(0.3, 0.8)
    if pattern == "striped":
        period = rng.uniform(3, 7)
        theta = rng.uniform(0, math.pi)
        on = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period) > 0
        return np.where(on[..., None], base, other).astype(np.float32)
    if pattern == "dotted":
        period = rng.uniform(4, 7)
        on = (np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period)) > 0.35
        return np.where(on[..., None], other, base).astype(np.float32)
    raise ValueError(f"unknown pattern {pattern!r}")


def composite(image: np.ndarray, fill: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha-blend ``fill`` over ``image`` (both float32 (H, W, 3)) in place and return it."""
    a = alpha[..., None]
    image *= 1 - a
    image += fill * a
    return image


def add_occluders(rng: np.random.Generator, image: np.ndarray, count: int) -> np.ndarray:
    """Draw ``count`` thin sticks / small blobs of random colour over ``image`` (float32 (H, W, 3)) in place."""
    height, width = image.shape[:2]
    for _ in range(count):
        color = tuple(float(c) for c in hsv_color(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.2, 0.9)))
        if rng.random() < 0.5:
            p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(image, p1, p2, color, int(rng.integers(1, max(2, width // 32) + 1)), cv2.LINE_AA)
        else:
            center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(rng.integers(1, max(2, width // 12))), int(rng.integers(1, max(2, height // 12))))
            cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA)
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def random_placement(
    rng: np.random.Generator, height: int, width: int, scale: tuple[float, float], margin: float = 0.6
) -> Placement:
    """A random placement whose radius is ``scale`` x min(H, W) / 2 and whose centre keeps most of it inside."""
    radius = rng.uniform(*scale) * min(height, width) / 2
    lo_x, hi_x = radius * margin, width - radius * margin
    lo_y, hi_y = radius * margin, height - radius * margin
    return Placement(
        cx=float(rng.uniform(lo_x, max(lo_x + 1e-3, hi_x))),
        cy=float(rng.uniform(lo_y, max(lo_y + 1e-3, hi_y))),
        radius=float(radius),
        angle=float(rng.uniform(0, 2 * math.pi)),
        aspect=float(rng.uniform(0.8, 1.25)),
    )


def class_color(rng: np.random.Generator, class_index: int, num_classes: int, bias: float) -> np.ndarray:
    """Object colour: with probability ``bias`` a hue near the class's own hue, else any hue.

    The partial colour/class correlation mirrors natural images and makes the task learnable from raw pixels by a
    simple baseline, while shape remains needed for the rest.
    """
    if rng.random() < bias:
        hue = class_index / num_classes + rng.normal(0, 0.03)
    else:
        hue = rng.random()
    return hsv_color(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
