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
from pretrain.render import COL, NUM_PARAMS


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

    def draw(self, v: int, height: int, width: int, box: Tensor | None = None) -> Tensor:
        """Every random choice of view ``v`` of a ``height`` x ``width`` image as one row of
        :data:`pretrain.render.PARAM_COLUMNS` (crop, flip, jitter order and factors, grayscale, blur radius,
        solarisation), drawn from the torch global generator in the order the PIL path has always drawn them."""
        cfg = self.cfg
        _, scale, blur_p, solarize_p = self.view_spec(v)
        row = torch.zeros(NUM_PARAMS, dtype=torch.float64)
        p = random_resized_crop_params(height, width, scale, cfg.ratio, box, self.alpha)
        row[[COL["top"], COL["left"], COL["height"], COL["width"]]] = torch.tensor(
            [p.top, p.left, p.height, p.width], dtype=torch.float64
        )
        row[COL["flip"]] = float(torch.rand(()) < cfg.flip_p)
        row[COL["brightness"] : COL["hue"] + 1] = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
        if torch.rand(()) < cfg.jitter_p:
            jp = self.jitter.make_params([])
            row[COL["jitter"]] = 1.0
            row[COL["order0"] : COL["order3"] + 1] = jp["fn_idx"].double()
            for name in ("brightness", "contrast", "saturation", "hue"):
                if jp[f"{name}_factor"] is not None:
                    row[COL[name]] = float(jp[f"{name}_factor"])
        row[COL["gray"]] = float(torch.rand(()) < cfg.grayscale_p)
        if torch.rand(()) < blur_p:
            lo, hi = cfg.blur_radius
            row[COL["blur"]] = lo + (hi - lo) * float(torch.rand(()))
        row[COL["solarize"]] = float(torch.rand(()) < solarize_p)
        return row

    def render_pil(self, img: Image.Image, row: Tensor, size: int) -> Tensor:
        """The view ``row`` (from :meth:`draw`) of ``img``, rendered with PIL and normalised: (3, size, size)."""
        top, left, height, width = (int(row[COL[k]]) for k in ("top", "left", "height", "width"))
        view = TF.resized_crop(img, top, left, height, width, [size, size], InterpolationMode.BICUBIC)
        if row[COL["flip"]] > 0.5:
            view = TF.hflip(view)
        if row[COL["jitter"]] > 0.5:
            params = {"fn_idx": row[COL["order0"] : COL["order3"] + 1].long()}
            for name in ("brightness", "contrast", "saturation", "hue"):
                configured = getattr(self.jitter, name) is not None
                params[f"{name}_factor"] = float(row[COL[name]]) if configured else None
            view = self.jitter.transform(view, params)
        if row[COL["gray"]] > 0.5:
            view = view.convert("L").convert("RGB")
        if row[COL["blur"]] > 0:
            view = view.filter(ImageFilter.GaussianBlur(radius=float(row[COL["blur"]])))
        if row[COL["solarize"]] > 0.5:
            view = ImageOps.solarize(view, threshold=128)
        return TF.normalize(TF.to_tensor(view), list(self.cfg.mean), list(self.cfg.std))

    def draw_all(self, height: int, width: int, box: Tensor | None = None) -> Tensor:
        """(V, NUM_PARAMS): :meth:`draw` for every view, globals first."""
        return torch.stack([self.draw(v, height, width, box) for v in range(self.num_views)])

    @staticmethod
    def boxes_and_flips(params: Tensor) -> tuple[Tensor, Tensor]:
        """``boxes`` (V, 4) (left, top, right, bottom) and ``flips`` (V,) of the views ``params`` (V, NUM_PARAMS)."""
        top, left = params[:, COL["top"]], params[:, COL["left"]]
        boxes = torch.stack([left, top, left + params[:, COL["width"]], top + params[:, COL["height"]]], dim=1)
        return boxes.float(), params[:, COL["flip"]] > 0.5

    def __call__(self, img: Image.Image, box: Tensor | None = None) -> tuple[list[Tensor], Tensor, Tensor]:
        img = img.convert("RGB")
        width, height = img.size
        views, rows = [], []
        for v in range(self.num_views):
            row = self.draw(v, height, width, box)
            views.append(self.render_pil(img, row, self.view_spec(v)[0]))
            rows.append(row)
        boxes, flips = self.boxes_and_flips(torch.stack(rows))
        return views, boxes, flips


def query_boxes(height: int, width: int, count: int, scale: tuple[float, float], ratio: tuple[float, float]) -> Tensor:
    """(count, 4) boxes (left, top, right, bottom) of ADCLR's query crops, drawn as :func:`query_crops` draws them."""
    return torch.tensor([random_resized_crop_params(height, width, scale, ratio).box() for _ in range(count)])


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
    boxes = query_boxes(height, width, count, scale, ratio)
    crops = []
    for left, top, right, bottom in boxes.long().tolist():
        crop = TF.resized_crop(img, top, left, bottom - top, right - left, [size, size], InterpolationMode.BICUBIC)
        crops.append(TF.normalize(TF.to_tensor(crop), list(mean), list(std)))
    return torch.stack(crops), boxes.float()
