"""What the data pipeline gives a method: a :class:`ViewPlan` says what to make, a :class:`Batch` carries it.

A method declares its plan (``SSLMethod.view_plan(cfg)``); :mod:`pretrain.data` builds the views, the boxes and
flips of every crop and, when the plan asks, one mask per global crop, all inside the seeded per-image generator (so
exact resume holds for every method).

Batch layouts (B images on this rank, G global and L local crops, V = G + L)::

    globals  G x (B, 3, S_g, S_g)      locals  L x (B, 3, S_l, S_l)
    boxes    (B, V, 4) float, (left, top, right, bottom) in original-image pixels, right/bottom exclusive
    flips    (B, V) bool, True when the crop was mirrored after resizing
    masks    G x (B, h, w) bool (h = S_g // patch) or None when the plan has no masks
    queries  (B, Q, 3, P, P) query crops (ADCLR: random crops of the original image, each resized to one patch,
             normalised, no other augmentation) or None when the plan has none
    query_boxes (B, Q, 4) float, their boxes in original-image pixels (as ``boxes``), or None
    index    (B,) dataset indices; label (B,) class labels (never used by a method's loss)

With ``data.render: batch`` the loader's batch carries, instead of the pixels of the views, the decoded images and
the drawn parameters (``globals``/``locals`` empty, ``queries`` None until :func:`pretrain.data.render_batch`)::

    images   uint8 (B, 3, H, W), each image zero-padded bottom/right to the batch's largest
    params   float64 (B, V, NUM_PARAMS), one row of :data:`pretrain.render.PARAM_COLUMNS` per view
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pretrain.masking import draw_mask


@dataclasses.dataclass(frozen=True)
class ViewPlan:
    """How many crops of each kind a method needs, and whether global crops carry masks.

    ``mask_means``/``mask_spreads``/``mask_shape``/``mask_aspect`` follow :func:`pretrain.masking.draw_mask`;
    ``mask_start_epoch``: epochs before it get all-False masks (iBOT's ``pred_start_epoch``).
    ``query_crops`` > 0 asks for that many query crops per image (ADCLR), each a ``RandomResizedCrop`` of the
    original image with area fraction ``query_scale`` and aspect ratio ``query_ratio``, resized to
    ``patch_size`` x ``patch_size``; drawn after the views and masks from the same seeded generator.
    """

    global_crops: int
    local_crops: int
    patch_size: int = 16
    masks: bool = False
    mask_means: tuple[float, ...] = (0.0, 0.3)
    mask_spreads: tuple[float, ...] = (0.0, 0.2)
    mask_shape: str = "block"
    mask_aspect: tuple[float, float] = (0.3, 1 / 0.3)
    mask_start_epoch: int = 0
    query_crops: int = 0
    query_scale: tuple[float, float] = (0.05, 0.15)
    query_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)

    def draw_mask(self, h: int, w: int) -> Tensor:
        """One (h, w) mask with this plan's ratios and shape (:func:`pretrain.masking.draw_mask`)."""
        return draw_mask(h, w, self.mask_means, self.mask_spreads, self.mask_shape, self.mask_aspect)


@dataclasses.dataclass
class Batch:
    globals: list[Tensor]
    locals: list[Tensor]
    boxes: Tensor
    flips: Tensor
    index: Tensor
    label: Tensor
    masks: list[Tensor] | None = None
    skipped: int = 0
    queries: Tensor | None = None
    query_boxes: Tensor | None = None
    images: Tensor | None = None
    params: Tensor | None = None

    @property
    def views(self) -> list[Tensor]:
        """Every crop, globals first (the order of ``boxes``/``flips``)."""
        return [*self.globals, *self.locals]

    @property
    def size(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = True) -> Batch:
        return self.map(lambda t: t.to(device, non_blocking=non_blocking))

    def rows(self, rows: slice) -> Batch:
        """The images ``rows`` of every crop (e.g. one rank's share of a global batch)."""
        return self.map(lambda t: t[rows])

    def map(self, move: Callable[[Tensor], Tensor]) -> Batch:
        """Apply ``move`` to every tensor of the batch."""

        return dataclasses.replace(
            self,
            globals=[move(v) for v in self.globals],
            locals=[move(v) for v in self.locals],
            boxes=move(self.boxes),
            flips=move(self.flips),
            index=move(self.index),
            label=move(self.label),
            masks=None if self.masks is None else [move(m) for m in self.masks],
            queries=None if self.queries is None else move(self.queries),
            query_boxes=None if self.query_boxes is None else move(self.query_boxes),
            images=None if self.images is None else move(self.images),
            params=None if self.params is None else move(self.params),
        )


def pad_stack(images: list[Tensor]) -> Tensor:
    """uint8 (3, H_i, W_i) images -> (B, 3, max H, max W), zero-padded bottom/right."""
    height, width = max(int(im.shape[-2]) for im in images), max(int(im.shape[-1]) for im in images)
    out = torch.zeros(len(images), 3, height, width, dtype=images[0].dtype)
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
    return out


def collate(items: list[dict[str, Any]], num_global: int) -> Batch:
    """Stack per-image items ``{"views", "boxes", "flips", "masks" (or None), "index", "label", "skipped"}`` and,
    when present, ``"queries"`` (Q, 3, P, P) / ``"query_boxes"`` (Q, 4); batch-rendered items carry ``"image"``
    (3, H, W) uint8 and ``"params"`` (V, NUM_PARAMS) instead of ``"views"`` and may carry ``"query_boxes"`` without
    ``"queries"``."""
    views = [torch.stack([it["views"][v] for it in items]) for v in range(len(items[0]["views"] or []))]
    masks = None
    if items[0].get("masks") is not None:
        masks = [torch.stack([it["masks"][g] for it in items]) for g in range(num_global)]
    return Batch(
        globals=views[:num_global],
        locals=views[num_global:],
        boxes=torch.stack([it["boxes"] for it in items]),
        flips=torch.stack([it["flips"] for it in items]),
        index=torch.tensor([it["index"] for it in items]),
        label=torch.tensor([it["label"] for it in items]),
        masks=masks,
        skipped=int(sum(it["skipped"] for it in items)),
        queries=torch.stack([it["queries"] for it in items]) if items[0].get("queries") is not None else None,
        query_boxes=torch.stack([it["query_boxes"] for it in items])
        if items[0].get("query_boxes") is not None
        else None,
        images=pad_stack([it["image"] for it in items]) if items[0].get("image") is not None else None,
        params=torch.stack([it["params"] for it in items]) if items[0].get("params") is not None else None,
    )


def random_batch(
    plan: ViewPlan,
    batch_size: int,
    global_size: int,
    local_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Batch:
    """A batch of Gaussian-noise crops laid out as ``plan`` asks (masks included), for benchmarks and tests.

    Boxes are full-image boxes of a ``global_size`` square image, flips False; masks follow the plan's ratios;
    query crops (when the plan asks) are noise too, with boxes drawn in the ``global_size`` image; both drawn last,
    so a plan without queries gives the same batch as before.
    """
    g = generator or torch.Generator().manual_seed(0)

    def crops(n: int, size: int) -> list[Tensor]:
        return [torch.randn(batch_size, 3, size, size, generator=g).to(device) for _ in range(n)]

    views = plan.global_crops + plan.local_crops
    masks = None
    if plan.masks:
        side = global_size // plan.patch_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=g)))
            masks = [
                torch.stack([plan.draw_mask(side, side) for _ in range(batch_size)]).to(device)
                for _ in range(plan.global_crops)
            ]
    globals_, locals_ = crops(plan.global_crops, global_size), crops(plan.local_crops, local_size)
    queries = query_boxes = None
    if plan.query_crops:
        p, q = plan.patch_size, plan.query_crops
        queries = torch.randn(batch_size, q, 3, p, p, generator=g).to(device)
        side = torch.empty(batch_size, q).uniform_(*plan.query_scale, generator=g).sqrt() * global_size
        corner = torch.rand(batch_size, q, 2, generator=g) * (global_size - side).unsqueeze(-1)
        query_boxes = torch.cat([corner, corner + side.unsqueeze(-1)], dim=-1).to(device)
    return Batch(
        globals=globals_,
        locals=locals_,
        queries=queries,
        query_boxes=query_boxes,
        boxes=torch.tensor([0.0, 0.0, global_size, global_size]).repeat(batch_size, views, 1).to(device),
        flips=torch.zeros(batch_size, views, dtype=torch.bool, device=device),
        index=torch.arange(batch_size, device=device),
        label=torch.zeros(batch_size, dtype=torch.long, device=device),
        masks=masks,
    )
