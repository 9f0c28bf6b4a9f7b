"""Epoch-end passes over plain (un-augmented) images: the online k-NN monitor and ContrastiveCrop box refreshes.

Both run the EMA teacher's backbone (or the student's) in eval mode under ``torch.no_grad`` and leave every RNG
untouched (their loaders own a generator), so turning them on does not change the training trajectory.

k-NN (DINO's weighted vote): features are the L2-normalised CLS outputs; for each val image the k most cosine-similar
train images vote for their class with weight exp(sim / T); ``knn_top1`` is the top-1 accuracy in %, computed by
the protocol's own ``evaluate.knn.knn_accuracy`` (one implementation for the monitor and ``sslbench eval knn``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision import transforms as T

from evaluate.knn import knn_accuracy
from pretrain.data import image_folder

if TYPE_CHECKING:
    from pretrain.engine import Trainer

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
    feats = [net(x.to(device)).float().cpu() for x, _ in loader]
    net.train(was_training)
    return torch.cat(feats)


def weighted_knn_top1(
    train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor, k: int, temperature: float
) -> float:
    """DINO's weighted k-NN top-1 (%) on (N, D) / (M, D) features (L2-normalised here)."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    metrics = knn_accuracy(train, train_labels, test, test_labels, ks=(k,), T=temperature, num_classes=num_classes)
    return float(metrics[f"top1@k{k}"])


def eval_transform(size: int, mean, std) -> T.Compose:
    return T.Compose(
        [
            T.Resize(int(round(size / 0.875)), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(list(mean), list(std)),
        ]
    )


def knn_monitor(trainer: Trainer) -> float | None:
    """k-NN top-1 (%) of the current teacher/student backbone on ``knn.val_root`` (rank 0; None elsewhere)."""
    cfg = trainer.cfg.knn
    if not trainer.dist.is_main:
        return None
    method = trainer.method
    net = method.teacher if (cfg.network == "teacher" and method.teacher is not None) else method.student
    mean, std = trainer.cfg.data.mean, trainer.cfg.data.std
    train_s, _ = image_folder(cfg.train_root)
    val_s, _ = image_folder(cfg.val_root)
    with trainer.autocast():
        train_f = extract(net.backbone, train_s, cfg.size, mean, std, cfg.batch_size, trainer.device)
        val_f = extract(net.backbone, val_s, cfg.size, mean, std, cfg.batch_size, trainer.device)
    labels = torch.tensor([lbl for _, lbl in train_s])
    val_labels = torch.tensor([lbl for _, lbl in val_s])
    top1 = weighted_knn_top1(train_f, labels, val_f, val_labels, cfg.k, cfg.temperature)
    logger.info("k-NN monitor: top-1 %.2f%% (k=%d, T=%g)", top1, cfg.k, cfg.temperature)
    return top1


@torch.no_grad()
def compute_crop_boxes(trainer: Trainer) -> Tensor:
    """ContrastiveCrop boxes (N, 4) for the whole training set from the teacher's (else student's) attention.

    Each image is squashed to ``ccrop.size`` squared (no augmentation, as the official code), boxes come from
    :func:`pretrain.contrastive_crop.boxes_for_images`. Ranks split the images (every W-th) and gather the boxes, so
    every rank ends with the same (N, 4) table, indexed by dataset position.
    """
    from pretrain.contrastive_crop import boxes_for_images

    cfg, dist = trainer.cfg, trainer.dist
    method = trainer.method
    net = (method.teacher if method.teacher is not None else method.student).backbone
    samples = trainer.data.dataset.samples
    size = cfg.ccrop.size
    transform = T.Compose(
        [
            T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(list(cfg.data.mean), list(cfg.data.std)),
        ]
    )
    mine = list(range(dist.rank, len(samples), dist.world_size))
    loader = torch.utils.data.DataLoader(
        _Plain([samples[i] for i in mine], transform, size),
        batch_size=cfg.ccrop.batch_size,
        shuffle=False,
        generator=torch.Generator().manual_seed(0),
    )
    with trainer.autocast():
        boxes = [boxes_for_images(net, x.to(trainer.device), cfg.ccrop.threshold).float().cpu() for x, _ in loader]
    local = torch.cat(boxes) if boxes else torch.zeros(0, 4)
    per_rank = -(-len(samples) // dist.world_size)
    padded = torch.zeros(per_rank, 4)
    padded[: len(local)] = local
    table = torch.zeros(len(samples), 4)
    if dist.enabled:
        import torch.distributed as tdist

        parts = [torch.zeros_like(padded, device=trainer.device) for _ in range(dist.world_size)]
        tdist.all_gather(parts, padded.to(trainer.device))
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
