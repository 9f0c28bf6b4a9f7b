"""Batched multi-crop rendering: every view of a batch from the decoded images and the parameters drawn per image.

The default data path (``data.render: pil``) crops and augments each image in a DataLoader worker with PIL, one
operation and one Python call at a time; on a few CPU cores that costs as much as a tiny ViT's training step.
``data.render: batch`` keeps the *drawing* of every random parameter in the worker (same seeded generator, same
order, so boxes, flips, masks and photometric factors are identical to the PIL path) and does the pixel work here,
once per batch, in a handful of tensor operations (in the loader workers' collate on a CPU run, on the GPU on a CUDA
run; :func:`pretrain.data.render_batch`):

* **crop + resize + flip** is a product of two per-image matrices, ``view = R_y @ image @ R_x^T``, whose rows are
  PIL's bicubic (a = -0.5) resampling coefficients for that crop (the antialiasing support widens with the
  down-scaling factor, as in ``Image.resize``); a flip reverses the rows of ``R_x``;
* **colour jitter** (brightness, contrast, saturation, hue in the per-image random order torchvision's
  ``ColorJitter`` drew), **grayscale** (ITU-R 601 luma) and **solarisation** (>= 128 / 255) are per-pixel tensor ops
  applied to the rows that drew them;
* **Gaussian blur** is again two matrices (sigma = the drawn radius, edges replicated).

Differences from the PIL path, all below a few grey levels (``tests/test_render.py`` bounds them): PIL rounds to
8 bits after every operation and its blur is a three-pass box approximation of the Gaussian; here values stay float
until normalisation and the blur is an exact Gaussian.

Layouts (B images, V views, H x W the batch's largest image; smaller images are zero-padded bottom/right and never
read, since every crop lies inside its image)::

    images  uint8 (B, 3, H, W)
    params  float (B, V, NUM_PARAMS), one row per view, columns PARAM_COLUMNS:
            top, left, height, width     the crop in original-image pixels (integers)
            flip                         1 = mirrored after resizing
            jitter                       1 = colour jitter applied (then the next 8 columns are meaningful)
            order0..order3               the jitter's op order: 0 brightness, 1 contrast, 2 saturation, 3 hue
            brightness, contrast, saturation, hue   the factors (hue as a fraction of the colour circle)
            gray                         1 = converted to grayscale
            blur                         Gaussian sigma in pixels (0 = no blur)
            solarize                     1 = solarised
    boxes   float (B, Q, 4) (left, top, right, bottom) pixels, for query crops (resize only)
    views   float (B, 3, S, S), normalised with ``mean``/``std``
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

PARAM_COLUMNS = (
    "top",
    "left",
    "height",
    "width",
    "flip",
    "jitter",
    "order0",
    "order1",
    "order2",
    "order3",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "gray",
    "blur",
    "solarize",
)
NUM_PARAMS = len(PARAM_COLUMNS)
COL = {name: i for i, name in enumerate(PARAM_COLUMNS)}
LUMA = (0.299, 0.587, 0.114)
SOLARIZE_THRESHOLD = 128 / 255


def _bicubic(t: Tensor, a: float = -0.5) -> Tensor:
    """PIL's bicubic kernel (Keys, a = -0.5) at ``t``."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return near * (t < 1) + far * ((t >= 1) & (t < 2))


def resize_matrix(start: Tensor, length: Tensor, out_size: int, in_size: int) -> Tensor:
    """(B, out_size, in_size) matrices that resample pixels ``[start, start + length)`` of a line of ``in_size``
    pixels to ``out_size`` pixels with PIL's bicubic filter (support scaled by the down-scaling factor, taps
    outside the crop dropped and each row renormalised, as ``Image.resize`` on the cropped image).

    ``start``/``length``: (B,) integer-valued tensors.
    """
    start, length = start.float(), length.float()
    scale = (length / out_size)[:, None, None]  # (B, 1, 1)
    filter_scale = scale.clamp(min=1.0)
    centre = (torch.arange(out_size, dtype=torch.float32, device=start.device)[None, :, None] + 0.5) * scale
    pos = torch.arange(in_size, dtype=torch.float32, device=start.device)[None, None, :] - start[:, None, None]
    weights = _bicubic((pos + 0.5 - centre) / filter_scale) * ((pos >= 0) & (pos < length[:, None, None]))
    return weights / weights.sum(-1, keepdim=True)


