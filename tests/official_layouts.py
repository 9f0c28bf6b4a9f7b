"""Miniatures of the real datasets in their official layouts: same file names, formats and folders, tiny images.

Each ``write_<name>(root) -> Path`` writes a copy under ``root`` as the archives extract (plus the folder the user
would create for releases shipped as several archives) and returns the path a user gives to ``--data``. Images are
small non-square JPEGs whose colour encodes the class. Where the official index files list every class (Cars' meta,
Aircraft's variants.txt, CIFAR's meta, SUN397's ClassName.txt), the full list is written, so class counts match the
real release and only the image counts are miniature. ``EXPECTED[name]`` gives, per split, the labels in order.
"""

from __future__ import annotations

import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

EXPECTED: dict[str, dict[str, list[int]]] = {}


def jpg(path: Path, label: int, size: tuple[int, int] = (11, 7)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = ((37 * label) % 256, (91 * label + 40) % 256, (53 * label + 90) % 256)
    Image.new("RGB", size, color).save(path, quality=95)


def _struct(rows: list[dict], fields: list[str]) -> np.ndarray:
    """A 1 x N MATLAB struct array (what the .mat files of Cars, ImageNet's devkit hold)."""
    out = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        out[0, i] = tuple(row[f] for f in fields)
    return out


def _cell(strings: list[str]) -> np.ndarray:
    out = np.empty((1, len(strings)), dtype=object)
    out[0, :] = strings
    return out


def write_food101(root: Path) -> Path:
    base = root / "food-101"
    classes = ["apple_pie", "baby_back_ribs", "ramen"]
    split = {"train": {c: [f"{c}/{100 + i}" for i in range(2)] for c in classes}, "test": {}}
    split["test"] = {c: [f"{c}/{200 + i}" for i in range(1 + k)] for k, c in enumerate(classes)}
    for name, entries in split.items():
        for k, c in enumerate(classes):
            for entry in entries[c]:
                jpg(base / "images" / f"{entry}.jpg", k)
        (base / "meta").mkdir(parents=True, exist_ok=True)
        (base / "meta" / f"{name}.json").write_text(json.dumps(entries))
        (base / "meta" / f"{name}.txt").write_text("".join(f"{e}\n" for c in classes for e in entries[c]))
    (base / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    EXPECTED["food101"] = {"train": [0, 0, 1, 1, 2, 2], "test": [0, 1, 1, 2, 2, 2]}
    return base


def _cifar_rows(labels: list[int]) -> np.ndarray:
    """(N, 3072) rows: the R plane is 2 * label, G 100, B 200 + row index (so rows are distinguishable)."""
    data = np.zeros((len(labels), 3, 32, 32), dtype=np.uint8)
    for i, y in enumerate(labels):
        data[i, 0], data[i, 1], data[i, 2] = 2 * y, 100, 200 + i
    return data.reshape(len(labels), 3072)


def _dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_cifar10(root: Path) -> Path:
    base = root / "cifar-10-batches-py"
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump(base / "batches.meta", {"num_cases_per_batch": 10000, "label_names": names, "num_vis": 3072})
    train = []
    for b in range(1, 6):
        labels = [b % 10, (b + 3) % 10]
        train += labels
        _dump(
            base / f"data_batch_{b}",
            {
                "batch_label": f"training batch {b} of 5",
                "labels": labels,
                "data": _cifar_rows(labels),
                "filenames": [f"img_{b}_{i}.png" for i in range(len(labels))],
            },
        )
    test = [9, 0, 4]
    _dump(
        base / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": test,
            "data": _cifar_rows(test),
            "filenames": ["t0.png", "t1.png", "t2.png"],
        },
    )
    (base / "readme.html").write_text("<html></html>")
    EXPECTED["cifar10"] = {"train": train, "test": test}
    return root


def write_cifar100(root: Path) -> Path:
    base = root / "cifar-100-python"
    fine = [f"fine_{i:02d}" for i in range(100)]
    _dump(base / "meta", {"fine_label_names": fine, "coarse_label_names": [f"coarse_{i}" for i in range(20)]})
    for split, labels in (("train", [0, 99, 42, 42]), ("test", [7, 99])):
        _dump(
            base / split,
            {
                "batch_label": split,
                "fine_labels": labels,
                "coarse_labels": [y // 5 for y in labels],
                "data": _cifar_rows(labels),
                "filenames": [f"{split}_{i}.png" for i in range(len(labels))],
            },
        )
    EXPECTED["cifar100"] = {"train": [0, 99, 42, 42], "test": [7, 99]}
    return base


CAR_NAMES = [f"Make{i:03d} Model {2000 + i % 13}" for i in range(196)]
_BOX = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"]


def write_cars(root: Path) -> Path:
    """The devkit release (car_devkit.tgz, cars_train.tgz, cars_test.tgz, cars_test_annos_withlabels.mat)."""
    base = root / "my_cars"  # any folder name: torchvision's stanford_cars/ is not required
    labels = {"train": [0, 195, 7, 0], "test": [195, 7]}
    (base / "devkit").mkdir(parents=True)
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": _cell(CAR_NAMES)})
    for split, ys in labels.items():
        rows = []
        for i, y in enumerate(ys, 1):
            jpg(base / f"cars_{split}" / f"{i:05d}.jpg", y)
            rows.append(
                {"bbox_x1": 1, "bbox_y1": 1, "bbox_x2": 9, "bbox_y2": 6, "class": y + 1, "fname": f"{i:05d}.jpg"}
            )
        mat = base / ("devkit/cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat")
        scipy.io.savemat(mat, {"annotations": _struct(rows, [*_BOX, "class", "fname"])})
    EXPECTED["cars"] = labels
    return base


def write_cars_combined(root: Path) -> Path:
    """The combined release: car_ims.tgz (car_ims/000001.jpg ...) + cars_annos.mat with a test flag."""
    base = root / "stanford_cars"
    flags = [(3, 0), (3, 1), (0, 0), (195, 1), (195, 0)]
    rows = []
    for i, (y, test) in enumerate(flags, 1):
        jpg(base / "car_ims" / f"{i:06d}.jpg", y)
        rows.append(
            {
                "relative_im_path": f"car_ims/{i:06d}.jpg",
                "bbox_x1": 1,
                "bbox_y1": 1,
                "bbox_x2": 9,
                "bbox_y2": 6,
                "class": y + 1,
                "test": test,
            }
        )
    scipy.io.savemat(
        base / "cars_annos.mat",
        {"annotations": _struct(rows, ["relative_im_path", *_BOX, "class", "test"]), "class_names": _cell(CAR_NAMES)},
    )
    EXPECTED["cars_combined"] = {"train": [3, 0, 195], "test": [3, 195]}
    return base


AIRCRAFT_VARIANTS = [
    f"{m}-{i}00" for m in ("707", "A3", "BAE", "Cessna 17", "DC") for i in range(1, 21)
]  # names with spaces too


def write_aircraft(root: Path) -> Path:
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(AIRCRAFT_VARIANTS) + "\n")
    (data / "families.txt").write_text("707\nA3\n")
    (data / "manufacturers.txt").write_text("Boeing\nAirbus\n")
    splits = {"train": [0, 65, 99], "val": [65, 99], "test": [0, 0, 99]}
    image_id = 1000000
    for split, ys in splits.items():
        lines = []
        for y in ys:
            image_id += 1
            jpg(data / "images" / f"{image_id}.jpg", y, size=(13, 9))
            lines.append(f"{image_id} {AIRCRAFT_VARIANTS[y]}\n")
        (data / f"images_variant_{split}.txt").write_text("".join(lines))
    trainval = (data / "images_variant_train.txt").read_text() + (data / "images_variant_val.txt").read_text()
    (data / "images_variant_trainval.txt").write_text(trainval)
    EXPECTED["aircraft"] = {**splits, "trainval": splits["train"] + splits["val"]}
    return root / "fgvc-aircraft-2013b"


PET_BREEDS = [("Abyssinian", 1), ("american_bulldog", 2), ("Birman", 1)]


def write_pets(root: Path) -> Path:
    base = root / "pets"  # images.tar.gz and annotations.tar.gz extracted side by side into a folder of any name
    files = {"trainval": [(0, 1), (1, 1), (2, 1), (2, 2)], "test": [(0, 9), (1, 9), (2, 9)]}
    for split, items in files.items():
        lines = []
        for cls, n in items:
            breed, species = PET_BREEDS[cls]
            jpg(base / "images" / f"{breed}_{n}.jpg", cls)
            lines.append(f"{breed}_{n} {cls + 1} {species} {cls + 1}\n")
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"{split}.txt").write_text("".join(lines))
    EXPECTED["pets"] = {split: [c for c, _ in items] for split, items in files.items()}
    return base


