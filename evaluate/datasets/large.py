"""Readers of ImageNet-1k (ILSVRC-2012) and iNaturalist 2018/2019 in their official layouts.

**ImageNet.** ``train/<wnid>/<image>.JPEG`` (the inner per-class tars extracted) and ``val/``, either as released,
flat (``ILSVRC2012_val_00000001.JPEG`` ... ``_00050000``), or sorted into ``val/<wnid>/`` by the common preparation
script. The Kaggle release nests both under ``ILSVRC/Data/CLS-LOC/``. Classes are the sorted wnids (the order
``torchvision.datasets.ImageFolder`` gives the train split, so labels agree with every ImageFolder-based tool). A flat
``val/`` is labelled from, in this order:

1. ``LOC_val_solution.csv`` (Kaggle; ``ImageId,PredictionString``, the first token of the string is the wnid);
2. the ILSVRC-2012 devkit, extracted (``ILSVRC2012_devkit_t12/data/``) or as its archive
   ``ILSVRC2012_devkit_t12.tar.gz``: line i of ``ILSVRC2012_validation_ground_truth.txt`` is the ILSVRC2012_ID of
   image i, mapped to its wnid by ``meta.mat``'s ``synsets`` (the 1000 leaves, ``num_children == 0``).

``torchvision.datasets.ImageNet`` is not used: it insists on the devkit archive with its md5 and rewrites the val
folder into class folders on first use. Its devkit parser is nested inside that function and not importable.

**iNaturalist 2018/2019.** ``train{year}.json`` / ``val{year}.json`` (COCO style: ``images`` with ``id`` and
``file_name`` relative to the dataset root, ``annotations`` with ``image_id`` and ``category_id``, ``categories``
with ``id`` and ``name``) and the images under ``train_val{year}/``. Classes are the categories' ``name`` (the
species level; taken from the separately released ``categories.json`` when it sits in the root), in ``id`` order.
``torchvision.datasets.INaturalist`` walks the image folders, which hold train and
val images together, so it cannot give the official split; the JSON files can. The test set has no public labels:
the protocols report on ``val``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from evaluate.datasets.core import LabeledImages, load_split
from evaluate.datasets.official import require, text_lines
from sslcore.errors import DataError

DEVKIT = "ILSVRC2012_devkit_t12"
VAL_SOLUTION = "LOC_val_solution.csv"


def _imagenet_base(root: Path) -> Path:
    for base in (root, root / "ILSVRC" / "Data" / "CLS-LOC"):
        if (base / "train").is_dir() or (base / "val").is_dir():
            return base
    raise DataError(f"{root}: no train/ or val/ folder (nor ILSVRC/Data/CLS-LOC/train, val)")


def _has_subdirs(path: Path) -> bool:
    return any(entry.is_dir() for entry in os.scandir(path))


def _image_files(folder: Path) -> list[Path]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def _from_csv(path: Path) -> dict[str, str]:
    """Image stem -> wnid from ``LOC_val_solution.csv``."""
    out = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected the columns ImageId,PredictionString")
        for lineno, row in enumerate(reader, 2):
            tokens = (row["PredictionString"] or "").split()
            if not tokens:
                raise DataError(f"{path}:{lineno}: empty PredictionString for {row['ImageId']}")
            out[row["ImageId"]] = tokens[0]
    return out


def _devkit_files(root: Path) -> tuple[Any, list[str], str] | None:
    """(meta.mat source, ground-truth lines, description) from the extracted devkit or its archive, if present."""
    folder = root / DEVKIT / "data"
    if folder.is_dir():
        truth = folder / "ILSVRC2012_validation_ground_truth.txt"
        return require(folder / "meta.mat"), text_lines(truth), str(folder)
    archive = root / f"{DEVKIT}.tar.gz"
    if not archive.is_file():
        return None
    try:
        with tarfile.open(archive) as tar:
            meta = tar.extractfile(f"{DEVKIT}/data/meta.mat")
            truth = tar.extractfile(f"{DEVKIT}/data/ILSVRC2012_validation_ground_truth.txt")
            if meta is None or truth is None:
                raise KeyError("meta.mat or the ground truth")
            meta_bytes, truth_text = io.BytesIO(meta.read()), truth.read().decode()
    except (KeyError, tarfile.TarError, OSError) as exc:
        raise DataError(f"{archive}: not the ILSVRC-2012 devkit archive ({exc})") from None
    return meta_bytes, [line.strip() for line in truth_text.splitlines() if line.strip()], str(archive)


def _from_devkit(meta_source: Any, truth: list[str], where: str) -> dict[str, str]:
    """Image stem -> wnid from the devkit's ground truth and ``meta.mat`` synsets."""
    import scipy.io

    try:
        synsets = np.atleast_1d(scipy.io.loadmat(meta_source, squeeze_me=True)["synsets"])
        leaves = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{where}: meta.mat has no usable synsets ({exc})") from None
    out = {}
    for i, line in enumerate(truth, 1):
        if not line.isdigit() or int(line) not in leaves:
            raise DataError(f"{where}: ground truth line {i} ({line!r}) is not a leaf ILSVRC2012_ID of meta.mat")
        out[f"ILSVRC2012_val_{i:08d}"] = leaves[int(line)]
    return out


