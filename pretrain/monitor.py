"""Epoch-end passes over plain (un-augmented) images: the online k-NN monitor and ContrastiveCrop box refreshes.

Both take a backbone (the engine passes the EMA teacher's, or the student's) and explicit settings, run it in eval
mode under ``torch.no_grad`` and leave every RNG untouched (their loaders own a generator), so turning them on does
not change the training trajectory.

k-NN (DINO's weighted vote) and the effective rank of the features: features are the CLS outputs of :meth:`pretrain.vit.SSLViT.forward_tokens`; the vote
itself is the ``knn_fn`` handed in (``evaluate.protocols.knn.knn_accuracy``: one implementation for the monitor and
``sslbench eval knn``, without this package importing the evaluation harness).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision import transforms as T

from pretrain.config import CCropConfig, DataConfig, KnnConfig
from pretrain.contrastive_crop import boxes_for_images
from pretrain.data import image_folder
from pretrain.diagnostics import effective_rank, mean_cosine
from pretrain.dist import Distributed

# knn_fn(train (N, D), train_labels (N,), test (M, D), test_labels (M,), ks=(k,), T=temperature, num_classes=C)
#   -> {"top1@k<k>": accuracy in %, ...}
KnnFn = Callable[..., dict[str, float]]

logger = logging.getLogger("sslbench")


class _Plain(torch.utils.data.Dataset):
    def __init__(self, samples: list[tuple[str, int]], transform: T.Compose | Any, size: int) -> None:
        self.samples, self.transform, self.size = samples, transform, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                return self.transform(img.convert("RGB")), label
        except OSError:
            return torch.zeros(3, self.size, self.size), label  # an unreadable image must not stop training


@torch.no_grad()
def extract(net: nn.Module, samples: list[tuple[str, int]], size: int, mean, std, batch: int, device) -> Tensor:
    """(N, D) backbone outputs of ``samples`` in order."""
    loader = torch.utils.data.DataLoader(
        _Plain(samples, eval_transform(size, mean, std), size),
        batch_size=batch,
        shuffle=False,
        generator=torch.Generator().manual_seed(0),
    )
    was_training = net.training
    net.eval()
    feats = [net.forward_tokens(x.to(device)).cls.float().cpu() for x, _ in loader]
    net.train(was_training)
    return torch.cat(feats)


def eval_transform(size: int, mean, std) -> T.Compose:
    return T.Compose(
        [
            T.Resize(int(round(size / 0.875)), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(list(mean), list(std)),
        ]
    )


def knn_pass(
    backbone: nn.Module, cfg: KnnConfig, data: DataConfig, device: torch.device, knn_fn: KnnFn
) -> dict[str, float]:
    """One monitor pass on ``cfg.train_root`` -> ``cfg.val_root`` (ImageFolder trees).

    Returns ``knn_top1`` (%), ``knn_eff_rank``, the effective rank of the training-set CLS features
    (:func:`pretrain.diagnostics.effective_rank`: near 1 when the backbone maps every image to one line) and
    ``knn_mean_cosine``, their mean cosine between different images (:func:`pretrain.diagnostics.mean_cosine`: near 1
    when they share one direction).
    """
    train_s, _ = image_folder(cfg.train_root)
    val_s, _ = image_folder(cfg.val_root)
    train_f = extract(backbone, train_s, cfg.size, data.mean, data.std, cfg.batch_size, device)
    val_f = extract(backbone, val_s, cfg.size, data.mean, data.std, cfg.batch_size, device)
    labels = torch.tensor([lbl for _, lbl in train_s])
    val_labels = torch.tensor([lbl for _, lbl in val_s])
    num_classes = int(max(labels.max(), val_labels.max())) + 1
    metrics = knn_fn(train_f, labels, val_f, val_labels, ks=(cfg.k,), T=cfg.temperature, num_classes=num_classes)
    top1 = float(metrics[f"top1@k{cfg.k}"])
    rank, shared = effective_rank(train_f), mean_cosine(train_f)
    logger.info(
        "k-NN monitor: top-1 %.2f%% (k=%d, T=%g), effective rank %.1f, mean cosine %.3f",
        top1, cfg.k, cfg.temperature, rank, shared,
    )  # fmt: skip
    return {"knn_top1": top1, "knn_eff_rank": rank, "knn_mean_cosine": shared}


def knn_top1(backbone: nn.Module, cfg: KnnConfig, data: DataConfig, device: torch.device, knn_fn: KnnFn) -> float:
    """k-NN top-1 (%) of ``backbone`` (see :func:`knn_pass`)."""
    return knn_pass(backbone, cfg, data, device, knn_fn)["knn_top1"]


@torch.no_grad()
def crop_boxes(
    backbone: nn.Module,
    samples: Sequence[tuple[str, int]],
    cc: CCropConfig,
    data: DataConfig,
    dist: Distributed,
    device: torch.device,
) -> Tensor:
    """ContrastiveCrop boxes (N, 4) for the whole training set from the teacher's (else student's) attention.

    Each image is squashed to ``ccrop.size`` squared (no augmentation, as the official code), boxes come from
    :func:`pretrain.contrastive_crop.boxes_for_images`. Ranks split the images (every W-th) and gather the boxes, so
    every rank ends with the same (N, 4) table, indexed by dataset position.
    """
    size = cc.size
    transform = T.Compose(
        [
            T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(list(data.mean), list(data.std)),
        ]
    )
    mine = list(range(dist.rank, len(samples), dist.world_size))
    loader = torch.utils.data.DataLoader(
        _Plain([samples[i] for i in mine], transform, size),
        batch_size=cc.batch_size,
        shuffle=False,
        generator=torch.Generator().manual_seed(0),
    )
    boxes = [boxes_for_images(backbone, x.to(device), cc.threshold).float().cpu() for x, _ in loader]
    local = torch.cat(boxes) if boxes else torch.zeros(0, 4)
    per_rank = -(-len(samples) // dist.world_size)
    padded = torch.zeros(per_rank, 4)
    padded[: len(local)] = local
    table = torch.zeros(len(samples), 4)
    if dist.enabled:
        import torch.distributed as tdist

        parts = [torch.zeros_like(padded, device=device) for _ in range(dist.world_size)]
        tdist.all_gather(parts, padded.to(device))
        for r, part in enumerate(parts):
            idx = list(range(r, len(samples), dist.world_size))
            table[idx] = part[: len(idx)].cpu()
    else:
        table[mine] = local
    if dist.is_main:
        logger.info("ContrastiveCrop: %d boxes, mean area %.3f", len(table), float(_areas(table).mean()))
    return table


def _areas(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
