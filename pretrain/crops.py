"""Multi-crop augmentation (2 global + N local views) that also reports where each crop came from.

Every view is a bicubic ``RandomResizedCrop`` of the original image, an optional horizontal flip, then the DINO/BYOL
photometric recipe: colour jitter (p = 0.8), grayscale (p = 0.2), Gaussian blur (p = 1.0 / 0.1 / 0.5 for global 1 /
global 2 / locals, PIL radius U(0.1, 2.0)) and solarisation (threshold 128, p = 0.2 on global 2 only), then
normalisation. Besides the images it returns, per view, the crop box in original-image pixels and the flip flag
(ADCLR and SERE match regions across views with them):

    boxes: (V, 4) float, (left, top, right, bottom) in pixels of the original image, right/bottom exclusive
    flips: (V,) bool, True when the crop was mirrored after resizing

so ``resized_crop(img, top, left, bottom - top, right - left, size, bicubic)`` (then ``hflip`` if the flag is set)
reproduces the view before its photometric changes. Views are ordered [global_0, global_1, local_0, ...].

With a ContrastiveCrop box (normalised ``[h_min, w_min, h_max, w_max]`` of the salient region) the crop size is drawn
as usual and its position by :func:`pretrain.contrastive_crop.sample_crop` (Beta(alpha, alpha) between the box
edges). Randomness comes from the torch global generator; the dataset seeds it per (epoch, image), so augmentations
do not depend on the number of workers (see ``pretrain.data``).
"""

from __future__ import annotations

import dataclasses

import torch
from PIL import Image, ImageFilter, ImageOps
from torch import Tensor
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms import functional as TF

from pretrain.config import DataConfig
from pretrain.contrastive_crop import sample_crop


@dataclasses.dataclass(frozen=True)
class CropParams:
    top: int
    left: int
    height: int
    width: int

    def box(self) -> tuple[float, float, float, float]:
        return (float(self.left), float(self.top), float(self.left + self.width), float(self.top + self.height))


def random_resized_crop_params(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    box: Tensor | None = None,
    alpha: float = 0.6,
) -> CropParams:
    """Crop position/size as torchvision's ``RandomResizedCrop`` (or ContrastiveCrop when ``box`` is given)."""
    if box is None:
        return CropParams(*_rrc(height, width, scale, ratio))
    top, left, h, w = sample_crop(height, width, scale, ratio, box, alpha=alpha)
    return CropParams(int(top), int(left), int(h), int(w))


def _rrc(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    from torchvision.transforms import RandomResizedCrop

    dummy = Image.new("L", (width, height))
    return tuple(int(v) for v in RandomResizedCrop.get_params(dummy, list(scale), list(ratio)))  # type: ignore[return-value]


class MultiCropAugment:
    """``__call__(img, box=None) -> (views: list[Tensor (3, S, S)], boxes: Tensor (V, 4), flips: Tensor (V,))``."""

    def __init__(self, cfg: DataConfig, alpha: float = 0.6) -> None:
        self.cfg = cfg
        self.alpha = alpha
        b, c, s, h = cfg.jitter
        self.jitter = v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h)

    @property
    def num_views(self) -> int:
        return self.cfg.global_crops + self.cfg.local_crops

    def view_spec(self, v: int) -> tuple[int, tuple[float, float], float, float]:
        """(size, scale, blur_p, solarize_p) of view ``v``."""
        cfg = self.cfg
        if v < cfg.global_crops:
            which = min(v, 1)
            return cfg.global_size, cfg.global_scale, cfg.blur_p[which], cfg.solarize_p[which]
        return cfg.local_size, cfg.local_scale, cfg.blur_p[2], cfg.solarize_p[2]

    def photometric(self, img: Image.Image, blur_p: float, solarize_p: float) -> Image.Image:
        cfg = self.cfg
        if torch.rand(()) < cfg.jitter_p:
            img = self.jitter(img)
        if torch.rand(()) < cfg.grayscale_p:
            img = img.convert("L").convert("RGB")
        if torch.rand(()) < blur_p:
            lo, hi = cfg.blur_radius
            radius = lo + (hi - lo) * float(torch.rand(()))
            img = img.filter(ImageFilter.GaussianBlur(radius=radius))
        if torch.rand(()) < solarize_p:
            img = ImageOps.solarize(img, threshold=128)
        return img

    def __call__(self, img: Image.Image, box: Tensor | None = None) -> tuple[list[Tensor], Tensor, Tensor]:
        img = img.convert("RGB")
        width, height = img.size
        views, boxes, flips = [], [], []
        for v in range(self.num_views):
            size, scale, blur_p, solarize_p = self.view_spec(v)
            p = random_resized_crop_params(height, width, scale, self.cfg.ratio, box, self.alpha)
            view = TF.resized_crop(img, p.top, p.left, p.height, p.width, [size, size], InterpolationMode.BICUBIC)
            flip = bool(torch.rand(()) < self.cfg.flip_p)
            if flip:
                view = TF.hflip(view)
            view = self.photometric(view, blur_p, solarize_p)
            tensor = TF.normalize(TF.to_tensor(view), list(self.cfg.mean), list(self.cfg.std))
            views.append(tensor)
            boxes.append(p.box())
            flips.append(flip)
        return views, torch.tensor(boxes, dtype=torch.float32), torch.tensor(flips, dtype=torch.bool)


def query_crops(
    img: Image.Image,
    count: int,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> tuple[Tensor, Tensor]:
    """ADCLR's query crops (paper §3.2): ``count`` random crops of the *original* image, area fraction ``scale``
    (paper: 0.05-0.15), each resized (bicubic) to ``size`` x ``size`` (one patch), normalised; no flip and no
    photometric change (the paper crops "each image"; the crops are shared by both global views).

    Returns ``(crops (count, 3, size, size), boxes (count, 4))``, boxes in original-image pixels as ``__call__``'s.
    Randomness: the torch global generator, like the views.
    """
    img = img.convert("RGB")
    width, height = img.size
    crops, boxes = [], []
    for _ in range(count):
        p = random_resized_crop_params(height, width, scale, ratio)
        crop = TF.resized_crop(img, p.top, p.left, p.height, p.width, [size, size], InterpolationMode.BICUBIC)
        crops.append(TF.normalize(TF.to_tensor(crop), list(mean), list(std)))
        boxes.append(p.box())
    return torch.stack(crops), torch.tensor(boxes, dtype=torch.float32)