def imagenet_val_labels(root: Path) -> tuple[dict[str, str], str]:
    """(image stem -> wnid, the file it came from) for a flat val folder; see the module docstring."""
    for folder in (root, root.parent):
        csv_path = folder / VAL_SOLUTION
        if csv_path.is_file():
            return _from_csv(csv_path), str(csv_path)
    found = _devkit_files(root)
    if found is None:
        raise DataError(
            f"{root}: val/ is flat and no labels were found: put {VAL_SOLUTION}, {DEVKIT}/ or {DEVKIT}.tar.gz there"
        )
    return _from_devkit(*found), found[2]


def read_imagenet(root: Path, split: str) -> LabeledImages:
    """ImageNet-1k ``train`` or ``val``; see the module docstring for the accepted layouts."""
    from torchvision.datasets.folder import find_classes

    root = Path(os.path.abspath(root))
    base = _imagenet_base(root)
    folder = require(base / split, f"the ImageNet {split} images")
    if (base / "train").is_dir():
        try:
            classes = tuple(find_classes(str(base / "train"))[0])
        except FileNotFoundError:
            raise DataError(f"{base / 'train'}: no class folders (ImageNet train is train/<wnid>/*.JPEG)") from None
    else:
        classes = ()
    if _has_subdirs(folder):
        images = load_split(base, split)
        if classes and images.classes != classes:
            raise DataError(f"{folder}: its class folders differ from {base / 'train'}")
        return LabeledImages(base, images.classes, images.samples, name="imagenet", split=split)
    labels, source = imagenet_val_labels(root)
    if not classes:
        classes = tuple(sorted(set(labels.values())))
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for path in _image_files(folder):
        wnid = labels.get(path.stem)
        if wnid is None:
            raise DataError(f"{path}: no label in {source}")
        if wnid not in index:
            raise DataError(f"{source}: {path.stem} is labelled {wnid}, which is not a class of {base / 'train'}")
        samples.append((str(path), index[wnid]))
    if not samples:
        raise DataError(f"{folder}: no images")
    return LabeledImages(base, classes, tuple(samples), name="imagenet", split=split)


def _taxonomy_names(path: Path, categories: list[dict[str, Any]]) -> tuple[str, ...] | None:
    """Species names from the separately released ``categories.json`` (2018), by id, when it is present."""
    if not path.is_file():
        return None
    try:
        names = {int(c["id"]): str(c["name"]) for c in json.loads(path.read_text())}
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not an iNaturalist categories file ({type(exc).__name__}: {exc})") from None
    missing = next((int(c["id"]) for c in categories if int(c["id"]) not in names), None)
    if missing is not None:
        raise DataError(f"{path}: no entry for category id {missing}")
    return tuple(names[int(c["id"])] for c in categories)


def read_inat(year: str, root: Path, split: str) -> LabeledImages:
    """iNaturalist ``year`` (2018, 2019): ``<split>{year}.json`` and the images it names, under ``root``."""
    root = Path(os.path.abspath(root))
    path = require(root / f"{split}{year}.json", f"the iNaturalist {year} {split} annotations")
    try:
        data = json.loads(path.read_text())
        categories = sorted(data["categories"], key=lambda c: int(c["id"]))
        classes = tuple(str(c.get("name", c["id"])) for c in categories)
        index = {int(c["id"]): i for i, c in enumerate(categories)}
        label_of = {int(a["image_id"]): int(a["category_id"]) for a in data["annotations"]}
        images = [(int(img["id"]), str(img["file_name"])) for img in data["images"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not an iNaturalist annotation file ({type(exc).__name__}: {exc})") from None
    classes = _taxonomy_names(root / "categories.json", categories) or classes
    samples = []
    for image_id, file_name in images:
        if image_id not in label_of:
            raise DataError(f"{path}: image {image_id} ({file_name}) has no annotation")
        if label_of[image_id] not in index:
            raise DataError(f"{path}: image {image_id} has category {label_of[image_id]}, not in categories")
        samples.append((str(root / file_name), index[label_of[image_id]]))
    return LabeledImages(root, classes, tuple(samples), name=f"inat{year}", split=split)
