"""Overlap geometry of two crops of one image: the S x S sampling grid of their common region (SERE, §3.2).

Pure functions of the crops' boxes and flips as :class:`~pretrain.views.Batch` records them (boxes
``(left, top, right, bottom)`` in original-image pixels, right/bottom exclusive; flip = mirrored after resizing). The
official code (MCG-NKU/SERE ``transforms_overlap.get_grid``) computes the same grids in the data-loader worker; here
they are built on the fly from the batch, so no method needs its own data pipeline.

For crops a and b with overlap box ``[x0, x1) x [y0, y1)`` (valid iff x0 < x1 and y0 < y1), the grid in crop k's
normalised coordinates is edge-inclusive and evenly spaced::

    u_c = (x0 - left_k) / w_k + c * (x1 - x0) / (w_k * (S - 1))       c = 0 .. S-1   (columns, x)
    v_r = (y0 - top_k)  / h_k + r * (y1 - y0) / (h_k * (S - 1))       r = 0 .. S-1   (rows, y)
    u <- 1 - u  when crop k is flipped
    grid_k[r, c] = (2 u_c - 1, 2 v_r - 1)                              (x, y), ``grid_sample`` convention

so index (r, c) is the same image point in both crops. Without overlap every entry is -2 (outside [-1, 1]: zero
padding then samples zeros everywhere). With ``align_corners=False`` a grid value of exactly +-1 lies half a feature
cell outside the map, so bilinear sampling with zero padding halves the edge value there: the overlap touches a crop
border on at least one side, and those rows/columns of the sampled map are attenuated, as in the released code.

Layouts: ``box_a``/``box_b`` (B, 4) float, ``flip_a``/``flip_b`` (B,) bool; returns two (B, S, S, 2) float32 grids.
"""

from __future__ import annotations

import torch
from torch import Tensor

NO_OVERLAP = -2.0


def overlap_boxes(box_a: Tensor, box_b: Tensor) -> tuple[Tensor, Tensor]:
    """The intersection ``(x0, y0, x1, y1)`` (B, 4) of two box batches and whether it is non-empty (B,) bool."""
    inter = torch.cat([torch.maximum(box_a[:, :2], box_b[:, :2]), torch.minimum(box_a[:, 2:], box_b[:, 2:])], dim=1)
    valid = (inter[:, 0] < inter[:, 2]) & (inter[:, 1] < inter[:, 3])
    return inter, valid


def grid_in_crop(inter: Tensor, box: Tensor, flip: Tensor, size: int) -> Tensor:
    """The edge-inclusive ``size x size`` grid of the region ``inter`` (B, 4) in the normalised coordinates of the
    crops ``box`` (B, 4), mirrored where ``flip`` (B,); (B, S, S, 2) float32 in [-1, 1] (x, y)."""
    if size < 2:
        raise ValueError(f"an edge-inclusive overlap grid needs size >= 2, got {size}")
    inter, box = inter.double(), box.double()
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    steps = torch.arange(size, dtype=torch.float64, device=box.device) / (size - 1)  # (S,)
    u = ((inter[:, 0] - box[:, 0]) / w)[:, None] + steps[None] * ((inter[:, 2] - inter[:, 0]) / w)[:, None]
    v = ((inter[:, 1] - box[:, 1]) / h)[:, None] + steps[None] * ((inter[:, 3] - inter[:, 1]) / h)[:, None]
    u = torch.where(flip.bool()[:, None], 1.0 - u, u)
    gx = (2 * u - 1)[:, None, :].expand(-1, size, -1)  # (B, S rows, S cols): x varies along columns
    gy = (2 * v - 1)[:, :, None].expand(-1, -1, size)
    return torch.stack([gx, gy], dim=-1).float()


def overlap_grids(box_a: Tensor, box_b: Tensor, flip_a: Tensor, flip_b: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Sampling grids of the overlap of crops a and b in each crop's coordinates (module docstring); -2 everywhere
    for a pair without overlap."""
    if box_a.shape != box_b.shape or box_a.ndim != 2 or box_a.shape[1] != 4:
        raise ValueError(f"boxes must both be (B, 4), got {tuple(box_a.shape)} and {tuple(box_b.shape)}")
    inter, valid = overlap_boxes(box_a.double(), box_b.double())
    grids = []
    for box, flip in ((box_a, flip_a), (box_b, flip_b)):
        grid = grid_in_crop(inter, box, flip, size)
        grids.append(torch.where(valid[:, None, None, None], grid, torch.full_like(grid, NO_OVERLAP)))
    return grids[0], grids[1]
