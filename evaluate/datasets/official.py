"""Readers of the transfer datasets in the layouts their maintainers ship (Kornblith et al. 2019's ten datasets).

Each reader is ``read_<name>(root, split) -> LabeledImages`` and never opens an image. ``root`` may be the folder the
archive extracts to (``food-101/``) or the folder holding it. Where ``torchvision.datasets`` parses the official files
with no checksum, its class is used (Food101, StanfordCars, FGVCAircraft, OxfordIIITPet): :func:`from_torchvision`
runs it with a path-returning loader and lets it find its folder name (``food-101``, ``stanford_cars``, ...) through a
temporary symlink when the user's folder is named differently. Readers of our own, and why:

* CIFAR-10/100: torchvision checks the md5 of every batch file against the original archive on every load; ours reads
  the same Python pickles through an unpickler that only rebuilds numpy arrays (no arbitrary code), and the count
  check stands in for the checksum.
* Flowers-102: torchvision checks the md5 of ``imagelabels.mat`` and ``setid.mat``; ours reads the same two files
  (labels 1-based, ``trnid``/``valid``/``tstid``) and takes the class names from torchvision's list.
* DTD: torchvision expects its download folder ``<root>/dtd/dtd/``, not the archive's ``dtd/``; ours reads
  ``labels/{train,val,test}1.txt`` (partition 1) in the archive's layout.
* SUN397: torchvision lists every image and has no split; ours reads the official partition files
  ``Training_01.txt``/``Testing_01.txt`` (Kornblith's split 1).
* Caltech-101: torchvision drops ``BACKGROUND_Google`` and has no split; Kornblith keep the 102 classes and draw 30
  training images per class, the rest being test. Ours draws them with a fixed seed per class (the draw of the
  paper is not published, so numbers differ from it by the split's variance).
* Stanford Cars' combined release (``cars_annos.mat`` + ``car_ims/``, train/test by its ``test`` flag) has no
  torchvision reader; the devkit layout goes through torchvision.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evaluate.datasets.core import ArrayImages, LabeledImages
from sslcore.errors import DataError

CALTECH_TRAIN_PER_CLASS = 30
CALTECH_SEED = 0


# ------------------------------------------------------------------------------------------------ helpers
def require(path: Path, what: str = "") -> Path:
    """``path`` if it exists, else a DataError naming it."""
    if not path.exists():
        raise DataError(f"{path}: not found" + (f" ({what})" if what else ""))
    return path


def locate(root: Path, folder: str, marker: str) -> Path:
    """The dataset folder: ``root`` when it holds ``marker``, else ``root/folder`` when that does."""
    root = Path(os.path.abspath(root))
    for base in (root, root / folder):
        if (base / marker).exists():
            return base
    raise DataError(f"{root}: {marker} not found (expected {root}/{marker} or {root}/{folder}/{marker})")


def from_torchvision(base: Path, folder: str, build: Callable[[str], Any]) -> tuple[list[tuple[str, int]], Any]:
    """(samples as (path under ``base``, label), the torchvision dataset) of a torchvision reader.

    ``build(root)`` constructs the dataset on a ``root`` that holds ``folder``; ``base`` is the user's copy of that
    folder, whatever its name (a temporary symlink named ``folder`` stands in while the files are parsed). Datasets
    with a ``loader`` get one that returns the path, so no image is opened; OxfordIIITPet has none and its parsed
    ``_images``/``_labels`` lists are read.
    """
    with contextlib.ExitStack() as stack:
        if base.name == folder:
            tv_root = base.parent
        else:
            tv_root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            os.symlink(base, tv_root / folder, target_is_directory=True)
        dataset = build(str(tv_root))
        if hasattr(dataset, "loader"):
            dataset.loader = str
            pairs = [dataset[i] for i in range(len(dataset))]
        else:
            pairs = list(zip(dataset._images, dataset._labels))
        prefix = str(tv_root / folder)
        samples = [(os.path.join(base, os.path.relpath(str(path), prefix)), int(label)) for path, label in pairs]
    return samples, dataset


def _images(base: Path, samples: list[tuple[str, int]], classes: Any, name: str, split: str) -> LabeledImages:
    return LabeledImages(base, tuple(str(c) for c in classes), tuple(samples), name=name, split=split)


def load_mat(path: Path) -> dict[str, Any]:
    import scipy.io

    require(path)
    try:
        return scipy.io.loadmat(str(path), squeeze_me=True)
    except Exception as exc:  # scipy raises several types on a damaged file
        raise DataError(f"{path}: not a readable .mat file ({type(exc).__name__}: {exc})") from None


def text_lines(path: Path) -> list[str]:
    return [line.strip() for line in require(path).read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------ torchvision-read
def read_food101(root: Path, split: str) -> LabeledImages:
    """Food-101 (``food-101.tar.gz``): ``meta/{train,test}.json`` list ``<class>/<id>``, images in ``images/``."""
    from torchvision.datasets import Food101

    base = locate(root, "food-101", "meta/train.json")
    require(base / "meta" / f"{split}.json")
    require(base / "images")
    samples, ds = from_torchvision(base, "food-101", lambda r: Food101(r, split=split))
    return _images(base, samples, ds.classes, "food101", split)


def read_cars(root: Path, split: str) -> LabeledImages:
    """Stanford Cars: the devkit release through torchvision, or the combined ``cars_annos.mat`` release."""
    from torchvision.datasets import StanfordCars

    root = Path(os.path.abspath(root))
    for base in (root, root / "stanford_cars"):
        if (base / "cars_annos.mat").exists():
            return _read_cars_combined(base, split)
    base = locate(root, "stanford_cars", "devkit/cars_meta.mat")
    if split == "train":
        needed = [(base / "devkit" / "cars_train_annos.mat", ""), (base / "cars_train", "")]
    else:
        needed = [(base / "cars_test_annos_withlabels.mat", "the test labels, released separately")]
        needed.append((base / "cars_test", ""))
    for path, what in needed:
        require(path, what)
    samples, ds = from_torchvision(base, "stanford_cars", lambda r: StanfordCars(r, split=split))
    return _images(base, samples, ds.classes, "cars", split)


def _read_cars_combined(base: Path, split: str) -> LabeledImages:
    """``cars_annos.mat``: ``annotations`` (relative_im_path, class 1-based, test flag) and ``class_names``."""
    mat = load_mat(base / "cars_annos.mat")
    want = 1 if split == "test" else 0
    samples = [
        (str(base / str(a["relative_im_path"])), int(a["class"]) - 1)
        for a in np.atleast_1d(mat["annotations"])
        if int(a["test"]) == want
    ]
    return _images(base, samples, np.atleast_1d(mat["class_names"]).tolist(), "cars", split)


def read_aircraft(root: Path, split: str) -> LabeledImages:
    """FGVC-Aircraft 2013b, variant level: ``data/images_variant_<split>.txt`` and ``data/variants.txt``."""
    from torchvision.datasets import FGVCAircraft

    base = locate(root, "fgvc-aircraft-2013b", "data/variants.txt")
    require(base / "data" / f"images_variant_{split}.txt")
    require(base / "data" / "images")
    samples, ds = from_torchvision(
        base, "fgvc-aircraft-2013b", lambda r: FGVCAircraft(r, split=split, annotation_level="variant")
    )
    return _images(base, samples, ds.classes, "aircraft", split)


def read_pets(root: Path, split: str) -> LabeledImages:
    """Oxford-IIIT Pet: ``annotations/{trainval,test}.txt`` (``<image> <class id 1..37> <species> <breed id>``)."""
    from torchvision.datasets import OxfordIIITPet

    base = locate(root, "oxford-iiit-pet", f"annotations/{split}.txt")
    require(base / "images")
    samples, ds = from_torchvision(base, "oxford-iiit-pet", lambda r: OxfordIIITPet(r, split=split))
    # torchvision names the classes present in this split, in label order: they must be all of 0..max.
    present = sorted({label for _, label in samples})
    if present != list(range(len(present))):
        missing = sorted(set(range(max(present, default=-1) + 1)) - set(present))
        raise DataError(f"{base / 'annotations' / f'{split}.txt'}: no image of class id {missing[0] + 1}")
    return _images(base, samples, ds.classes, "pets", split)


# ---------------------------------------------------------------------------------------------- our readers
class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a pickle naming any other global is refused.

    ``_codecs.encode`` is how Python 3 writes bytes in protocol 2 (the Python 2 originals need none of these).
    """

    ALLOWED = {
        ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    require(path)
    try:
        with open(path, "rb") as handle:
            return _ArraysOnly(handle, encoding="latin1").load()
    except Exception as exc:
        raise DataError(f"{path}: not a CIFAR python pickle ({type(exc).__name__}: {exc})") from None


CIFAR = {
    # name: (folder, train files, test files, label key, meta file, class-name key)
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        "batches.meta",
        "label_names",
    ),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "fine_labels", "meta", "fine_label_names"),
}