def gaussian_matrix(sigma: Tensor, size: int) -> Tensor:
    """(B, size, size) matrices of a 1-D Gaussian blur with standard deviation ``sigma`` (B,) pixels whose taps beyond
    the ends fall on the edge pixel (PIL's edge handling); rows sum to 1. ``sigma`` <= 0 gives the identity."""
    sigma = sigma.double()
    reach = max(1, int(math.ceil(4 * float(sigma.max()) if sigma.numel() else 1)))
    taps = torch.arange(-reach, reach + 1, dtype=torch.float64, device=sigma.device)  # (T,)
    g = torch.exp(-(taps[None] ** 2) / (2 * sigma.clamp(min=1e-6)[:, None] ** 2))  # (B, T)
    g = torch.where(sigma[:, None] > 0, g, (taps[None] == 0).double())
    g = g / g.sum(-1, keepdim=True)
    rows = torch.arange(size, device=sigma.device)
    cols = (rows[:, None] + taps.long()[None]).clamp(0, size - 1)  # (size, T)
    out = torch.zeros(sigma.shape[0], size, size, dtype=torch.float64, device=sigma.device)
    out.scatter_add_(2, cols[None].expand(sigma.shape[0], -1, -1), g[:, None, :].expand(-1, size, -1).contiguous())
    return out.float()


def _as_rows(images: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) -> float (B, H, 3 * W) in [0, 1]: the layout in which one matrix product resizes all columns."""
    b, c, h, w = images.shape
    return (images.float() / 255.0).permute(0, 2, 1, 3).reshape(b, h, c * w)


def _crop(rows: Tensor, ry: Tensor, rx: Tensor) -> Tensor:
    """``rows`` (B, H, 3 * W), ``ry`` (B, [Q,] S, H), ``rx`` (B, [Q,] S, W) -> (B, [Q,] 3, S, S) in [0, 1]."""
    w = rx.shape[-1]
    if ry.ndim == 3:
        t = torch.bmm(ry, rows).unflatten(-1, (3, w))  # (B, S, 3, W)
        return torch.einsum("bscw,btw->bcst", t, rx).clamp(0.0, 1.0)
    t = torch.einsum("bqsh,bhk->bqsk", ry, rows).unflatten(-1, (3, w))  # (B, Q, S, 3, W)
    return torch.einsum("bqscw,bqtw->bqcst", t, rx).clamp(0.0, 1.0)


def crop_matrices(
    top: Tensor, left: Tensor, height: Tensor, width: Tensor, size: int, image_hw: tuple[int, int], flip: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``(R_y (N, size, H), R_x (N, size, W))`` of N crops (boxes as (N,) tensors) of H x W images; a True ``flip``
    reverses the rows of that crop's ``R_x`` (the view mirrored after resizing)."""
    ry = resize_matrix(top, height, size, image_hw[0])
    rx = resize_matrix(left, width, size, image_hw[1])
    if flip is not None:
        rx = torch.where(flip.bool()[:, None, None], rx.flip(1), rx)
    return ry, rx


def resized_crops(
    images: Tensor,
    top: Tensor,
    left: Tensor,
    height: Tensor,
    width: Tensor,
    size: int,
    flip: Tensor | None = None,
) -> Tensor:
    """Bicubic resized crops (B, 3, size, size) in [0, 1] of ``images`` uint8 (B, 3, H, W), optionally mirrored."""
    ry, rx = crop_matrices(top, left, height, width, size, tuple(images.shape[-2:]), flip)
    return _crop(_as_rows(images), ry, rx)


