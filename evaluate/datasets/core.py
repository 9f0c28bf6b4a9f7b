"""Labelled image sets, the one interface every protocol sees: ImageFolder trees, SimCLR-style subsets, fingerprints.

:class:`LabeledImages` is an ordered list of (image key, label) pairs with the class names. An image key is a file
path, or ``<file>#<row>`` for images stored as rows of an array file (CIFAR's pickles), read by the set's ``reader``
(:class:`ArrayImages`). The official-layout readers of :mod:`evaluate.datasets.official` and
:mod:`evaluate.datasets.large` all return this type, so the feature extractor, its cache fingerprint and the records
never see which reader made it.

A plain dataset is an ImageFolder tree ``<root>/<split>/<class>/<image>`` (ShapesWorld ``classification/`` and
``transfer/``, a converted copy of any dataset). Labels are the index of the class directory in sorted order, as
``torchvision.datasets.ImageFolder`` assigns them.

Semi-supervised subsets follow the google-research/simclr ``imagenet_subsets`` files: one train file name per line
(no directory); the class is the part of the name before the first underscore (the wnid for ImageNet). Every listed
name must exist in the train split, and its directory must agree with its prefix.

:func:`fingerprint` hashes the sorted relative keys with their labels and their files' sizes and modification times
plus the class list, so feature caches are invalidated when a file is added, removed, replaced or relabelled (without
reading the pixels).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from sslcore.errors import DataError


class ArrayImages:
    """Images stored as rows of uint8 arrays (N, H, W, 3), one array per file; keys are ``<file>#<row>``."""

    def __init__(self, arrays: dict[str, Any]) -> None:
        self.arrays = arrays

    @staticmethod
    def key(file: str, row: int) -> str:
        return f"{file}#{row}"

    @staticmethod
    def file_of(key: str) -> str:
        return key.rsplit("#", 1)[0]

    def __call__(self, key: str) -> Any:
        from PIL import Image

        file, row = key.rsplit("#", 1)
        return Image.fromarray(self.arrays[file][int(row)])


@dataclasses.dataclass(frozen=True)
class LabeledImages:
    """An ordered list of (image key, label) pairs with the class names.

    ``root`` is the directory keys are relative to (the split directory of an ImageFolder tree, the dataset root of
    an official layout); ``reader`` opens keys that are not plain image files (None: keys are file paths);
    ``name`` and ``split`` label progress bars and errors.
    """

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]
    reader: ArrayImages | None = dataclasses.field(default=None, compare=False, repr=False)
    name: str = ""
    split: str = ""

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    def select(self, indices: list[int]) -> LabeledImages:
        """The images at ``indices``, in that order (same classes)."""
        return dataclasses.replace(self, samples=tuple(self.samples[i] for i in indices))

    def file_of(self, key: str) -> str:
        """The file holding image ``key`` (the key itself unless the images live in array files)."""
        return self.reader.file_of(key) if self.reader is not None else key

    def open(self, index: int) -> Any:
        """Image ``index`` as an RGB PIL image."""
        from PIL import Image

        key = self.samples[index][0]
        if self.reader is not None:
            return self.reader(key).convert("RGB")
        with open(key, "rb") as handle:
            return Image.open(handle).convert("RGB")

    def dataset(self, transform: Callable[[Any], Any] | None) -> ImageDataset:
        return ImageDataset(self, transform)


def concat(first: LabeledImages, second: LabeledImages, split: str) -> LabeledImages:
    """``first`` then ``second`` (e.g. train + val); both must share root, classes and reader.

    Raises:
        DataError: if the class lists differ.
    """
    if first.classes != second.classes:
        raise DataError(f"{first.root}: the {first.split} and {second.split} splits have different classes")
    arrays = {**(first.reader.arrays if first.reader else {}), **(second.reader.arrays if second.reader else {})}
    reader = ArrayImages(arrays) if arrays else None
    return dataclasses.replace(first, samples=first.samples + second.samples, reader=reader, split=split)


class ImageDataset:
    """A map-style torch dataset over :class:`LabeledImages`: ``ds[i] -> (transform(RGB image), label)``."""

    def __init__(self, images: LabeledImages, transform: Callable[[Any], Any] | None) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images.open(index)
        return (self.transform(image) if self.transform else image), self.images.samples[index][1]


def load_split(root: str | Path, split: str) -> LabeledImages:
    """The ImageFolder split ``<root>/<split>``.

    Raises:
        DataError: if the directory is missing or holds no class directory with images.
    """
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split directory not found (expected <root>/{split}/<class>/<image>)")
    try:
        names, class_to_idx = find_classes(str(split_dir))
    except FileNotFoundError:
        raise DataError(f"{split_dir}: no class directories") from None
    classes = tuple(names)
    # torchvision's listing (sorted walk, case-insensitive extensions); empty class directories are allowed
    samples = make_dataset(str(split_dir), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise DataError(f"{split_dir}: no images (extensions {', '.join(IMG_EXTENSIONS)})")
    return LabeledImages(split_dir, classes, tuple(samples), split=split)


def read_subset_file(path: str | Path) -> list[str]:
    """File names of a SimCLR-style subset list (blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: subset file not found")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: empty subset file")
    return names


def apply_subset(images: LabeledImages, names: list[str], source: str = "subset") -> LabeledImages:
    """Keep the images whose file name is listed, in the split's order; check class prefixes.

    Raises:
        DataError: naming the first listed file that is missing from the split or sits under another class.
    """
    by_name = {os.path.basename(path): i for i, (path, _) in enumerate(images.samples)}
    keep = []
    for name in names:
        if name not in by_name:
            raise DataError(f"{source}: {name!r} is not in {images.root}")
        index = by_name[name]
        cls = images.classes[images.samples[index][1]]
        if name.split("_", 1)[0] != cls:
            raise DataError(f"{source}: {name!r} is stored under class {cls!r}, not its prefix")
        keep.append(index)
    return images.select(sorted(set(keep)))


def resolve_subset(root: str | Path, subset: str) -> Path:
    """A subset given as a path, or as a name looked up in ``<root>/subsets/<name>.txt``."""
    path = Path(subset)
    if path.is_file():
        return path
    candidate = Path(root) / "subsets" / f"{subset}.txt"
    if candidate.is_file():
        return candidate
    raise DataError(f"subset {subset!r}: neither a file nor {candidate}")


def fingerprint(images: LabeledImages) -> str:
    """sha256 over the class list and the sorted (relative key, label, file size, file mtime_ns) of every image."""
    digest = hashlib.sha256()
    digest.update(("\0".join(images.classes) + "\n").encode())
    rows, array_files = [], {}  # array files hold many images: stat each once
    for path, label in images.samples:
        if images.reader is None:
            stat = os.stat(path)
        else:
            file = images.file_of(path)
            stat = array_files[file] if file in array_files else array_files.setdefault(file, os.stat(file))
        rows.append(f"{os.path.relpath(path, images.root)}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}\n")
    for row in sorted(rows):
        digest.update(row.encode())
    # The order of samples matters to consumers (features are returned in this order): hash it too.
    order = "\n".join(os.path.relpath(p, images.root) for p, _ in images.samples)
    digest.update(hashlib.sha256(order.encode()).digest())
    return digest.hexdigest()
