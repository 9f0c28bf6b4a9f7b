from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluate.shapesworld import render as R
from evaluate.shapesworld.formats import mask_to_coco_segmentation
from evaluate.shapesworld.generate import PRESETS, ShapesWorldSpec, generate
from sslcore.errors import DataError

TINY = PRESETS["tiny"]


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_classification_reads_as_image_folder(shapes_root):
    from torchvision.datasets import ImageFolder

    train = ImageFolder(shapes_root / "classification" / "train")
    val = ImageFolder(shapes_root / "classification" / "val")
    assert train.classes == sorted(R.MAIN_CLASSES) and len(train.classes) == 10
    n_val = int(np.ceil(TINY.cls_per_class * TINY.cls_val_fraction))
    assert len(train) == 10 * (TINY.cls_per_class - n_val) and len(val) == 10 * n_val
    image, label = train[0]
    assert image.size == (TINY.cls_size, TINY.cls_size) and image.mode == "RGB"
    assert train.classes[label] == Path(train.samples[0][0]).name.split("_")[0]


def test_subsets_follow_the_simclr_format(shapes_root):
    root = shapes_root / "classification"
    train_names = {p.name for p in (root / "train").rglob("*.png")}
    one = (root / "subsets" / "1percent.txt").read_text()
    ten = (root / "subsets" / "10percent.txt").read_text()
    assert one.endswith("\n") and ten.endswith("\n")
    one_names, ten_names = one.split(), ten.split()
    assert set(one_names) <= set(ten_names) <= train_names
    per_class = {c: sum(n.split("_")[0] == c for n in ten_names) for c in R.MAIN_CLASSES}
    assert len(set(per_class.values())) == 1 and min(per_class.values()) >= 1
    assert {n.split("_")[0] for n in one_names} == set(R.MAIN_CLASSES)


def test_transfer_domain_has_its_own_classes(shapes_root):
    from torchvision.datasets import ImageFolder

    train = ImageFolder(shapes_root / "transfer" / "train")
    assert train.classes == sorted(R.TRANSFER_CLASSES) and not set(train.classes) & set(R.MAIN_CLASSES)


def test_coco_loads_with_pycocotools(shapes_root):
    from pycocotools.coco import COCO

    coco = COCO(str(shapes_root / "coco" / "annotations" / "instances_train.json"))
    assert len(coco.getImgIds()) == TINY.coco_train
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(R.MAIN_CLASSES)
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns, "scenes must contain annotated objects"
    for ann in anns:
        info = coco.loadImgs(ann["image_id"])[0]
        mask = coco.annToMask(ann)
        assert mask.shape == (info["height"], info["width"])
        assert (shapes_root / "coco" / "images" / "train" / info["file_name"]).is_file()
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(mask)
        # decoded mask agrees with the stored area and box (polygons through pixel centres: within a pixel rim)
        assert abs(int(mask.sum()) - ann["area"]) <= 0.35 * ann["area"] + 4 * (w + h)
        assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1 and ys.max() <= y + h


def test_coco_rle_and_polygon_encodings_decode_exactly():
    from pycocotools import mask as mask_utils

    yy, xx = np.mgrid[0:40, 0:50]
    disk = (yy - 20) ** 2 + (xx - 25) ** 2 <= 12**2
    ring = disk & ((yy - 20) ** 2 + (xx - 25) ** 2 > 5**2)
    rle = mask_to_coco_segmentation(ring)
    assert isinstance(rle, dict) and sum(rle["counts"]) == 40 * 50
    decoded = mask_utils.decode(mask_utils.frPyObjects(rle, 40, 50))
    np.testing.assert_array_equal(decoded.astype(bool), ring)
    polys = mask_to_coco_segmentation(disk)
    assert isinstance(polys, list)
    decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, 40, 50))).astype(bool)
    iou = (decoded & disk).sum() / (decoded | disk).sum()
    assert iou > 0.9


