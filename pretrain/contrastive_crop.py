"""ContrastiveCrop for ViTs (BAM paper App. 0.G; Peng et al., CVPR 2022): attention boxes and box-guided crops.

For CNN/MetaFormer backbones (:mod:`pretrain.pooled`) step 1 uses the ContrastiveCrop paper's own map for CNNs
instead of attention: the last feature map averaged over channels (class-agnostic activation), then the same min-max
normalisation, upsampling and threshold.

1. **Boxes.** For each training image (resized to a square without keeping the aspect ratio, no augmentation) the
   teacher's last-block attention from the CLS token to the patches is summed over heads, min-max normalised to
   [0, 1] (``+1e-5`` in the denominator), upsampled bilinearly to the input resolution, and thresholded (0.1). The box
   is the extent of the rows and columns holding an above-threshold pixel, as fractions of the image:
   ``[h_min, w_min, h_max, w_max]`` in [0, 1] (the official format). Being fractions, the same box applies to the
   original image: in pixels it is ``box * (H, W, H, W)``.
2. **Crops.** The crop size is drawn as torchvision's ``RandomResizedCrop`` does (area fraction in ``scale``,
   log-uniform aspect ratio in ``ratio``, 10 tries, else a centre crop). The top edge is
   ``floor(c0 + (c1 - c0) * beta)`` with ``beta ~ Beta(alpha, alpha)`` (alpha = 0.6: U-shaped) and
   ``c = clamp(H * h_edge - h / 2, 0, H - h)`` for the box's two edges, so the crop centre lies between the box edges
   (leaning towards them) and the crop stays inside the image; the left edge likewise.
3. **Schedule** (engine): plain random crops for the warm-up (40 epochs), then boxes refreshed every 20 epochs
   (paper) or 40 (official code); initial boxes are the whole image. :class:`BoxStore` keeps them by dataset index
   and goes into checkpoints.

Bugs of the official code at HEAD (``DanielShalam/BAM``, ``contrastive_croping/``, ``main_pretrain.py``) that this
module does not have:

* the box update forwards six positional arguments to a five-argument ViT function (TypeError at the first update);
* the teacher is passed as ``teacher_no_ddp.backbone``, a name never assigned (None), so the update crashes; the
  teacher k-NN monitor has the same bug;
* the update asserts a ViT architecture, so the CAFormer/ResNet runs (ContrastiveCrop on by default) crash at the
  first update; here any model giving a CLS attention works;
* a constant attention map has no pixel above the threshold and indexing the empty set crashes; here the box is the
  whole image;
* the far edge is the index of the last above-threshold pixel, not its end, so a full box is [0, 0, 223/224,
  223/224]; here it is ``(last + 1) / size``;
* boxes are gathered in the sampler's interleaved rank order and cut to the dataset length, which silently assumes an
  unshuffled ``DistributedSampler``; here boxes are stored by explicit dataset index.

Randomness in :func:`sample_crop` comes from torch's global generator (as torchvision's), so a data pipeline that
seeds it per (epoch, image) gets reproducible crops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

FULL_BOX = (0.0, 0.0, 1.0, 1.0)


def boxes_from_attention(
    cls_attn: Tensor, grid: tuple[int, int], threshold: float = 0.1, heatmap_size: tuple[int, int] | None = None
) -> Tensor:
    """Salient boxes from CLS-to-patch attention.

    Args:
        cls_attn: (B, heads, h*w), (B, heads, h, w) or an already summed (B, h, w) map; patches in row-major order.
        grid: (h, w), the patch grid.
        threshold: pixels of the min-max normalised map strictly above it are salient.
        heatmap_size: (H, W) to upsample the map to (bilinear, ``align_corners=False``) before thresholding; the
            official code uses the input resolution. ``None`` thresholds the patch grid itself.

    Returns:
        (B, 4) float boxes ``[h_min, w_min, h_max, w_max]`` as fractions of the image height/width.
    """
    gh, gw = grid
    if cls_attn.ndim == 3 and cls_attn.shape[-2:] == (gh, gw) and gh == 1:
        maps = cls_attn  # a (B, 1, w) map is a summed map, not (B, heads, h*w)
    elif cls_attn.ndim == 3 and cls_attn.shape[-1] == gh * gw:
        maps = cls_attn.sum(1).reshape(-1, gh, gw)
    elif cls_attn.ndim == 4 and cls_attn.shape[-2:] == (gh, gw):
        maps = cls_attn.sum(1)
    elif cls_attn.ndim == 3 and cls_attn.shape[-2:] == (gh, gw):
        maps = cls_attn
    else:
        raise ValueError(f"attention of shape {tuple(cls_attn.shape)} does not match the patch grid {grid}")
    maps = maps.float()
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    maps = (maps - low) / (high - low + 1e-5)
    if heatmap_size is not None:
        maps = F.interpolate(maps[:, None], size=tuple(heatmap_size), mode="bilinear", align_corners=False)[:, 0]
    salient = maps > threshold
    h_min, h_max = _extent(salient.any(dim=2))
    w_min, w_max = _extent(salient.any(dim=1))
    boxes = torch.stack([h_min, w_min, h_max, w_max], dim=1)
    empty = ~salient.flatten(1).any(dim=1)
    return torch.where(empty[:, None], boxes.new_tensor(FULL_BOX), boxes)


def _extent(flags: Tensor) -> tuple[Tensor, Tensor]:
    """First and one-past-last True positions of each row of (B, n) flags, as fractions of n."""
    n = flags.shape[1]
    index = torch.arange(n, device=flags.device)
    first = torch.where(flags, index, n).amin(dim=1)
    last = torch.where(flags, index, -1).amax(dim=1)
    return first.float() / n, (last + 1).float() / n


@torch.no_grad()
def boxes_for_images(model: Any, images: Tensor, threshold: float = 0.1) -> Tensor:
    """Boxes for a batch of (B, 3, H, W) images, eval mode: from ``model.forward_tokens(x, attn=True)`` (an
    :class:`SSLViT`: CLS attention), or from ``model.activation_map(x)`` (a CNN/MetaFormer of
    :mod:`pretrain.pooled`: the last feature map averaged over channels, the ContrastiveCrop paper's map for CNNs).

    The map is upsampled to (H, W) before thresholding, as the official code does.
    """
    was_training = model.training
    model.eval()
    try:
        if hasattr(model, "activation_map"):
            heat = model.activation_map(images)  # (B, h, w)
            return boxes_from_attention(heat, tuple(heat.shape[-2:]), threshold, heatmap_size=tuple(images.shape[-2:]))
        attn = model.forward_tokens(images, attn=True).attn  # (B, heads, 1 + h*w, 1 + h*w)
    finally:
        model.train(was_training)
    patch = model.patch_embed.patch_size
    grid = (images.shape[-2] // patch[0], images.shape[-1] // patch[1])
    return boxes_from_attention(attn[:, :, 0, 1:], grid, threshold, heatmap_size=tuple(images.shape[-2:]))


def _crop_size(height: int, width: int, scale: Sequence[float], ratio: Sequence[float]) -> tuple[int, int] | None:
    """torchvision ``RandomResizedCrop`` size sampling (same random calls); None when 10 tries fail."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio, dtype=torch.float64))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item()).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return h, w
    return None


def _centre_crop(height: int, width: int, ratio: Sequence[float]) -> tuple[int, int, int, int]:
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def sample_crop(
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    box: Tensor | Sequence[float],
    alpha: float = 0.6,
) -> tuple[int, int, int, int]:
    """A ContrastiveCrop ``(top, left, crop_height, crop_width)`` inside a ``height`` x ``width`` image.

    ``box`` is ``[h_min, w_min, h_max, w_max]`` (fractions); see the module docstring for the rule.
    """
    size = _crop_size(height, width, scale, ratio)
    if size is None:
        return _centre_crop(height, width, ratio)
    h, w = size
    h0, w0, h1, w1 = (float(v) for v in box)
    beta = torch.distributions.Beta(torch.tensor([float(alpha)]), torch.tensor([float(alpha)]))
    b_top, b_left = beta.sample((2,)).flatten().tolist()

    def edge(lo: float, hi: float, full: int, crop: int, b: float) -> int:
        c0 = min(max(full * lo - crop / 2, 0.0), full - crop)
        c1 = min(max(full * hi - crop / 2, 0.0), full - crop)
        return min(int(math.floor(c0 + (c1 - c0) * b)), full - crop)

    return edge(h0, h1, height, h, b_top), edge(w0, w1, width, w, b_left), h, w


class BoxStore:
    """ContrastiveCrop boxes by dataset index: a (N, 4) float tensor, initially the whole image.

    The tensor is in shared memory, so DataLoader workers started by fork see updates made in the main process.
    ``epoch`` is the epoch of the last update (-1: never), which tells the data pipeline whether to use the boxes.
    """

    def __init__(self, num_images: int) -> None:
        self.boxes = torch.tensor(FULL_BOX).repeat(num_images, 1).share_memory_()
        self.epoch = -1

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.boxes[index]

    def update(self, indices: Tensor, boxes: Tensor, epoch: int) -> None:
        """Set the boxes of dataset ``indices`` (B,) to ``boxes`` (B, 4); duplicates (padded samplers) are harmless."""
        if boxes.shape != (len(indices), 4):
            raise ValueError(f"expected boxes of shape ({len(indices)}, 4), got {tuple(boxes.shape)}")
        self.boxes[indices.long().cpu()] = boxes.detach().float().cpu()
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {"boxes": self.boxes.clone(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        boxes = state["boxes"]
        if boxes.shape != self.boxes.shape:
            raise ValueError(
                f"checkpoint holds boxes for {tuple(boxes.shape)}, the dataset needs {tuple(self.boxes.shape)}"
            )
        self.boxes.copy_(boxes)
        self.epoch = int(state["epoch"])
