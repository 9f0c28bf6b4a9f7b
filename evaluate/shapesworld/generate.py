"""Generate a ShapesWorld dataset tree: all official formats, a manifest, atomically.

The tree at ``out``::

    shapesworld.json                     manifest: spec, seed, generator version, counts
    classification/{train,val}/<class>/  ImageFolder (10 shape classes) + subsets/{1percent,10percent}.txt
    transfer/{train,val}/<class>/        second domain (8 shape x pattern classes, pastel palette)
    coco/                                COCO instances
    ade20k/                              ADE20K-style semantic segmentation
    davis/                               DAVIS-2017-style videos

Generation writes into a temporary sibling directory and renames it into place at the end, so ``out`` is either
absent, the previous complete tree, or the new complete tree. Re-running with the same spec reuses the tree.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from evaluate.shapesworld import formats as F
from evaluate.shapesworld import render as R
from evaluate.shapesworld import scenes
from sslcore.errors import DataError

logger = logging.getLogger("sslbench")

GENERATOR_VERSION = 1
MANIFEST = "shapesworld.json"


@dataclasses.dataclass(frozen=True)
class ShapesWorldSpec:
    """How much of each part to generate, and at which resolution."""

    cls_per_class: int = 130
    cls_val_fraction: float = 0.25
    cls_size: int = 64
    colour_bias: float = 0.6
    transfer_per_class: int = 60
    transfer_size: int = 64
    coco_train: int = 80
    coco_val: int = 24
    coco_size: int = 128
    ade_train: int = 80
    ade_val: int = 24
    ade_size: int = 128
    davis_train: int = 3
    davis_val: int = 4
    davis_frames: int = 24
    davis_height: int = 96
    davis_width: int = 160


PRESETS: dict[str, ShapesWorldSpec] = {
    "tiny": ShapesWorldSpec(
        cls_per_class=16,
        cls_size=32,
        transfer_per_class=10,
        transfer_size=32,
        coco_train=8,
        coco_val=4,
        coco_size=64,
        ade_train=8,
        ade_val=4,
        ade_size=64,
        davis_train=1,
        davis_val=2,
        davis_frames=20,
        davis_height=48,
        davis_width=64,
    ),
    "demo": ShapesWorldSpec(),
    "large": ShapesWorldSpec(
        cls_per_class=1300,
        cls_size=96,
        transfer_per_class=400,
        transfer_size=96,
        coco_train=1000,
        coco_val=200,
        coco_size=256,
        ade_train=1000,
        ade_val=200,
        ade_size=256,
        davis_train=20,
        davis_val=20,
        davis_frames=40,
        davis_height=240,
        davis_width=432,
    ),
}


def _write_part(part: str, root: str, spec: ShapesWorldSpec, seed: int) -> dict[str, int]:
    out = Path(root) / part
    if part == "classification":
        split = F.split_counts(spec.cls_per_class, spec.cls_val_fraction)
        counts = F.write_image_folder(
            out,
            R.MAIN_CLASSES,
            split,
            lambda rng, c: scenes.classification_image(rng, c, spec.cls_size, spec.colour_bias),
            seed,
            part,
        )
        F.write_subsets(out, R.MAIN_CLASSES, split["train"], {"1percent": 0.01, "10percent": 0.10}, seed)
        return counts
    if part == "transfer":
        split = F.split_counts(spec.transfer_per_class, spec.cls_val_fraction)
        return F.write_image_folder(
            out, R.TRANSFER_CLASSES, split, lambda rng, c: scenes.transfer_image(rng, c, spec.transfer_size), seed, part
        )
    if part == "coco":
        return F.write_coco(out, {"train": spec.coco_train, "val": spec.coco_val}, spec.coco_size, seed)
    if part == "ade20k":
        return F.write_ade(out, {"training": spec.ade_train, "validation": spec.ade_val}, spec.ade_size, seed)
    if part == "davis":
        return F.write_davis(
            out,
            {"train": spec.davis_train, "val": spec.davis_val},
            spec.davis_frames,
            spec.davis_height,
            spec.davis_width,
            seed,
        )
    raise DataError(f"unknown ShapesWorld part {part!r} (valid: {', '.join(F.PARTS)})")


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _wanted(spec: ShapesWorldSpec, seed: int, parts: tuple[str, ...]) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "parts": list(parts),
        "spec": dataclasses.asdict(spec),
    }


def generate(
    out: str | Path,
    spec: ShapesWorldSpec | None = None,
    seed: int = 0,
    parts: tuple[str, ...] = F.PARTS,
    force: bool = False,
    workers: int = 2,
) -> dict[str, Any]:
    """Generate (or reuse) a ShapesWorld tree at ``out`` and return its manifest.

    Raises:
        DataError: ``out`` holds something else (another spec/seed, or not a ShapesWorld tree) and ``force`` is off.
    """
    spec = spec or ShapesWorldSpec()
    out = Path(out)
    unknown = [p for p in parts if p not in F.PARTS]
    if unknown:
        raise DataError(f"unknown ShapesWorld part {unknown[0]!r} (valid: {', '.join(F.PARTS)})")
    wanted = _wanted(spec, seed, parts)
    existing = read_manifest(out)
    if existing is not None and {k: existing.get(k) for k in wanted} == wanted and not force:
        logger.info("ShapesWorld at %s is up to date (seed %d)", out, seed)
        return existing
    if out.exists() and not force:
        what = "a ShapesWorld tree with other settings" if existing else "files that are not a ShapesWorld tree"
        raise DataError(f"{out}: already holds {what}; pass --force to replace it or choose another --out")
    start = time.time()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        counts: dict[str, dict[str, int]] = {}
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {p: pool.submit(_write_part, p, str(tmp), spec, seed) for p in parts}
                counts = {p: f.result() for p, f in futures.items()}
        else:
            counts = {p: _write_part(p, str(tmp), spec, seed) for p in parts}
        manifest = dict(
            wanted,
            counts=counts,
            classes={"classification": list(R.MAIN_CLASSES), "transfer": list(R.TRANSFER_CLASSES)},
        )
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{int(time.time())}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("ShapesWorld written to %s in %.1f s", out, time.time() - start)
    return manifest