def test_ade_labels_use_the_reduce_zero_label_convention(shapes_root):
    root = shapes_root / "ade20k"
    images = sorted((root / "images" / "training").glob("*.jpg"))
    labels = sorted((root / "annotations" / "training").glob("*.png"))
    assert len(images) == len(labels) == TINY.ade_train
    assert [p.stem for p in images] == [p.stem for p in labels]
    seen = set()
    for path in labels:
        label = np.asarray(Image.open(path))
        assert Image.open(path).mode == "L" and label.shape == (TINY.ade_size, TINY.ade_size)
        seen |= set(np.unique(label).tolist())
    assert 0 in seen and seen <= set(range(len(R.MAIN_CLASSES) + 1)) and len(seen) > 3
    assert (root / "classes.txt").read_text().split() == list(R.MAIN_CLASSES)


def test_davis_layout_and_palette_masks(shapes_root):
    root = shapes_root / "davis"
    val = (root / "ImageSets" / "2017" / "val.txt").read_text().split()
    assert len(val) == TINY.davis_val
    for seq in val:
        frames = sorted((root / "JPEGImages" / "480p" / seq).glob("*.jpg"))
        masks = sorted((root / "Annotations" / "480p" / seq).glob("*.png"))
        assert len(frames) == len(masks) == TINY.davis_frames >= 20
        assert [p.name for p in frames][:2] == ["00000.jpg", "00001.jpg"]
        first = Image.open(masks[0])
        assert first.mode == "P" and first.size == (TINY.davis_width, TINY.davis_height)
        ids = np.unique(np.asarray(first))
        assert ids[0] == 0 and 1 <= len(ids) - 1 <= 3 and list(ids) == list(range(len(ids)))
        # the objects move: the mask changes between the first and the last frame
        assert (np.asarray(first) != np.asarray(Image.open(masks[-1]))).any()


def test_generation_is_deterministic_and_seed_dependent(tmp_path):
    spec = ShapesWorldSpec(**{**TINY.__dict__, "cls_per_class": 4, "coco_train": 3, "ade_train": 3})
    a = generate(tmp_path / "a", spec, seed=3, workers=1)
    b = generate(tmp_path / "b", spec, seed=3, workers=2)
    assert a["counts"] == b["counts"]
    digest_a, digest_b = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert digest_a == digest_b
    generate(tmp_path / "c", spec, seed=4, workers=1)
    digest_c = _tree_digest(tmp_path / "c")
    assert digest_c.keys() == digest_a.keys()
    assert sum(digest_a[k] != digest_c[k] for k in digest_a) > 0.9 * len(digest_a)


def test_reuse_and_refusal(tmp_path):
    spec = ShapesWorldSpec(**{**TINY.__dict__, "cls_per_class": 4})
    out = tmp_path / "sw"
    generate(out, spec, seed=0, parts=("classification",), workers=1)
    stamp = (out / "shapesworld.json").stat().st_mtime_ns
    generate(out, spec, seed=0, parts=("classification",), workers=1)  # reused, not rewritten
    assert (out / "shapesworld.json").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="other settings; pass --force"):
        generate(out, spec, seed=1, parts=("classification",), workers=1)
    manifest = generate(out, spec, seed=1, parts=("classification",), workers=1, force=True)
    assert json.loads((out / "shapesworld.json").read_text())["seed"] == manifest["seed"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary directories left behind"
    with pytest.raises(DataError, match="unknown ShapesWorld part 'imagenet'"):
        generate(tmp_path / "x", spec, parts=("imagenet",))


def test_demo_classification_is_learnable_from_raw_pixels(tmp_path):
    from sklearn.linear_model import LogisticRegression

    generate(tmp_path / "sw", PRESETS["demo"], seed=0, parts=("classification",), workers=2)

    def load(split):
        files = sorted((tmp_path / "sw" / "classification" / split).rglob("*.png"))
        x = np.stack([np.asarray(Image.open(f).resize((16, 16)), np.float32).ravel() / 255 for f in files])
        return x, np.array([f.parent.name for f in files])

    (xt, yt), (xv, yv) = load("train"), load("val")
    accuracy = LogisticRegression(max_iter=2000, C=0.1).fit(xt, yt).score(xv, yv)
    assert accuracy > 0.2, f"raw-pixel baseline {accuracy:.3f} should beat chance (0.10) clearly"
