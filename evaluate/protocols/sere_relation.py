"""SERE's relation-difference diagnostic (Li et al., SERE v1 Table 4 / Fig. 3), ``sslbench eval sere-relation``.

For each image of the evaluation split, two views are drawn (bicubic random-resized crops of ``scale``, the model's
resolution, each mirrored with probability ``flip_p``, seeded per image), passed through the backbone, and their
self-relations compared:

* pixel: per-head relations of the patch tokens (:func:`pretrain.losses.sere.pixel_relation`, M = the backbone's
  heads, scale (C / M)^-1/2), both axes resampled onto the S x S grid of the views' overlap
  (:func:`pretrain.overlap.overlap_grids`, :func:`pretrain.losses.sere.resample_relation`, S = ``grid``), so that
  entry (i, j) of both views relates the same two image points; images whose views do not overlap are left out
  (and counted);
* channel: C x C relations (:func:`pretrain.losses.sere.channel_relation`, divided by h w) of the whole views.

Each relation row becomes a distribution ``softmax(R / t)`` (t = ``pixel_temp`` / ``channel_temp``, the
temperatures of SERE's eqs. 2 and 4) and the difference of a row is the L1 distance between the two views'
distributions (in [0, 2]); the metric averages it over rows, heads and images (lower = relations more consistent
across views). The paper does not define its "average difference" further; this choice, the tokens used
(``tokens``: ``normed`` = the final-LayerNorm patch tokens every evaluation uses, ``prenorm`` = the last block's
output before it, SERE's training features; the SERE heads are not part of an exported backbone) and the
geometric-only views (no photometric change) are sslbench's. Absolute values therefore do not compare with the
paper's 0.205 / 1.18; the comparison between checkpoints under the same settings does.

Records: ``protocol = "sere-relation"``, metrics ``pixel_rel_diff`` and ``channel_rel_diff`` (unit "absolute"),
plus the images used and those without overlap.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from evaluate.protocols import evalrun
from pretrain.crops import random_resized_crop_params
from pretrain.losses.sere import channel_relation, pixel_relation, resample_relation
from pretrain.overlap import overlap_grids
from sslcore.config import NON_NEGATIVE, POSITIVE, POSITIVE_OR_NONE, PROBABILITY, SCALE_RANGE, validate
from sslcore.device import parse_device
from sslcore.errors import SSLBenchError

logger = logging.getLogger("sslbench")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclasses.dataclass
class RelationConfig:
    backbone: evalrun.BackboneConfig = dataclasses.field(default_factory=evalrun.BackboneConfig)
    data: evalrun.DataConfig = dataclasses.field(default_factory=evalrun.DataConfig)
    size: int | None = None  # view resolution; None: the model's training resolution
    scale: tuple[float, float] = (0.4, 1.0)  # crop area range of both views (SERE's global crops)
    ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    flip_p: float = 0.5
    grid: int = 13  # overlap grid S
    tokens: Literal["normed", "prenorm"] = "normed"
    pixel_temp: float = 0.5
    channel_temp: float = 0.1
    heads: int | None = None  # pixel relation heads; None: the backbone's attention heads
    max_images: int | None = None  # the first N images of the split (None: all)
    batch_size: int = 32
    num_workers: int = 0
    device: str = "auto"
    seed: int = 0
    out: str | None = None

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "size": POSITIVE_OR_NONE,
                "scale": SCALE_RANGE,
                "flip_p": PROBABILITY,
                "grid": (lambda v: v >= 2, "must be >= 2 (edge-inclusive grid)"),
                "pixel_temp": POSITIVE,
                "channel_temp": POSITIVE,
                "heads": POSITIVE_OR_NONE,
                "max_images": POSITIVE_OR_NONE,
                "batch_size": POSITIVE,
                "num_workers": NON_NEGATIVE,
                "seed": NON_NEGATIVE,
            },
        )

    def splits_used(self, plan: Any) -> list[str]:
        return [plan.test]


class TwoViews(Dataset):
    """Item i: (views (2, 3, size, size), boxes (2, 4) in original pixels, flips (2,) bool), seeded by (seed, i)."""

    def __init__(self, images: Any, size: int, cfg: RelationConfig) -> None:
        self.images, self.size, self.cfg = images, size, cfg

    def __len__(self) -> int:
        return len(self.images) if self.cfg.max_images is None else min(len(self.images), self.cfg.max_images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        img = self.images.open(index).convert("RGB")
        views, boxes, flips = [], [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed * 1_000_003 + index)
            for _ in range(2):
                p = random_resized_crop_params(img.height, img.width, self.cfg.scale, self.cfg.ratio)
                view = TF.resized_crop(
                    img, p.top, p.left, p.height, p.width, [self.size, self.size], InterpolationMode.BICUBIC
                )
                flip = bool(torch.rand(()) < self.cfg.flip_p)
                view = TF.hflip(view) if flip else view
                views.append(TF.normalize(TF.to_tensor(view), IMAGENET_MEAN, IMAGENET_STD))
                boxes.append(p.box())
                flips.append(flip)
        return torch.stack(views), torch.tensor(boxes, dtype=torch.float32), torch.tensor(flips)


def row_l1(a: Tensor, b: Tensor, temp: float) -> Tensor:
    """Per-row L1 distance between softmax(a / t) and softmax(b / t) over the last axis: (..., K) -> (...)."""
    return (F.softmax(a.float() / temp, dim=-1) - F.softmax(b.float() / temp, dim=-1)).abs().sum(-1)


def relation_differences(
    maps: tuple[Tensor, Tensor],
    boxes: Tensor,
    flips: Tensor,
    heads: int,
    grid: int,
    pixel_temp: float,
    channel_temp: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per image: (pixel difference, channel difference, overlap flag) of two views' (B, C, h, w) token maps."""
    hw = tuple(maps[0].shape[-2:])
    g0, g1 = overlap_grids(boxes[:, 0], boxes[:, 1], flips[:, 0], flips[:, 1], grid)
    rel0 = resample_relation(pixel_relation(maps[0], heads), hw, g0.to(maps[0].device))
    rel1 = resample_relation(pixel_relation(maps[1], heads), hw, g1.to(maps[1].device))
    pixel = row_l1(rel0, rel1, pixel_temp).mean(dim=(1, 2))
    channel = row_l1(channel_relation(maps[0]), channel_relation(maps[1]), channel_temp).mean(dim=1)
    overlap = (g0[:, 0, 0, 0] > -2).to(pixel.device)
    return pixel, channel, overlap


