"""Pretraining data: an ImageFolder source, deterministic per-image augmentation, a resumable distributed sampler.

Determinism (what makes ``--resume`` exact): the sampler yields ``(index, epoch)`` pairs and the dataset seeds the torch
generator from ``(seed, epoch, index)`` before augmenting that image, inside ``torch.random.fork_rng`` so the caller's
generator is untouched. An image's views therefore depend only on the seed, the epoch and the index: not on the worker
that loads it, the number of workers or on where a run was interrupted. The sampler's permutation depends only on
(seed, epoch) and it can start mid-epoch (``start_batch``).

Rendering (``data.render``): ``"pil"`` makes every view's pixels in the worker (:class:`MultiCropAugment`);
``"batch"`` draws the same parameters from the same generator in the same order but returns the decoded image and
the parameter rows, and :func:`render_batch` makes the pixels of the whole batch at once (:mod:`pretrain.render`):
in the loader's collate function on a CPU run (the workers overlap the step), on the device on a CUDA run. Boxes,
flips, masks and query boxes are identical in both modes.

Unreadable images: with ``on_bad_image="skip"`` the image is replaced by the next readable one in index order (so the
batch keeps its size, which the losses need), a warning names the file, and the item carries ``skipped=1``, which the
engine sums into the log. With ``"error"`` a :class:`~sslcore.errors.DataError` naming the file stops the run.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from pretrain.config import PretrainConfig
from pretrain.crops import MultiCropAugment, query_crops
from pretrain.crops import query_boxes as draw_query_boxes
from pretrain.dist import Distributed
from pretrain.render import render_queries, render_views
from pretrain.views import Batch, ViewPlan, collate
from sslcore.errors import DataError

logger = logging.getLogger("sslbench")

_SEED_MIX = (1_000_003, 7_919)


def image_folder(root: str | Path) -> tuple[list[tuple[str, int]], list[str]]:
    """``([(path, label), ...], classes)`` of an ImageFolder tree ``<root>/<class>/<image>`` (sorted, as torchvision)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found (expected <root>/<class>/<image>)")
    try:
        classes, class_to_idx = find_classes(str(root))
        samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{root}: {exc}") from None
    if not samples:
        raise DataError(f"{root}: no images found")
    return samples, classes


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * _SEED_MIX[0] + epoch) * _SEED_MIX[1] * 1_000_000_007 + index


