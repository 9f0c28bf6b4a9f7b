"""ShapesWorld samples: what one classification image, scene or video contains (pure, seeded).

Layouts:
    image: uint8 (H, W, 3) RGB.
    label map: int64 (H, W); 0 = background, k = the k-th instance (scenes, videos) or class k (semantic).
    instances: list of (class index, bool mask (H, W)) of the *visible* part of each object, in drawing order.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from evaluate.shapesworld import render as R


def classification_image(rng: np.random.Generator, class_index: int, size: int, colour_bias: float) -> np.ndarray:
    """One object of class ``MAIN_CLASSES[class_index]`` on a natural background, with occluders."""
    img = R.background(rng, size, size, "natural")
    place = R.random_placement(rng, size, size, (0.45, 0.85))
    alpha = R.shape_alpha(R.MAIN_CLASSES[class_index], place, size, size)
    color = R.class_color(rng, class_index, len(R.MAIN_CLASSES), colour_bias)
    R.composite(img, R.fill_texture(rng, size, size, color), alpha)
    R.add_occluders(rng, img, int(rng.integers(0, 4)))
    return R.to_uint8(img)


def transfer_image(rng: np.random.Generator, class_index: int, size: int) -> np.ndarray:
    """Second domain: class = (shape, fill pattern) on pastel banded backgrounds with saturated fills."""
    shape, pattern = R.TRANSFER_CLASSES[class_index].split("-")
    img = R.background(rng, size, size, "pastel")
    place = R.random_placement(rng, size, size, (0.5, 0.9))
    color = R.hsv_color(rng.random(), rng.uniform(0.7, 1.0), rng.uniform(0.3, 0.7))
    R.composite(img, R.fill_texture(rng, size, size, color, pattern), R.shape_alpha(shape, place, size, size))
    R.add_occluders(rng, img, int(rng.integers(0, 3)))
    return R.to_uint8(img)


def scene(
    rng: np.random.Generator, height: int, width: int, num_objects: int, min_visible: int = 16
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Several main-domain objects that may overlap; returns the image and the visible instance masks.

    Objects whose visible part is smaller than ``min_visible`` pixels are dropped from the annotations (they are
    still drawn, like unlabelled clutter).
    """
    img = R.background(rng, height, width, "natural")
    owner = np.zeros((height, width), np.int64)  # 1-based drawing index of the object visible at each pixel
    classes = []
    for k in range(num_objects):
        cls = int(rng.integers(0, len(R.MAIN_CLASSES)))
        place = R.random_placement(rng, height, width, (0.18, 0.45), margin=0.3)
        alpha = R.shape_alpha(R.MAIN_CLASSES[cls], place, height, width)
        color = R.class_color(rng, cls, len(R.MAIN_CLASSES), 0.5)
        R.composite(img, R.fill_texture(rng, height, width, color), alpha)
        owner[alpha > 0.5] = k + 1
        classes.append(cls)
    instances = []
    for k, cls in enumerate(classes):
        mask = owner == k + 1
        if mask.sum() >= min_visible:
            instances.append((cls, mask))
    return R.to_uint8(img), instances


@dataclasses.dataclass
class _Track:
    cls: int
    x: float
    y: float
    vx: float
    vy: float
    radius: float
    growth: float
    angle: float
    spin: float
    aspect: float
    color: np.ndarray
    pattern: str


def video(
    rng: np.random.Generator, num_frames: int, height: int, width: int, num_objects: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A sequence in which objects move (bouncing off the borders), grow/shrink, rotate and occlude each other.

    Returns frames (uint8 (H, W, 3)) and label maps (uint8 (H, W), 0 = background, 1..num_objects = object id),
    where an object's id is its first-frame drawing order + 1 and later objects are drawn on top.
    """
    base = R.background(rng, height + 16, width + 16, "natural")
    pan = rng.uniform(-0.4, 0.4, size=2)
    tracks = []
    for _ in range(num_objects):
        cls = int(rng.integers(0, len(R.MAIN_CLASSES)))
        place = R.random_placement(rng, height, width, (0.2, 0.35), margin=1.0)
        speed = rng.uniform(0.015, 0.04) * min(height, width)
        heading = rng.uniform(0, 2 * math.pi)
        tracks.append(
            _Track(
                cls,
                place.cx,
                place.cy,
                speed * math.cos(heading),
                speed * math.sin(heading),
                place.radius,
                rng.uniform(-0.012, 0.012),
                place.angle,
                rng.uniform(-0.08, 0.08),
                place.aspect,
                R.class_color(rng, cls, len(R.MAIN_CLASSES), 0.5),
                str(rng.choice(["solid", "gradient", "striped"])),
            )
        )
    textures = [R.fill_texture(rng, height, width, t.color, t.pattern) for t in tracks]
    frames, labels = [], []
    for t in range(num_frames):
        ox = int(round(8 + pan[0] * t)) % 16
        oy = int(round(8 + pan[1] * t)) % 16
        img = base[oy : oy + height, ox : ox + width].copy()
        label = np.zeros((height, width), np.uint8)
        for obj_id, (track, texture) in enumerate(zip(tracks, textures), 1):
            radius = track.radius * (1 + track.growth) ** t
            place = R.Placement(track.x, track.y, radius, track.angle + track.spin * t, track.aspect)
            alpha = R.shape_alpha(R.MAIN_CLASSES[track.cls], place, height, width)
            R.composite(img, texture, alpha)
            label[alpha > 0.5] = obj_id
            track.x, track.vx = _bounce(track.x + track.vx, track.vx, radius * 0.5, width - radius * 0.5)
            track.y, track.vy = _bounce(track.y + track.vy, track.vy, radius * 0.5, height - radius * 0.5)
        frames.append(R.to_uint8(img))
        labels.append(label)
    return frames, labels


def _bounce(pos: float, vel: float, lo: float, hi: float) -> tuple[float, float]:
    if pos < lo:
        return lo + (lo - pos), -vel
    if pos > hi:
        return hi - (pos - hi), -vel
    return pos, vel
