"""Official-layout readers on miniatures written in the exact official layouts (no downloads).

Every dataset is read through its real reader (torchvision's where it is used): classes, split sizes and labels as
written; the count check against the real release; a missing file gives one error naming it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from official_layouts import (
    AIRCRAFT_VARIANTS,
    CALTECH,
    CAR_NAMES,
    EXPECTED,
    WRITERS,
    write_cars_combined,
    write_imagenet,
)

from evaluate.datasets import DATASETS, build_dataset, fingerprint, get_spec, load_images, parse_data_arg
from sslcore.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("official")
    return {name: write(root / name) for name, write in WRITERS.items()}


def labels_of(name: str, root: Path, split: str) -> list[int]:
    return load_images(name, root, split, check_counts=False).labels


@pytest.mark.parametrize("name", [n for n in WRITERS if n != "caltech101"])
def test_every_split_reads_with_its_labels(written, name):
    for split, expected in EXPECTED[name].items():
        images = load_images(name, written[name], split, check_counts=False)
        assert images.labels == expected, (name, split)
        assert all(Path(p).is_file() for p, _ in images.samples) or name.startswith("cifar")
        assert max(images.labels) < len(images.classes)
        ds = build_dataset(name, written[name], split, check_counts=False)
        image, label = ds[0]
        assert image.mode == "RGB" and label == expected[0]


def test_class_lists_come_from_the_official_files(written):
    assert load_images("cars", written["cars"], "train", check_counts=False).classes == tuple(CAR_NAMES)
    assert load_images("aircraft", written["aircraft"], "test", check_counts=False).classes == tuple(AIRCRAFT_VARIANTS)
    cifar = load_images("cifar10", written["cifar10"], "test", check_counts=False)
    assert cifar.classes[:3] == ("airplane", "automobile", "bird") and len(cifar.classes) == 10
    assert len(load_images("cifar100", written["cifar100"], "test", check_counts=False).classes) == 100
    sun = load_images("sun397", written["sun397"], "train", check_counts=False)
    assert len(sun.classes) == 397 and sun.classes[:2] == ("abbey", "apartment_building/outdoor")
    flowers = load_images("flowers", written["flowers"], "test", check_counts=False)
    assert len(flowers.classes) == 102 and flowers.classes[0] == "pink primrose"
    pets = load_images("pets", written["pets"], "test", check_counts=False)
    assert pets.classes == ("Abyssinian", "American Bulldog", "Birman")
    inat = load_images("inat2018", written["inat2018"], "val", check_counts=False)
    assert inat.classes == ("Danaus plexippus", "Turdus migratorius", "Quercus alba")  # category id order
    food = load_images("food101", written["food101"], "train", check_counts=False)
    assert food.classes == ("apple_pie", "baby_back_ribs", "ramen")
    dtd = load_images("dtd", written["dtd"], "val", check_counts=False)
    assert dtd.classes == ("banded", "blotchy", "zigzagged")


@pytest.mark.parametrize(
    "name, split, message",
    [
        # miniatures whose index files list every class of the release: the image count is what fails
        ("cifar10", "test", r"cifar10 test has 3 images, expected 10000"),
        ("cifar100", "train", r"cifar100 train has 4 images, expected 50000"),
        ("aircraft", "val", r"aircraft val has 2 images, expected 3333"),
        ("flowers", "test", r"flowers test has 3 images, expected 6149"),
        ("sun397", "train", r"sun397 train has 3 images, expected 19850"),
        ("cars", "test", r"cars test has 2 images, expected 8041"),
        # the others have three classes
        ("food101", "train", r"food101 has 3 classes, expected 101"),
        ("pets", "test", r"pets has 3 classes, expected 37"),
        ("dtd", "train", r"dtd has 3 classes, expected 47"),
        ("inat2019", "val", r"inat2019 has 3 classes, expected 1010"),
        ("caltech101", "train", r"caltech101 has 3 classes, expected 102"),
        ("imagenet", "val", r"imagenet has 3 classes, expected 1000"),
    ],
)
def test_counts_are_checked_against_the_release(written, name, split, message):
    with pytest.raises(DataError, match=message + r" \(a partial or modified copy\? data.check_counts=false"):
        load_images(name, written[name], split)


def test_cifar_pixels_are_rebuilt_from_the_planes(written):
    images = load_images("cifar10", written["cifar10"], "train", check_counts=False)
    image = np.asarray(images.open(1))
    assert image.shape == (32, 32, 3)
    assert image[5, 7].tolist() == [2 * images.labels[1], 100, 201]  # R plane 2*y, G 100, B 200 + row
    assert images.samples[1][0].endswith("data_batch_1#1")


def test_cifar_pickle_with_a_foreign_global_is_refused(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(base / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": Evil()}, handle)
    with pytest.raises(DataError, match=r"batches.meta: not a CIFAR python pickle .*builtins.print is not allowed"):
        load_images("cifar10", tmp_path, "test", check_counts=False)


def test_trainval_is_the_union_for_datasets_with_an_official_val(written):
    for name in ("flowers", "dtd", "aircraft"):
        spec = DATASETS[name]
        assert spec.fit == "trainval"
        union = load_images(name, written[name], "trainval", check_counts=False)
        assert union.labels == EXPECTED[name]["train"] + EXPECTED[name]["val"]
    assert DATASETS["aircraft"].expected_count("trainval") == 6667
    assert DATASETS["flowers"].expected_count("trainval") == 2040
    assert DATASETS["pets"].fit == "trainval" and DATASETS["food101"].fit == "train"


def test_caltech_split_is_30_per_class_seeded_and_disjoint(written):
    train = load_images("caltech101", written["caltech101"], "train", check_counts=False)
    test = load_images("caltech101", written["caltech101"], "test", check_counts=False)
    assert train.classes == tuple(sorted(CALTECH)) and "BACKGROUND_Google" in train.classes
    counts = np.bincount(train.labels, minlength=3).tolist()
    assert counts == [30, 30, 30]
    assert np.bincount(test.labels, minlength=3).tolist() == [n - 30 for n in CALTECH.values()]
    assert not {p for p, _ in train.samples} & {p for p, _ in test.samples}
    again = load_images("caltech101", written["caltech101"], "train", check_counts=False)
    assert again.samples == train.samples  # the draw is fixed
    first_class = [p for p, y in train.samples if y == 0]
    assert first_class == sorted(first_class)  # sorted within a class...
    assert first_class != sorted(first_class + [p for p, y in test.samples if y == 0])[:30]  # ...but drawn


def test_cars_combined_release(tmp_path):
    base = write_cars_combined(tmp_path)
    for split, expected in EXPECTED["cars_combined"].items():
        images = load_images("cars", base, split, check_counts=False)
        assert images.labels == expected and images.classes == tuple(CAR_NAMES)
    assert load_images("cars", tmp_path, "test", check_counts=False).labels == [3, 195]  # the parent works too


@pytest.mark.parametrize("labels", ["devkit", "archive", "csv"])
def test_imagenet_flat_val_is_labelled(tmp_path, labels):
    root = write_imagenet(tmp_path, labels)
    val = load_images("imagenet", root, "val", check_counts=False)
    train = load_images("imagenet", root, "train", check_counts=False)
    assert val.classes == train.classes == ("n01440764", "n02119789", "n04592741")
    assert val.labels == EXPECTED["imagenet"]["val"]
    assert [Path(p).name for p, _ in val.samples][0] == "ILSVRC2012_val_00000001.JPEG"


def test_imagenet_val_in_class_folders_still_reads(tmp_path):
    root = write_imagenet(tmp_path, "devkit")
    flat = load_images("imagenet", root, "val", check_counts=False)
    # sort the flat val into class folders, as the common preparation script does
    for path, y in flat.samples:
        dest = root / "val" / flat.classes[y] / Path(path).name
        dest.parent.mkdir(exist_ok=True)
        Path(path).rename(dest)
    foldered = load_images("imagenet", root, "val", check_counts=False)
    assert sorted(foldered.labels) == sorted(EXPECTED["imagenet"]["val"])


def test_imagenet_flat_val_without_labels_names_what_to_add(tmp_path):
    root = write_imagenet(tmp_path, "devkit")
    gt = root / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("2\n")  # one line for five images
    with pytest.raises(DataError, match=r"ILSVRC2012_val_00000002.JPEG: no label in"):
        load_images("imagenet", root, "val", check_counts=False)
    gt.write_text("1001\n")
    with pytest.raises(DataError, match=r"line 1 \('1001'\) is not a leaf ILSVRC2012_ID"):
        load_images("imagenet", root, "val", check_counts=False)
    import shutil

    shutil.rmtree(root / "ILSVRC2012_devkit_t12")
    with pytest.raises(DataError, match=r"val/ is flat and no labels were found: put LOC_val_solution.csv"):
        load_images("imagenet", root, "val", check_counts=False)


MISSING = [
    ("food101", "meta/test.json", "test"),
    ("cifar10", "data_batch_3", "train"),
    ("cifar100", "meta", "test"),
    ("cars", "cars_test_annos_withlabels.mat", "test"),
    ("aircraft", "data/images_variant_val.txt", "val"),
    ("pets", "annotations/test.txt", "test"),
    ("flowers", "setid.mat", "train"),
    ("dtd", "labels/test1.txt", "test"),
    ("sun397", "../Partitions/Testing_01.txt", "test"),
    ("inat2019", "val2019.json", "val"),
]


@pytest.mark.parametrize("name, relpath, split", MISSING)
def test_a_missing_file_is_named(tmp_path, name, relpath, split):
    root = WRITERS[name](tmp_path)
    base = {"cifar10": root / "cifar-10-batches-py", "sun397": root / "SUN397"}.get(name, root)
    target = (base / relpath).resolve()
    assert target.exists()
    target.unlink()
    with pytest.raises(DataError, match=Path(relpath).name.replace(".", r"\.")):
        load_images(name, root, split, check_counts=False)


def test_a_listed_image_that_is_missing_is_named(written, tmp_path):
    root = WRITERS["aircraft"](tmp_path)
    images = load_images("aircraft", root, "test", check_counts=False)
    Path(images.samples[1][0]).unlink()
    with pytest.raises(DataError, match=rf"{Path(images.samples[1][0]).name}: listed in the aircraft test split"):
        load_images("aircraft", root, "test", check_counts=False)


def test_wrong_root_and_unknown_split(tmp_path, written):
    with pytest.raises(DataError, match=r"food-101/meta/train.json"):
        load_images("food101", tmp_path, "train")
    with pytest.raises(DataError, match=r"pets: no split 'train'; its splits are trainval, test"):
        load_images("pets", written["pets"], "train")
    with pytest.raises(DataError, match=r"nowhere: food101 root directory not found"):
        load_images("food101", tmp_path / "nowhere", "train")
    with pytest.raises(ConfigError, match=r"dataset 'food': not in the registry; known: food101, cifar10"):
        load_images("food", tmp_path, "train")


def test_torchvision_folder_name_is_not_required(written, tmp_path):
    """The user's folder may have any name; torchvision's own name (or its parent) works the same."""
    renamed = tmp_path / "my_food"
    written["food101"].rename(renamed)
    try:
        images = load_images("food101", renamed, "test", check_counts=False)
        assert images.labels == EXPECTED["food101"]["test"] and images.root == renamed
        assert all(p.startswith(str(renamed)) for p, _ in images.samples)
    finally:
        renamed.rename(written["food101"])
    parent = load_images("food101", written["food101"].parent, "test", check_counts=False)
    assert [Path(p).name for p, _ in parent.samples] == [Path(p).name for p, _ in images.samples]


def test_fingerprint_of_array_images_tracks_the_batch_file(tmp_path):
    root = WRITERS["cifar10"](tmp_path)
    base = fingerprint(load_images("cifar10", root, "test", check_counts=False))
    assert fingerprint(load_images("cifar10", root, "test", check_counts=False)) == base
    batch = root / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes() + b"")
    import os

    os.utime(batch, ns=(1, 1))
    assert fingerprint(load_images("cifar10", root, "test", check_counts=False)) != base


def test_parse_data_arg_and_aliases():
    assert parse_data_arg("food101:/data/food-101") == ("food101", "/data/food-101")
    assert parse_data_arg("FGVC_Aircraft:/x") == ("aircraft", "/x")
    assert parse_data_arg("inat18:rel/path") == ("inat2018", "rel/path")
    assert parse_data_arg("/data/imagenet") == (None, "/data/imagenet")
    assert parse_data_arg("weird:name") == (None, "weird:name")  # not a registry name: a path
    assert get_spec("Pets").metric == "mean_per_class" and get_spec("shapesworld") is None


def test_registry_metrics_and_counts():
    per_class = {n for n, s in DATASETS.items() if s.metric == "mean_per_class"}
    assert per_class == {"aircraft", "pets", "flowers", "caltech101"}
    assert {n: s.num_classes for n, s in DATASETS.items()} == {
        "food101": 101,
        "cifar10": 10,
        "cifar100": 100,
        "cars": 196,
        "aircraft": 100,
        "pets": 37,
        "flowers": 102,
        "dtd": 47,
        "sun397": 397,
        "caltech101": 102,
        "imagenet": 1000,
        "inat2018": 8142,
        "inat2019": 1010,
    }
    assert DATASETS["imagenet"].test == "val" and DATASETS["inat2018"].test == "val"
    assert (DATASETS["flowers"].val, DATASETS["aircraft"].val, DATASETS["dtd"].val) == ("val", "val", "val")
