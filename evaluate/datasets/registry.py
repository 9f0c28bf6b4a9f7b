"""The dataset registry: name -> reader, official splits, protocol roles, metric, class and image counts.

:data:`DATASETS` holds the ten transfer datasets of Kornblith et al. 2019 (the BAM transfer table uses seven),
ImageNet-1k and iNaturalist 2018/2019. Each :class:`DatasetSpec` says which split a protocol trains on, selects on
and reports on (the Kornblith rule: choose hyper-parameters on ``val``, refit on ``train`` + ``val``, report on
``test``; without an official ``val`` the protocol holds part of ``train`` out), the metric the linear-transfer
literature reports for it (mean per-class accuracy for Aircraft, Pets, Flowers and Caltech-101, top-1 otherwise), and
the expected numbers of classes and images, checked on every load.

Entry points: :func:`load_images` (a split as :class:`~evaluate.datasets.core.LabeledImages`), :func:`build_dataset`
(a map-style torch dataset ``ds[i] -> (transform(image), label)``, what a training loop such as fine-tuning wants),
:func:`parse_data_arg` (``food101:/data/food-101`` on the command line). A name outside the registry is an ImageFolder
tree ``<root>/<split>/<class>/<image>``.

Counts are those of the official releases (dataset pages and papers; the protocol notes list the transfer splits).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from evaluate.datasets import large, official
from evaluate.datasets.core import ImageDataset, LabeledImages, concat, load_split
from sslcore.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset in its official layout.

    Attributes:
        name: registry name; the records' dataset name.
        title: human name.
        read: ``read(root, split) -> LabeledImages`` for every split in ``splits``.
        splits: the official splits the reader accepts.
        train, val, test: the protocol roles (``val`` None: no official validation split).
        metric: the linear-transfer metric ("top1" or "mean_per_class"); fine-tuning papers report top-1.
        num_classes: expected class count.
        counts: expected images per split (``trainval`` = train + val where not official).
        archives: the files as downloaded, for errors and docs.
        reader: which code parses the files ("torchvision.datasets.X" or "sslbench").
        listed: images come from an index file, so each listed file is checked to exist.
    """

    name: str
    title: str
    read: Callable[[Path, str], LabeledImages]
    splits: tuple[str, ...]
    train: str
    val: str | None
    test: str
    metric: str
    num_classes: int
    counts: Mapping[str, int]
    archives: tuple[str, ...]
    reader: str
    listed: bool = True

    @property
    def fit(self) -> str:
        """The split a protocol without a selection step trains on: train + val when there is an official val."""
        return "trainval" if self.val else self.train

    def expected_count(self, split: str) -> int | None:
        if split in self.counts:
            return self.counts[split]
        if split == "trainval" and self.val and self.train in self.counts and self.val in self.counts:
            return self.counts[self.train] + self.counts[self.val]
        return None