class MultiCropDataset(Dataset):
    """Items ``{"views": [V x (3, S, S)], "boxes": (V, 4), "flips": (V,), "masks": [G x (h, w)] or None, "index",
    "label", "skipped"}``.

    ``dataset[(index, epoch)]`` (what :class:`ResumableSampler` yields) or ``dataset[index]`` (epoch 0).
    ``crop_boxes`` (N, 4) normalised ContrastiveCrop boxes, or None for plain random crops. ``plan`` (a
    :class:`~pretrain.views.ViewPlan`) adds one mask per global crop, drawn after the views from the same seeded
    generator, and, when it asks for query crops (ADCLR), ``"queries"`` (Q, 3, P, P) and ``"query_boxes"`` (Q, 4)
    drawn after the masks.
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        augment: MultiCropAugment,
        seed: int = 0,
        on_bad_image: str = "skip",
        crop_boxes: torch.Tensor | None = None,
        plan: ViewPlan | None = None,
        render: str = "pil",
    ) -> None:
        if render not in ("pil", "batch"):
            raise ValueError(f"render must be 'pil' or 'batch', got {render!r}")
        self.render = render
        self.samples = samples
        self.plan = plan
        self.augment = augment
        self.seed = seed
        self.on_bad_image = on_bad_image
        self.crop_boxes = crop_boxes

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[Image.Image, int, int]:
        """(image, label, number of unreadable files passed over)."""
        for skipped in range(len(self.samples)):
            path, label = self.samples[(index + skipped) % len(self.samples)]
            try:
                with Image.open(path) as img:
                    img.load()
                    return img.convert("RGB"), label, skipped
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                if self.on_bad_image == "error":
                    raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None
                logger.warning("skipping unreadable image %s (%s)", path, type(exc).__name__)
        raise DataError(f"no readable image among the {len(self.samples)} files of the dataset")

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        img, label, skipped = self._load(index)
        box = None if self.crop_boxes is None else self.crop_boxes[(index + skipped) % len(self.samples)]
        image = params = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index) % (2**63 - 1))
            if self.render == "pil":
                views, boxes, flips = self.augment(img, box)
            else:
                width, height = img.size
                params = self.augment.draw_all(height, width, box)
                boxes, flips = self.augment.boxes_and_flips(params)
                image = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()
                views = None
            masks = self._masks(epoch)
            queries = query_boxes = None
            if self.plan is not None and self.plan.query_crops:
                plan, cfg = self.plan, self.augment.cfg
                if self.render == "pil":
                    queries, query_boxes = query_crops(
                        img, plan.query_crops, plan.patch_size, plan.query_scale, plan.query_ratio, cfg.mean, cfg.std
                    )
                else:
                    query_boxes = draw_query_boxes(
                        img.size[1], img.size[0], plan.query_crops, plan.query_scale, plan.query_ratio
                    ).float()
        return {
            "views": views,
            "boxes": boxes,
            "flips": flips,
            "masks": masks,
            "index": index,
            "label": label,
            "skipped": skipped,
            "queries": queries,
            "query_boxes": query_boxes,
            "image": image,
            "params": params,
        }

    def _masks(self, epoch: int) -> list[torch.Tensor] | None:
        plan = self.plan
        if plan is None or not plan.masks:
            return None
        out = []
        for g in range(plan.global_crops):
            h = w = self.augment.view_spec(g)[0] // plan.patch_size  # the view's side, in either render mode
            if epoch < plan.mask_start_epoch:
                out.append(torch.zeros(h, w, dtype=torch.bool))
            else:
                out.append(plan.draw_mask(h, w))
        return out


class ResumableSampler(Sampler):
    """DistributedSampler semantics (shuffle by (seed, epoch), drop_last) that yields ``(index, epoch)`` pairs.

    Each rank takes every ``world_size``-th index of the epoch's permutation, truncated to ``iters_per_epoch *
    batch_size`` per rank; ``set_epoch(epoch, start_batch)`` resumes after ``start_batch`` batches.
    ``set_epoch(epoch, start_batch, stop_epoch)`` spans the epochs up to ``stop_epoch`` (exclusive) in one pass, each
    epoch's pairs exactly as a pass of its own would yield them (so one DataLoader, whose workers then live and
    prefetch across epoch ends, serves several epochs).
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.n, self.batch_size, self.rank, self.world_size, self.seed = n, batch_size, rank, world_size, seed
        self.iters_per_epoch = n // (batch_size * world_size)
        if self.iters_per_epoch < 1:
            raise DataError(
                f"dataset of {n} images is smaller than one global batch ({batch_size} x {world_size} processes)"
            )
        self.epoch, self.start_batch, self.stop_epoch = 0, 0, 1

    def set_epoch(self, epoch: int, start_batch: int = 0, stop_epoch: int | None = None) -> None:
        stop = epoch + 1 if stop_epoch is None else stop_epoch
        if stop <= epoch or not 0 <= start_batch < self.iters_per_epoch:
            raise ValueError(f"no batches in epochs [{epoch}, {stop}) from batch {start_batch}")
        self.epoch, self.start_batch, self.stop_epoch = epoch, start_batch, stop

    def indices(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        per_rank = self.iters_per_epoch * self.batch_size
        return perm[self.rank :: self.world_size][:per_rank]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for epoch in range(self.epoch, self.stop_epoch):
            skip = self.start_batch * self.batch_size if epoch == self.epoch else 0
            yield from ((i, epoch) for i in self.indices(epoch)[skip:])

    def __len__(self) -> int:
        return ((self.stop_epoch - self.epoch) * self.iters_per_epoch - self.start_batch) * self.batch_size


def collate_views(items: list[dict[str, Any]], augment: MultiCropAugment, plan: ViewPlan | None, render: bool) -> Batch:
    """:func:`~pretrain.views.collate`, then, when ``render``, :func:`render_batch` (a no-op for pil items)."""
    batch = collate(items, num_global=augment.cfg.global_crops)
    return render_batch(batch, augment, plan) if render else batch


def make_loader(
    dataset: MultiCropDataset,
    sampler: ResumableSampler,
    num_workers: int,
    pin_memory: bool = False,
    render_in_workers: bool = True,
) -> torch.utils.data.DataLoader:
    """A DataLoader that never draws from the global torch generator (it gets its own, fixed one).

    ``render_in_workers``: batch-rendered views (``data.render: batch``) are made by the collate function, i.e. in
    the worker processes, overlapping the training step (what a CPU run wants); False leaves them to the training
    device (:func:`render_batch` in the engine: a GPU run, whose CPU cores are then free).
    """
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=sampler.batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=functools.partial(
            collate_views, augment=dataset.augment, plan=dataset.plan, render=render_in_workers
        ),
        pin_memory=pin_memory,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )


@dataclasses.dataclass
class PretrainData:
    dataset: MultiCropDataset
    sampler: ResumableSampler
    classes: list[str]


def build_data(cfg: PretrainConfig, dist: Distributed, plan: ViewPlan | None = None) -> PretrainData:
    """The training set of ``cfg.data.root`` with its multi-crop augmentation, the method's plan and this rank's
    sampler."""
    if not cfg.data.root:
        raise DataError("data.root: no training image folder given")
    samples, classes = image_folder(cfg.data.root)
    augment = MultiCropAugment(cfg.data, alpha=cfg.ccrop.alpha)
    dataset = MultiCropDataset(
        samples, augment, seed=cfg.train.seed, on_bad_image=cfg.data.on_bad_image, plan=plan, render=cfg.data.render
    )
    sampler = ResumableSampler(len(samples), cfg.train.batch_size, dist.rank, dist.world_size, cfg.train.seed)
    return PretrainData(dataset, sampler, classes)


def render_batch(batch: Batch, augment: MultiCropAugment, plan: ViewPlan | None = None) -> Batch:
    """The batch with its views (and query crops) made from ``batch.images``/``batch.params`` on their device
    (``data.render: batch``); a batch whose views are already made comes back unchanged."""
    if batch.images is None or batch.params is None:
        return batch
    cfg = augment.cfg
    sizes = [augment.view_spec(v)[0] for v in range(augment.num_views)]
    views = render_views(batch.images, batch.params, sizes, cfg.mean, cfg.std)
    queries = batch.queries
    if plan is not None and plan.query_crops and batch.query_boxes is not None:
        queries = render_queries(batch.images, batch.query_boxes, plan.patch_size, cfg.mean, cfg.std)
    return dataclasses.replace(
        batch,
        globals=views[: cfg.global_crops],
        locals=views[cfg.global_crops :],
        queries=queries,
        images=None,
        params=None,
    )