def read_cifar(name: str, root: Path, split: str) -> LabeledImages:
    """CIFAR-10/100 python version: pickled dicts with ``data`` (N, 3072) uint8 rows (R, G, B planes of 32x32)."""
    folder, train_files, test_files, label_key, meta_file, names_key = CIFAR[name]
    base = locate(root, folder, meta_file)
    classes = _unpickle(base / meta_file).get(names_key)
    if classes is None:
        raise DataError(f"{base / meta_file}: no {names_key!r} entry")
    arrays, samples = {}, []
    for file in train_files if split == "train" else test_files:
        batch = _unpickle(base / file)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"{base / file}: expected 'data' and {label_key!r} entries")
        data = np.asarray(batch["data"], dtype=np.uint8)
        key = str(base / file)
        arrays[key] = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        samples += [(ArrayImages.key(key, row), int(y)) for row, y in enumerate(batch[label_key])]
    return LabeledImages(base, tuple(classes), tuple(samples), reader=ArrayImages(arrays), name=name, split=split)


def read_flowers(root: Path, split: str) -> LabeledImages:
    """Oxford Flowers-102: ``jpg/image_%05d.jpg``, ``imagelabels.mat`` (1-based) and ``setid.mat``."""
    from torchvision.datasets import Flowers102

    base = locate(root, "flowers-102", "imagelabels.mat")
    labels = np.atleast_1d(load_mat(base / "imagelabels.mat")["labels"]).astype(int)
    ids = np.atleast_1d(load_mat(base / "setid.mat")[{"train": "trnid", "val": "valid", "test": "tstid"}[split]])
    require(base / "jpg")
    if len(ids) and (ids.max() > len(labels) or ids.min() < 1):
        raise DataError(f"{base / 'setid.mat'}: image id {int(ids.max())} has no label in imagelabels.mat")
    samples = [(str(base / "jpg" / f"image_{int(i):05d}.jpg"), int(labels[int(i) - 1]) - 1) for i in ids]
    return _images(base, samples, Flowers102.classes, "flowers", split)