def _spec(name: str, title: str, read: Callable, splits: tuple[str, ...], roles: tuple, **kw: Any) -> DatasetSpec:
    train, val, test = roles
    return DatasetSpec(name, title, read, splits, train, val, test, **kw)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "food101",
            "Food-101",
            official.read_food101,
            ("train", "test"),
            ("train", None, "test"),
            metric="top1",
            num_classes=101,
            counts={"train": 75750, "test": 25250},
            archives=("food-101.tar.gz",),
            reader="torchvision.datasets.Food101",
        ),
        _spec(
            "cifar10",
            "CIFAR-10",
            functools.partial(official.read_cifar, "cifar10"),
            ("train", "test"),
            ("train", None, "test"),
            metric="top1",
            num_classes=10,
            counts={"train": 50000, "test": 10000},
            archives=("cifar-10-python.tar.gz",),
            reader="sslbench",
            listed=False,
        ),
        _spec(
            "cifar100",
            "CIFAR-100",
            functools.partial(official.read_cifar, "cifar100"),
            ("train", "test"),
            ("train", None, "test"),
            metric="top1",
            num_classes=100,
            counts={"train": 50000, "test": 10000},
            archives=("cifar-100-python.tar.gz",),
            reader="sslbench",
            listed=False,
        ),
        _spec(
            "cars",
            "Stanford Cars",
            official.read_cars,
            ("train", "test"),
            ("train", None, "test"),
            metric="top1",
            num_classes=196,
            counts={"train": 8144, "test": 8041},
            archives=(
                "car_devkit.tgz",
                "cars_train.tgz",
                "cars_test.tgz",
                "cars_test_annos_withlabels.mat",
                "or: car_ims.tgz + cars_annos.mat",
            ),
            reader="torchvision.datasets.StanfordCars (devkit); sslbench (cars_annos.mat)",
        ),
        _spec(
            "aircraft",
            "FGVC-Aircraft (variant)",
            official.read_aircraft,
            ("train", "val", "trainval", "test"),
            ("train", "val", "test"),
            metric="mean_per_class",
            num_classes=100,
            counts={"train": 3334, "val": 3333, "trainval": 6667, "test": 3333},
            archives=("fgvc-aircraft-2013b.tar.gz",),
            reader="torchvision.datasets.FGVCAircraft",
        ),
        _spec(
            "pets",
            "Oxford-IIIT Pet",
            official.read_pets,
            ("trainval", "test"),
            ("trainval", None, "test"),
            metric="mean_per_class",
            num_classes=37,
            counts={"trainval": 3680, "test": 3669},
            archives=("images.tar.gz", "annotations.tar.gz"),
            reader="torchvision.datasets.OxfordIIITPet",
        ),
        _spec(
            "flowers",
            "Oxford Flowers-102",
            official.read_flowers,
            ("train", "val", "test"),
            ("train", "val", "test"),
            metric="mean_per_class",
            num_classes=102,
            counts={"train": 1020, "val": 1020, "test": 6149},
            archives=("102flowers.tgz", "imagelabels.mat", "setid.mat"),
            reader="sslbench",
        ),
        _spec(
            "dtd",
            "Describable Textures (partition 1)",
            official.read_dtd,
            ("train", "val", "test"),
            ("train", "val", "test"),
            metric="top1",
            num_classes=47,
            counts={"train": 1880, "val": 1880, "test": 1880},
            archives=("dtd-r1.0.1.tar.gz",),
            reader="sslbench",
        ),
        _spec(
            "sun397",
            "SUN397 (partition 01)",
            official.read_sun397,
            ("train", "test"),
            ("train", None, "test"),
            metric="top1",
            num_classes=397,
            counts={"train": 19850, "test": 19850},
            archives=("SUN397.tar.gz", "Partitions.zip"),
            reader="sslbench",
        ),
        _spec(
            "caltech101",
            "Caltech-101 (102 classes, 30 train per class)",
            official.read_caltech101,
            ("train", "test"),
            ("train", None, "test"),
            metric="mean_per_class",
            num_classes=102,
            counts={"train": 3060, "test": 6084},
            archives=("caltech-101.zip",),
            reader="sslbench",
            listed=False,
        ),
        _spec(
            "imagenet",
            "ImageNet-1k (ILSVRC-2012)",
            large.read_imagenet,
            ("train", "val"),
            ("train", None, "val"),
            metric="top1",
            num_classes=1000,
            counts={"train": 1281167, "val": 50000},
            archives=(
                "ILSVRC2012_img_train.tar",
                "ILSVRC2012_img_val.tar",
                "ILSVRC2012_devkit_t12.tar.gz",
                "or Kaggle: ILSVRC/ + LOC_val_solution.csv",
            ),
            reader="sslbench",
            listed=False,  # images are listed from the folders themselves
        ),
        _spec(
            "inat2018",
            "iNaturalist 2018",
            functools.partial(large.read_inat, "2018"),
            ("train", "val"),
            ("train", None, "val"),
            metric="top1",
            num_classes=8142,
            counts={"train": 437513, "val": 24426},
            archives=("train_val2018.tar.gz", "train2018.json.tar.gz", "val2018.json.tar.gz"),
            reader="sslbench",
        ),
        _spec(
            "inat2019",
            "iNaturalist 2019",
            functools.partial(large.read_inat, "2019"),
            ("train", "val"),
            ("train", None, "val"),
            metric="top1",
            num_classes=1010,
            counts={"train": 265213, "val": 3030},
            archives=("train_val2019.tar.gz", "train2019.json.tar.gz", "val2019.json.tar.gz"),
            reader="sslbench",
        ),
    )
}

ALIASES = {
    "food-101": "food101",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "stanford_cars": "cars",
    "stanfordcars": "cars",
    "fgvc_aircraft": "aircraft",
    "fgvcaircraft": "aircraft",
    "oxford_pets": "pets",
    "oxfordiiitpet": "pets",
    "flowers102": "flowers",
    "caltech": "caltech101",
    "imagenet1k": "imagenet",
    "inat18": "inat2018",
    "inat19": "inat2019",
}


def get_spec(name: str | None) -> DatasetSpec | None:
    """The registry entry of ``name`` (or an alias, case-insensitive); None for any other name."""
    if not name:
        return None
    key = name.lower()
    return DATASETS.get(ALIASES.get(key, key))


def require_spec(name: str) -> DatasetSpec:
    spec = get_spec(name)
    if spec is None:
        raise ConfigError(f"dataset {name!r}: not in the registry; known: {', '.join(DATASETS)}")
    return spec


def metric_of(name: str | None) -> str:
    """The dataset's linear-transfer metric by its name ("top1" for any name outside the registry)."""
    spec = get_spec(name)
    return spec.metric if spec else "top1"


def parse_data_arg(text: str) -> tuple[str | None, str]:
    """``NAME:PATH`` with a registry name -> (canonical name, PATH); anything else -> (None, text)."""
    head, sep, tail = text.partition(":")
    if sep and tail:
        spec = get_spec(head)
        if spec is not None:
            return spec.name, tail
    return None, text