def _luma(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return h, s, maxc


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """(n, S, S) hue (fraction of the circle), saturation, value -> (n, 3, S, S) RGB."""
    h6 = (h % 1.0).unsqueeze(1) * 6  # (n, 1, S, S)
    k = (torch.tensor([5.0, 3.0, 1.0], device=h.device).view(1, 3, 1, 1) + h6) % 6
    ramp = torch.minimum(k, 4 - k).clamp(0.0, 1.0)
    v = v.unsqueeze(1)
    return v - v * s.unsqueeze(1) * ramp


def _jitter_op(op: int, x: Tensor, factor: Tensor) -> Tensor:
    """One of torchvision's ColorJitter ops on ``x`` (n, 3, S, S) in [0, 1] with per-row ``factor`` (n,)."""
    f = factor.view(-1, 1, 1, 1)
    if op == 0:  # brightness: blend with black
        out = x * f
    elif op == 1:  # contrast: blend with the mean luma of the image
        out = f * x + (1 - f) * _luma(x).mean((2, 3), keepdim=True)
    elif op == 2:  # saturation: blend with the luma image
        out = f * x + (1 - f) * _luma(x)
    else:  # hue: rotate on the colour circle
        h, s, v = _rgb_to_hsv(x)
        out = _hsv_to_rgb(h + factor.view(-1, 1, 1), s, v)
    return out.clamp(0.0, 1.0)


def photometric(x: Tensor, params: Tensor) -> Tensor:
    """Colour jitter, grayscale, blur and solarisation of ``x`` (B, 3, S, S) in [0, 1] as ``params`` (B, NUM_PARAMS)
    say (see the module docstring); returns a new tensor in [0, 1].

    Each jitter op runs once per position of the order, on the rows that apply it there.
    """
    params = params.to(x.dtype)
    jitter = params[:, COL["jitter"]] > 0.5
    factors = params[:, COL["brightness"] : COL["hue"] + 1]
    for position in range(4):
        order = params[:, COL["order0"] + position].round().long()
        for op in range(4):
            on = jitter & (order == op)
            if not bool(on.any()):
                continue
            rows = on.nonzero().flatten()
            x = x.index_copy(0, rows, _jitter_op(op, x.index_select(0, rows), factors[rows, op]))
    gray = (params[:, COL["gray"]] > 0.5).view(-1, 1, 1, 1)
    if bool(gray.any()):
        x = torch.where(gray, _luma(x).expand_as(x), x)
    blur = (params[:, COL["blur"]] > 0).nonzero().flatten()
    if blur.numel():
        k = gaussian_matrix(params[blur, COL["blur"]], x.shape[-1]).unsqueeze(1)
        x = x.index_copy(0, blur, torch.matmul(torch.matmul(k, x.index_select(0, blur)), k.transpose(-1, -2)))
    solar = (params[:, COL["solarize"]] > 0.5).view(-1, 1, 1, 1)
    if bool(solar.any()):
        x = torch.where(solar & (x >= SOLARIZE_THRESHOLD - 1e-6), 1.0 - x, x)
    return x.clamp(0.0, 1.0)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def render_views(
    images: Tensor, params: Tensor, sizes: Sequence[int], mean: Sequence[float], std: Sequence[float]
) -> list[Tensor]:
    """Every view: ``images`` uint8 (B, 3, H, W), ``params`` (B, V, NUM_PARAMS), ``sizes`` V output sides -> V x
    (B, 3, S_v, S_v) normalised views (the PIL path's ``MultiCropAugment`` output, batched)."""
    if params.shape[1] != len(sizes) or params.shape[-1] != NUM_PARAMS:
        raise ValueError(f"params {tuple(params.shape)} do not describe {len(sizes)} views of {NUM_PARAMS} columns")
    rows, image_hw = _as_rows(images), tuple(images.shape[-2:])  # converted once for every view
    views = []
    for v, size in enumerate(sizes):
        p = params[:, v]
        box = (p[:, COL["top"]], p[:, COL["left"]], p[:, COL["height"]], p[:, COL["width"]])
        ry, rx = crop_matrices(*box, size, image_hw, p[:, COL["flip"]])
        views.append(normalize(photometric(_crop(rows, ry, rx), p), mean, std))
    return views


def render_queries(images: Tensor, boxes: Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """ADCLR query crops (B, Q, 3, size, size) of ``images`` at ``boxes`` (B, Q, 4) (left, top, right, bottom), bicubic,
    no flip or photometric change (:func:`pretrain.crops.query_crops`, batched)."""
    b, q = boxes.shape[:2]
    h, w = images.shape[-2:]
    left, top, right, bottom = boxes.reshape(b * q, 4).unbind(1)
    ry, rx = crop_matrices(top, left, bottom - top, right - left, size, (h, w), None)
    crops = _crop(_as_rows(images), ry.view(b, q, size, h), rx.view(b, q, size, w))  # (B, Q, 3, S, S)
    return normalize(crops.flatten(0, 1), mean, std).view(b, q, 3, size, size)
