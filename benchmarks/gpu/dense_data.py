"""Data and overrides for the acceptance run's dense stage (``benchmarks/gpu/acceptance.py``).

``write_official`` writes small synthetic sets in the official layouts the full configs read, with the shapes of real
data (non-square images): COCO 2017 (``train2017/``, ``val2017/``, ``annotations/instances_{train,val}2017.json``,
640 x 480 images, categories named after COCO classes so mmdet's name -> id mapping keeps them) and ADE20K
(``images/{training,validation}/ADE_*.jpg``, ``annotations/.../ADE_*.png`` with 0 = "other", reduced away by the
config, 683 x 512 images). ``write_shapesworld`` writes the ShapesWorld tiny sets the demo's configs read (dry run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from evaluate.shapesworld import formats as SF
from evaluate.shapesworld import scenes

COCO_NAMES = ("person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light")
SIZES = {"coco": (480, 640), "ade20k": (512, 683)}  # (height, width)
COUNTS = {"coco": {"train2017": 16, "val2017": 4}, "ade20k": {"training": 16, "validation": 4}}


def _scene(task: str, split: str, index: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    rng = np.random.default_rng([20, list(SIZES).index(task), list(COUNTS[task]).index(split), index])
    height, width = SIZES[task]
    return scenes.scene(rng, height, width, int(rng.integers(2, 6)), min_visible=64)


def write_official(root: Path, task: str) -> Path:
    """Synthetic ``task`` data in the official layout under ``root`` (kept: a rerun reuses it)."""
    done = root / ".complete"
    if done.is_file():
        return root
    for split, count in COUNTS[task].items():
        if task == "coco":
            _write_coco_split(root, split, count)
        else:
            for i in range(count):
                img, instances = _scene(task, split, i)
                label = np.zeros(img.shape[:2], np.uint8)
                for cls, mask in instances:
                    label[mask] = cls + 1
                stem = f"ADE_{'train' if split == 'training' else 'val'}_{i + 1:08d}"
                SF.save_jpg(root / "images" / split / f"{stem}.jpg", img)
                SF.save_png(root / "annotations" / split / f"{stem}.png", label)
    done.write_text("")
    return root


def _write_coco_split(root: Path, split: str, count: int) -> None:
    images, annotations = [], []
    for i in range(count):
        img, instances = _scene("coco", split, i)
        file_name = f"{i + 1:012d}.jpg"
        SF.save_jpg(root / split / file_name, img)
        images.append({"id": i + 1, "file_name": file_name, "height": img.shape[0], "width": img.shape[1]})
        first = len(annotations) + 1
        annotations += [SF.coco_annotation(first + k, i + 1, cls, mask) for k, (cls, mask) in enumerate(instances)]
    categories = [{"id": i + 1, "name": name, "supercategory": "thing"} for i, name in enumerate(COCO_NAMES)]
    doc = {"info": {"description": "sslbench acceptance"}, "licenses": [], "images": images,
           "annotations": annotations, "categories": categories}  # fmt: skip
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def write_shapesworld(root: Path, task: str) -> Path:
    """The ShapesWorld tiny set of ``task`` under ``root/<task>`` with the manifest the runner looks for."""
    if task == "coco":
        SF.write_coco(root / "coco", {"train": 4, "val": 2}, 64, 0)
    else:
        SF.write_ade(root / "ade20k", {"training": 4, "validation": 2}, 64, 0)
    (root / "shapesworld.json").write_text(json.dumps({"written_by": "benchmarks/gpu/acceptance.py --dry-run"}))
    return root / task


def short_run_options(task: str, iters: int, batch: int, device_type: str, official: bool) -> dict[str, Any]:
    """Overrides that make a config train ``iters`` iterations at ``batch`` per process (no validation: the run's test
    pass follows), log every iteration unsmoothed and save no checkpoint; the full configs also get an endless sampler
    (mmengine sleeps 2 s whenever a finite one runs out)."""
    options: dict[str, Any] = {
        "train_cfg": {"_delete_": True, "type": "IterBasedTrainLoop", "max_iters": iters, "val_begin": iters + 1},
        "train_dataloader.batch_size": batch,
        "default_hooks.logger.interval": 1,
        "log_processor.window_size": 1,  # each logged time and loss is its own iteration's (default: mean of 10)
        "default_hooks.checkpoint": {"_delete_": True, "type": "CheckpointHook", "interval": 10**9,
                                     "by_epoch": False, "save_last": False},
        "log_processor.by_epoch": False,
        "randomness.seed": 0,
    }  # fmt: skip
    if official:
        workers = 4 if device_type == "cuda" else 0
        options["train_dataloader.sampler"] = {"_delete_": True, "type": "InfiniteSampler", "shuffle": True}
        for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
            options[f"{loader}.num_workers"] = workers
            options[f"{loader}.persistent_workers"] = workers > 0
    return options