def load_images(spec: DatasetSpec | str, root: str | Path, split: str, *, check_counts: bool = True) -> LabeledImages:
    """Split ``split`` of the dataset at ``root``, checked: split name, listed files, class and image counts.

    ``split="trainval"`` is the union of train and val for datasets with an official val split.

    Raises:
        DataError: naming the missing file, the wrong count, or the unknown split.
    """
    spec = require_spec(spec) if isinstance(spec, str) else spec
    union = split == "trainval" and "trainval" not in spec.splits and spec.val is not None
    if split not in spec.splits and not union:
        valid = [*spec.splits, *(["trainval"] if spec.val and "trainval" not in spec.splits else [])]
        raise DataError(f"{spec.name}: no split {split!r}; its splits are {', '.join(valid)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: {spec.name} root directory not found")
    if union:
        images = concat(
            load_images(spec, root, spec.train, check_counts=check_counts),
            load_images(spec, root, spec.val, check_counts=check_counts),
            "trainval",
        )
    else:
        images = spec.read(root, split)
        if spec.listed:
            missing = next((p for p, _ in images.samples if not os.path.isfile(p)), None)
            if missing is not None:
                raise DataError(f"{missing}: listed in the {spec.name} {split} split but not found")
    if check_counts:
        check_count(spec, images, split)
    return images


def check_count(spec: DatasetSpec, images: LabeledImages, split: str) -> None:
    """Class and image counts against the official release (a partial copy fails: ``data.check_counts=false``)."""
    hint = "a partial or modified copy? data.check_counts=false accepts it"
    if len(images.classes) != spec.num_classes:
        raise DataError(
            f"{images.root}: {spec.name} has {len(images.classes)} classes, expected {spec.num_classes} ({hint})"
        )
    expected = spec.expected_count(split)
    if expected is not None and len(images) != expected:
        raise DataError(f"{images.root}: {spec.name} {split} has {len(images)} images, expected {expected} ({hint})")


def build_dataset(
    spec: DatasetSpec | str,
    root: str | Path,
    split: str,
    transform: Callable[[Any], Any] | None = None,
    *,
    check_counts: bool = True,
) -> ImageDataset:
    """A map-style torch dataset over one split: ``ds[i] -> (transform(RGB PIL image), label)``.

    ``ds.images`` is the :class:`~evaluate.datasets.core.LabeledImages` (classes, samples, fingerprint material).
    For a training loop (fine-tuning): ``build_dataset("flowers", root, spec.fit, train_tf)`` and
    ``build_dataset("flowers", root, spec.test, eval_tf)`` with ``spec = require_spec("flowers")``.
    """
    return load_images(spec, root, split, check_counts=check_counts).dataset(transform)


@dataclasses.dataclass(frozen=True)
class DataPlan:
    """Where a protocol's images come from: the dataset, its root, the split of each role, the metric.

    ``spec`` None (or ``imagefolder``) means an ImageFolder tree ``<root>/<split>/<class>/<image>``. ``fit`` is the
    split a protocol without a selection step trains on: ``trainval`` (train + val) when there is a val split.
    """

    name: str
    root: str
    spec: DatasetSpec | None
    imagefolder: bool
    train: str
    val: str | None
    test: str
    metric: str
    check_counts: bool = True

    @property
    def fit(self) -> str:
        return "trainval" if self.val else self.train

    def load(self, split: str) -> LabeledImages:
        """One split (``trainval``: the union of the train and val roles unless the dataset ships one)."""
        if not self.imagefolder:
            assert self.spec is not None
            return load_images(self.spec, self.root, split, check_counts=self.check_counts)
        if split == "trainval" and self.val and not (Path(self.root) / "trainval").is_dir():
            return concat(self.load(self.train), self.load(self.val), "trainval")
        return dataclasses.replace(load_split(self.root, split), name=self.name)


def plan_data(
    name: str,
    root: str,
    *,
    layout: str = "auto",
    train: str | None = None,
    val: str | None = None,
    test: str | None = None,
    check_counts: bool = True,
) -> DataPlan:
    """Resolve a dataset selection: a registry name in its official layout (``layout="auto"``), or an ImageFolder.

    Unset roles take the dataset's own (ImageFolder: train ``train``, no val, test ``val``); the metric is the
    dataset's (ImageFolder trees of a registry name keep its metric; other names use top-1).

    Raises:
        ConfigError: ``layout="official"`` with a name outside the registry, or an unknown layout.
    """
    if layout not in ("auto", "official", "imagefolder"):
        raise ConfigError(f"data.layout={layout!r}: expected auto, official or imagefolder")
    spec = get_spec(name)
    if layout == "official" and spec is None:
        raise ConfigError(f"data.layout=official: {name!r} is not in the registry; known: {', '.join(DATASETS)}")
    imagefolder = spec is None or layout == "imagefolder"
    if spec is not None:
        roles = (train or spec.train, val if val is not None or imagefolder else spec.val, test or spec.test)
    else:
        roles = (train or "train", val, test or "val")
    return DataPlan(
        name=spec.name if spec else name,
        root=root,
        spec=spec,
        imagefolder=imagefolder,
        train=roles[0],
        val=roles[1] or None,
        test=roles[2],
        metric=spec.metric if spec else "top1",
        check_counts=check_counts,
    )
