"""The DAVIS-2017 directory layout (the real dataset or ShapesWorld video) and DINO's frame preprocessing.

Layout under a root ``D``::

    D/JPEGImages/480p/<seq>/00000.jpg ...      frames
    D/Annotations/480p/<seq>/00000.png ...     indexed ("P") PNGs: 0 background, 1..K objects, 255 void
    D/ImageSets/2017/<split>.txt               one sequence name per line

Frame preprocessing follows DINO's ``eval_video_segmentation.py``: read with OpenCV (BGR), resize with
``cv2.resize`` (bilinear) so that the short side is ``short_side`` (480) and the long side is
floor(short_side * long / short / 64) * 64 (854x480 -> 832x480), scale to [0, 1], convert to RGB and normalise.
The short side is configurable because ShapesWorld frames are small (96x160 in the demo preset). DINO's script
computes the frame size and the label size with two mirrored branches that disagree on square frames (frames:
short side = height; labels: short side = width); here both use one rule (for square frames the height is the
short side), which is identical on every non-square frame, DAVIS included.

Normalisation: ``"imagenet"`` (default) is mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), the statistics
every evaluated model was trained with; ``"dino"`` uses the std (0.228, 0.224, 0.225) of DINO's script (a typo
inherited from UVC) for bit-parity with published numbers. The difference is a 0.4% scale of the red channel.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from sslcore.errors import DataError
from sslcore.io import atomic_write_bytes

MEAN = (0.485, 0.456, 0.406)
STDS = {"imagenet": (0.229, 0.224, 0.225), "dino": (0.228, 0.224, 0.225)}
LONG_MULTIPLE = 64


@dataclasses.dataclass(frozen=True)
class Sequence:
    """One video: its frames and whatever annotations exist (all frames for train/val, the first for test)."""

    name: str
    frames: tuple[Path, ...]
    annotations: tuple[Path, ...]


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: missing {what} directory (expected the DAVIS-2017 layout)")
    return path


def read_split(root: str | Path, split: str) -> list[str]:
    """Sequence names listed in ``ImageSets/2017/<split>.txt``."""
    path = Path(root) / "ImageSets" / "2017" / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
        hint = f" (available: {', '.join(available)})" if available else ""
        raise DataError(f"{path}: split file not found{hint}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: empty split file")
    return names


def load_sequence(root: str | Path, name: str, annotations: str = "first") -> Sequence:
    """Frames and annotations of one sequence.

    Args:
        annotations: ``"first"`` requires the first frame's annotation (propagation), ``"all"`` one PNG per frame
            (scoring), ``"none"`` reads frames only.
    """
    root = Path(root)
    frame_dir = _need_dir(root / "JPEGImages" / "480p" / name, f"frames of sequence {name!r}")
    frames = tuple(sorted(frame_dir.glob("*.jpg")))
    if not frames:
        raise DataError(f"{frame_dir}: no .jpg frames")
    if annotations == "none":
        return Sequence(name, frames, ())
    ann_dir = _need_dir(root / "Annotations" / "480p" / name, f"annotations of sequence {name!r}")
    anns = tuple(sorted(ann_dir.glob("*.png")))
    first = ann_dir / f"{frames[0].stem}.png"
    if not first.is_file():
        raise DataError(f"{first}: missing first-frame annotation")
    if annotations == "all":
        missing = [f.stem for f in frames if not (ann_dir / f"{f.stem}.png").is_file()]
        if missing:
            raise DataError(f"{ann_dir}: no annotation for frame {missing[0]} ({len(missing)} missing)")
    return Sequence(name, frames, anns)


def check_sequences(root: str | Path, names: list[str]) -> list[str]:
    """Validate every sequence before any propagation: frames, first-frame and per-frame annotations (scoring needs
    one PNG per frame). Returns warnings for frames missing in the middle of a sequence (a gap in the numbered
    ``00000.jpg, 00001.jpg, ...`` stems), which the propagation would silently skip over.

    Raises:
        DataError: naming the first sequence that cannot be propagated and scored.
    """
    warnings = []
    for name in names:
        seq = load_sequence(root, name, annotations="all")
        numbers = [int(f.stem) for f in seq.frames if f.stem.isdigit()]
        if len(numbers) == len(seq.frames) and numbers:
            gaps = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
            if gaps:
                warnings.append(f"{name}: frame {gaps[0]:05d} missing mid-sequence ({len(gaps)} missing)")
    return warnings


def read_label(path: str | Path) -> np.ndarray:
    """An indexed PNG as uint8 (H, W) indices (palette colours are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: mask file not found")
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise DataError(f"{path}: mask must be an indexed (mode P) or grey PNG, got mode {image.mode}")
            return np.array(image, dtype=np.uint8)
    except (OSError, SyntaxError) as exc:
        raise DataError(f"{path}: unreadable PNG ({exc})") from None


def write_label(path: str | Path, labels: np.ndarray, palette: np.ndarray) -> Path:
    """Write uint8 (H, W) indices as an indexed PNG with ``palette`` (uint8 (256, 3)), atomically."""
    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    image.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def resized_shape(height: int, width: int, short_side: int = 480, multiple: int = LONG_MULTIPLE) -> tuple[int, int]:
    """(H', W') of DINO's resize rule: short side -> ``short_side``, long side floored to a multiple of ``multiple``."""
    if width > height:
        return short_side, int((short_side * width / height) // multiple * multiple)
    return int((short_side * height / width) // multiple * multiple), short_side


def read_frame(
    path: str | Path, short_side: int = 480, normalize: str = "imagenet", multiple: int = LONG_MULTIPLE
) -> tuple[torch.Tensor, tuple[int, int]]:
    """A frame as a normalised float (3, H', W') RGB tensor, and its original (H, W)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: unreadable image")
    height, width = image.shape[:2]
    th, tw = resized_shape(height, width, short_side, multiple)
    if th < 1 or tw < 1:
        raise DataError(f"{path}: {width}x{height} frame gives an empty {tw}x{th} resize (short side {short_side})")
    image = cv2.resize(image, (tw, th))
    rgb = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))).float() / 255.0
    if normalize not in STDS:
        raise DataError(f"normalize={normalize!r}: expected one of {', '.join(STDS)}")
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STDS[normalize]).view(3, 1, 1)
    return (rgb - mean) / std, (height, width)


def first_labels(path: str | Path, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The first frame's labels: original uint8 (H, W) and nearest-resized to the (h, w) patch grid.

    Void (255) becomes background before resizing (DINO one-hot encodes it as a 256th channel; DAVIS first frames
    carry no void, so the results agree there).
    """
    labels = read_label(path)
    labels = np.where(labels == 255, 0, labels).astype(np.uint8)
    small = np.array(Image.fromarray(labels).resize((grid[1], grid[0]), Image.NEAREST))
    return labels, small


def is_shapesworld(root: str | Path) -> bool:
    """True when ``root`` is the ``davis`` part of a generated ShapesWorld tree."""
    manifest = Path(root).resolve().parent / "shapesworld.json"
    if not manifest.is_file():
        return False
    try:
        return "davis" in json.loads(manifest.read_text()).get("parts", [])
    except (json.JSONDecodeError, AttributeError):
        return False