@torch.no_grad()
def run(cfg: RelationConfig, backbone: Any = None) -> dict[str, float]:
    started = time.time()
    model, info = evalrun.load_model(cfg.backbone, backbone)
    plan = evalrun.data_plan(cfg.data)
    images = plan.load(plan.test)
    device = parse_device(cfg.device)
    model = model.to(device)
    size = cfg.size or int(getattr(getattr(model, "arch", None), "img_size", 0) or 224)
    heads = cfg.heads or model.blocks[-1].attn.num_heads
    loader = DataLoader(TwoViews(images, size, cfg), batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    pixel_sum, channel_sum, used, total, no_overlap = 0.0, 0.0, 0, 0, 0
    for views, boxes, flips in loader:
        outs = [model.forward_tokens(views[:, k].to(device)) for k in range(2)]
        maps = tuple(o.patch_map(prenorm=cfg.tokens == "prenorm") for o in outs)
        pixel, channel, overlap = relation_differences(
            maps, boxes, flips, heads, cfg.grid, cfg.pixel_temp, cfg.channel_temp
        )
        pixel_sum += float(pixel[overlap].sum())
        channel_sum += float(channel.sum())
        used += int(overlap.sum())
        total += len(channel)
        no_overlap += int((~overlap).sum())
    if total == 0:
        raise SSLBenchError(f"data.root={cfg.data.root}: no image in split {plan.test!r}")
    metrics = {
        "pixel_rel_diff": pixel_sum / used if used else float("nan"),
        "channel_rel_diff": channel_sum / total,
    }
    dataset = evalrun.dataset_label(cfg.data)
    out = evalrun.output_dir(cfg.out, "sere-relation", info, dataset)
    extra = {"view_size": size, "relation_heads": heads, "images": total, "images_without_overlap": no_overlap}
    evalrun.finish(
        "sere-relation", dataset, plan.test, metrics, cfg=cfg, info=info, started=started, out=out,
        seed=cfg.seed, extra_settings=extra, unit="absolute",
    )  # fmt: skip
    logger.info("sere-relation: %d images (%d without overlap, left out of the pixel term)", total, no_overlap)
    return metrics


add_arguments = evalrun.add_arguments


def run_cli(args: argparse.Namespace) -> int:
    cfg = evalrun.config_from_args(RelationConfig, args)
    evalrun.check_outputs(cfg)
    metrics = run(cfg)
    body = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())  # not percentages: four decimals
    print(f"sere-relation {evalrun.dataset_label(cfg.data)}: {body}")
    return 0