def write_flowers(root: Path) -> Path:
    base = root / "flowers"
    labels = [1, 2, 102, 1, 2, 102, 1, 1, 102]  # image_00001 .. image_00009, 1-based class ids
    for i, y in enumerate(labels, 1):
        jpg(base / "jpg" / f"image_{i:05d}.jpg", y - 1)
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    ids = {"trnid": [1, 2, 3], "valid": [4, 5, 6], "tstid": [9, 8, 7]}
    scipy.io.savemat(base / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in ids.items()})
    EXPECTED["flowers"] = {"train": [0, 1, 101], "val": [0, 1, 101], "test": [101, 0, 0]}
    return base


def write_dtd(root: Path) -> Path:
    base = root / "dtd"
    classes = ["banded", "blotchy", "zigzagged"]
    splits = {"train": [0, 1, 2], "val": [2, 1], "test": [0, 0, 2]}
    n = 0
    for split, ys in splits.items():
        lines = []
        for y in ys:
            n += 1
            name = f"{classes[y]}/{classes[y]}_{n:04d}.jpg"
            jpg(base / "images" / name, y)
            lines.append(name + "\n")
        for p in range(1, 11):  # the archive ships ten partitions
            (base / "labels").mkdir(parents=True, exist_ok=True)
            (base / "labels" / f"{split}{p}.txt").write_text("".join(lines if p == 1 else lines[::-1]))
    (base / "imdb").mkdir()
    EXPECTED["dtd"] = splits
    return base


