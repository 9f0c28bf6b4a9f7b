"""Writers for the official on-disk dataset formats, fed with ShapesWorld samples.

Each writer produces exactly the layout the real dataset uses, so the loaders of sslbench (and torchvision,
pycocotools, mmdet, mmseg) read ShapesWorld and the real data through the same code path:

* ImageFolder classification (ImageNet layout): ``{train,val}/<class>/<class>_<n>.png``, plus SimCLR-style label
  subsets (one train file name per line; the class is the part before the first underscore, as ImageNet wnids).
* COCO instances: ``images/{train,val}/*.jpg`` and ``annotations/instances_{train,val}.json`` with polygon masks,
  or uncompressed RLE for masks with holes.
* ADE20K: ``images/{training,validation}/*.jpg`` and ``annotations/{training,validation}/*.png`` (mode L; 0 = other,
  1..K = classes: the ``reduce_zero_label`` convention).
* DAVIS-2017: ``JPEGImages/480p/<seq>/%05d.jpg``, ``Annotations/480p/<seq>/%05d.png`` (mode P, 0 = background,
  1..K = object ids) and ``ImageSets/2017/{train,val}.txt``.

Each sample's random stream is derived from (seed, part, split, index), so the bytes written do not depend on the
order in which samples are generated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from evaluate.datasets.palette import voc_palette
from evaluate.shapesworld import render as R
from evaluate.shapesworld import scenes

PARTS = ("classification", "transfer", "coco", "ade20k", "davis")
_PART_IDS = {name: i for i, name in enumerate(PARTS)}
_SPLIT_IDS = {"train": 0, "val": 1, "training": 0, "validation": 1}
JPEG_QUALITY = 95


def sample_rng(seed: int, part: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _PART_IDS[part], _SPLIT_IDS[split], index])


def save_png(path: Path, array: np.ndarray, palette: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette is not None:
        image = image.convert("P") if image.mode != "P" else image
        image.putpalette(palette.reshape(-1).tolist())
    image.save(path, format="PNG", optimize=False)


def save_jpg(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=JPEG_QUALITY)


def write_image_folder(
    root: Path,
    classes: tuple[str, ...],
    per_class: dict[str, int],
    render: Callable[[np.random.Generator, int], np.ndarray],
    seed: int,
    part: str,
) -> dict[str, int]:
    """Write ``root/<split>/<class>/<class>_<n>.png``; returns the number of images per split."""
    counts = {}
    for split, n in per_class.items():
        for c, name in enumerate(classes):
            for i in range(n):
                rng = sample_rng(seed, part, split, c * 1_000_000 + i)
                save_png(root / split / name / f"{name}_{i:05d}.png", render(rng, c))
        counts[split] = n * len(classes)
    return counts


def write_subsets(root: Path, classes: tuple[str, ...], n_train: int, fractions: dict[str, float], seed: int) -> None:
    """SimCLR-style label subsets of train: for each fraction, the same share of every class (at least one image).

    Smaller subsets are nested in larger ones, as ImageNet's 1 % split is inside the 10 % split.
    """
    rng = np.random.default_rng([seed, 99])
    order = {name: rng.permutation(n_train) for name in classes}
    (root / "subsets").mkdir(parents=True, exist_ok=True)
    for tag, fraction in fractions.items():
        keep = max(1, int(round(fraction * n_train)))
        names = sorted(f"{name}_{i:05d}.png" for name in classes for i in order[name][:keep])
        (root / "subsets" / f"{tag}.txt").write_text("".join(n + "\n" for n in names))


def mask_to_coco_segmentation(mask: np.ndarray) -> list[list[float]] | dict:
    """Polygons (outer contours) for a hole-free mask; uncompressed column-major RLE if the mask has holes."""
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    has_hole = hierarchy is not None and bool((hierarchy[0][:, 3] >= 0).any())
    polys = [c.reshape(-1, 2) for c in contours if len(c) >= 3]
    if not has_hole and polys:
        # pixel centres -> polygon through pixel corners would inflate; use centres + 0.5 as COCO tools do
        return [(p.astype(np.float64) + 0.5).reshape(-1).round(2).tolist() for p in polys]
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def coco_annotation(ann_id: int, image_id: int, cls: int, mask: np.ndarray) -> dict:
    """One COCO instance annotation (category ``cls + 1``) of a boolean mask: RLE segmentation, area, tight bbox."""
    ys, xs = np.nonzero(mask)
    x0, y0 = float(xs.min()), float(ys.min())
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cls + 1,
        "segmentation": mask_to_coco_segmentation(mask),
        "area": float(mask.sum()),
        "bbox": [x0, y0, float(xs.max()) - x0 + 1, float(ys.max()) - y0 + 1],
        "iscrowd": 0,
    }


def write_coco(root: Path, n_images: dict[str, int], size: int, seed: int) -> dict[str, int]:
    """COCO instances with categories = the main ShapesWorld classes (ids 1..K)."""
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(R.MAIN_CLASSES)]
    counts = {}
    for split, n in n_images.items():
        images, annotations = [], []
        for i in range(n):
            rng = sample_rng(seed, "coco", split, i)
            img, instances = scenes.scene(rng, size, size, int(rng.integers(2, 6)))
            file_name = f"{i:012d}.jpg"
            save_jpg(root / "images" / split / file_name, img)
            images.append({"id": i + 1, "file_name": file_name, "height": size, "width": size})
            first = len(annotations) + 1
            annotations += [coco_annotation(first + k, i + 1, cls, mask) for k, (cls, mask) in enumerate(instances)]
        doc = {
            "info": {"description": "ShapesWorld instances (sslbench)", "version": "1.0"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        path = root / "annotations" / f"instances_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))
        counts[split] = n
        counts[f"{split}_instances"] = len(annotations)
    return counts


def write_ade(root: Path, n_images: dict[str, int], size: int, seed: int) -> dict[str, int]:
    """ADE20K-style semantic segmentation: label = class index + 1 where an object is visible, 0 elsewhere."""
    counts = {}
    for split, n in n_images.items():
        for i in range(n):
            rng = sample_rng(seed, "ade20k", split, i)
            img, instances = scenes.scene(rng, size, size, int(rng.integers(2, 6)), min_visible=1)
            label = np.zeros((size, size), np.uint8)
            for cls, mask in instances:
                label[mask] = cls + 1
            stem = f"ADE_{'train' if split == 'training' else 'val'}_{i:08d}"
            save_jpg(root / "images" / split / f"{stem}.jpg", img)
            save_png(root / "annotations" / split / f"{stem}.png", label)
        counts[split] = n
    (root / "classes.txt").write_text("".join(name + "\n" for name in R.MAIN_CLASSES))
    return counts


def write_davis(
    root: Path, n_sequences: dict[str, int], num_frames: int, height: int, width: int, seed: int
) -> dict[str, int]:
    """DAVIS-2017 layout. Sequence names are ``shapes-<split>-<n>``; 1 to 3 objects each."""
    palette = voc_palette()
    counts = {}
    for split, n in n_sequences.items():
        names = []
        for i in range(n):
            rng = sample_rng(seed, "davis", split, i)
            name = f"shapes-{split}-{i:03d}"
            frames, labels = scenes.video(rng, num_frames, height, width, int(rng.integers(1, 4)))
            for t, (frame, label) in enumerate(zip(frames, labels)):
                save_jpg(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", frame)
                save_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", label, palette)
            names.append(name)
        sets = root / "ImageSets" / "2017"
        sets.mkdir(parents=True, exist_ok=True)
        (sets / f"{split}.txt").write_text("".join(s + "\n" for s in names))
        counts[split] = n
        counts[f"{split}_frames"] = n * num_frames
    return counts


def split_counts(total_per_class: int, val_fraction: float) -> dict[str, int]:
    val = max(1, int(math.ceil(total_per_class * val_fraction)))
    return {"train": total_per_class - val, "val": val}