def read_dtd(root: Path, split: str) -> LabeledImages:
    """DTD r1.0.1, partition 1: ``labels/<split>1.txt`` lists ``<class>/<file>`` under ``images/``."""
    base = locate(root, "dtd", "labels/train1.txt")
    images = require(base / "images")
    classes = sorted(d.name for d in images.iterdir() if d.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    listing = base / "labels" / f"{split}1.txt"
    for line in text_lines(listing):
        cls = line.split("/", 1)[0]
        if cls not in index:
            raise DataError(f"{listing}: {line!r} names class {cls!r}, which has no folder in {images}")
        samples.append((str(images / line), index[cls]))
    return _images(base, samples, classes, "dtd", split)


def read_sun397(root: Path, split: str) -> LabeledImages:
    """SUN397 with partition 01: ``ClassName.txt`` (``/a/abbey``), ``Training_01.txt``/``Testing_01.txt``."""
    base = locate(root, "SUN397", "ClassName.txt")
    file = {"train": "Training_01.txt", "test": "Testing_01.txt"}[split]
    candidates = [base / file, base / "Partitions" / file, base.parent / file, base.parent / "Partitions" / file]
    listing = next((c for c in candidates if c.is_file()), None)
    if listing is None:
        raise DataError(f"{candidates[0]}: not found (the partition files of Partitions.zip; also looked beside it)")
    keys = text_lines(base / "ClassName.txt")
    index = {k: i for i, k in enumerate(keys)}
    samples = []
    for line in text_lines(listing):
        cls = line.rsplit("/", 1)[0]
        if cls not in index:
            raise DataError(f"{listing}: {line!r} is in class {cls!r}, which ClassName.txt does not list")
        samples.append((str(base / line.lstrip("/")), index[cls]))
    classes = [k.split("/", 2)[2] if k.count("/") >= 2 else k.strip("/") for k in keys]
    return _images(base, samples, classes, "sun397", split)


def read_caltech101(root: Path, split: str) -> LabeledImages:
    """Caltech-101 (102 folders incl. ``BACKGROUND_Google``): 30 seeded training images per class, the rest test."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    root = Path(os.path.abspath(root))
    candidates = [root, root / "101_ObjectCategories", root / "caltech101" / "101_ObjectCategories"]
    base = next((c for c in candidates if c.name == "101_ObjectCategories" and c.is_dir()), None)
    if base is None:
        raise DataError(f"{candidates[1]}: not found (the folder 101_ObjectCategories.tar.gz extracts to)")
    classes, class_to_idx = find_classes(str(base))
    samples = make_dataset(str(base), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    by_class: dict[int, list[tuple[str, int]]] = {}
    for path, label in samples:
        by_class.setdefault(label, []).append((path, label))
    chosen = []
    for label, items in sorted(by_class.items()):
        order = np.random.default_rng([CALTECH_SEED, label]).permutation(len(items))
        part = order[:CALTECH_TRAIN_PER_CLASS] if split == "train" else order[CALTECH_TRAIN_PER_CLASS:]
        chosen += [items[i] for i in sorted(part)]
    return _images(base, chosen, classes, "caltech101", split)