SUN_CLASSES = ["/a/abbey"] + [f"/a/apartment_building/outdoor{'' if i == 0 else i}" for i in range(395)] + ["/z/zoo"]


def write_sun397(root: Path) -> Path:
    base = root / "SUN397"
    base.mkdir(parents=True)
    (base / "ClassName.txt").write_text("\n".join(SUN_CLASSES) + "\n")
    parts = root / "Partitions"
    parts.mkdir()
    splits = {"train": [0, 1, 396], "test": [396, 0]}
    for split, ys in splits.items():
        lines = []
        for i, y in enumerate(ys):
            rel = f"{SUN_CLASSES[y]}/sun_{split}{i:03d}.jpg"
            jpg(base / rel.lstrip("/"), y)
            lines.append(rel + "\n")
        (parts / ("Training_01.txt" if split == "train" else "Testing_01.txt")).write_text("".join(lines))
    (parts / "ClassName.txt").write_text("\n".join(SUN_CLASSES) + "\n")
    EXPECTED["sun397"] = splits
    return root


CALTECH = {"BACKGROUND_Google": 31, "Faces": 32, "accordion": 35}


def write_caltech101(root: Path) -> Path:
    base = root / "caltech-101" / "101_ObjectCategories"
    for k, (cls, n) in enumerate(CALTECH.items()):
        for i in range(1, n + 1):
            jpg(base / cls / f"image_{i:04d}.jpg", k, size=(5, 4))
    return root / "caltech-101"


# ImageNet: ILSVRC2012_IDs are not in wnid order in the real devkit; neither are they here.
IMAGENET_SYNSETS = [(1, "n02119789"), (2, "n01440764"), (3, "n04592741"), (1001, "n00001740")]
IMAGENET_VAL = ["n04592741", "n01440764", "n02119789", "n01440764", "n04592741"]


def _imagenet_train(train: Path) -> None:
    for k, wnid in enumerate(sorted(w for _, w in IMAGENET_SYNSETS[:3])):
        for i in range(2):
            jpg(train / wnid / f"{wnid}_{i}.JPEG", k, size=(12, 9))


def write_imagenet(root: Path, labels: str = "devkit") -> Path:
    """train/<wnid>/, flat val/, labels from the extracted devkit, its .tar.gz, or the Kaggle CSV (Kaggle layout)."""
    base = root / "imagenet"
    data = base / "ILSVRC" / "Data" / "CLS-LOC" if labels == "csv" else base
    _imagenet_train(data / "train")
    classes = sorted(w for _, w in IMAGENET_SYNSETS[:3])
    for i, wnid in enumerate(IMAGENET_VAL, 1):
        jpg(data / "val" / f"ILSVRC2012_val_{i:08d}.JPEG", classes.index(wnid), size=(9, 12))
    if labels == "csv":
        rows = [f"ILSVRC2012_val_{i:08d},{w} 1 2 8 9 {w} 0 0 5 5 " for i, w in enumerate(IMAGENET_VAL, 1)]
        (base / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows[::-1]) + "\n")
        (base / "LOC_synset_mapping.txt").write_text("".join(f"{w} name of {w}\n" for w in classes))
        return base
    devkit = base / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    fields = [
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    rows = [
        {
            "ILSVRC2012_ID": i,
            "WNID": w,
            "words": f"words {w}",
            "gloss": "gloss",
            "num_children": 3 if i > 1000 else 0,
            "children": np.array([1, 2, 3]) if i > 1000 else np.zeros(0),
            "wordnet_height": 0,
            "num_train_images": 2,
        }
        for i, w in IMAGENET_SYNSETS
    ]
    scipy.io.savemat(devkit / "meta.mat", {"synsets": _struct(rows, fields).T})
    by_wnid = {w: i for i, w in IMAGENET_SYNSETS}
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{by_wnid[w]}\n" for w in IMAGENET_VAL))
    if labels == "archive":
        with tarfile.open(base / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
            tar.add(base / "ILSVRC2012_devkit_t12", arcname="ILSVRC2012_devkit_t12")
        for f in sorted(devkit.parent.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        devkit.parent.rmdir()
    return base


EXPECTED["imagenet"] = {
    "train": [0, 0, 1, 1, 2, 2],
    "val": [sorted(w for _, w in IMAGENET_SYNSETS[:3]).index(w) for w in IMAGENET_VAL],
}


def write_inat(root: Path, year: str) -> Path:
    base = root / f"inat{year}"
    categories = [
        {"id": 2, "name": "Quercus alba", "supercategory": "Plantae"},
        {"id": 0, "name": "Danaus plexippus", "supercategory": "Insecta"},
        {"id": 1, "name": "Turdus migratorius", "supercategory": "Aves"},
    ]
    splits = {"train": [2, 0, 1, 1], "val": [0, 2]}
    image_id = 0
    for split, cats in splits.items():
        images, annotations = [], []
        for cat in cats:
            image_id += 1
            sup = next(c["supercategory"] for c in categories if c["id"] == cat)
            file_name = f"train_val{year}/{sup}/{cat}/{image_id:032x}.jpg"
            jpg(base / file_name, cat, size=(10, 14))
            images.append({"id": image_id, "file_name": file_name, "width": 10, "height": 14})
            annotations.append({"id": image_id + 100, "image_id": image_id, "category_id": cat})
        payload = {
            "info": {"year": int(year)},
            "images": images,
            "annotations": annotations[::-1],
            "categories": categories,
            "licenses": [],
        }
        (base / f"{split}{year}.json").write_text(json.dumps(payload))
    EXPECTED[f"inat{year}"] = splits  # category ids 0, 1, 2 are labels 0, 1, 2 (id order)
    return base


WRITERS = {
    "food101": write_food101,
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "cars": write_cars,
    "aircraft": write_aircraft,
    "pets": write_pets,
    "flowers": write_flowers,
    "dtd": write_dtd,
    "sun397": write_sun397,
    "caltech101": write_caltech101,
    "imagenet": write_imagenet,
    "inat2018": lambda root: write_inat(root, "2018"),
    "inat2019": lambda root: write_inat(root, "2019"),
}
