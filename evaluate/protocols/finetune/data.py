"""Data for fine-tuning: the dataset hook, timm transforms, samplers, mixup and the matching loss.

**Where datasets come from: :func:`build_datasets`.** Every split the protocol reads goes through this one function,
``build_datasets(data, train_transform, test_transform) -> (Split, Split)`` with ``Split(dataset, labels, classes,
split)``. It stands on :func:`evaluate.protocols.evalrun.load_train_test`, i.e. the dataset registry
(:mod:`evaluate.datasets.registry`, docs/datasets.md): a registry name (``cifar10``, ``cifar100``, ``flowers``,
``cars``, ``inat2018``, ``inat2019``, ``imagenet``, ...) is read in its official layout, training on the dataset's
fit split (train + val where the dataset has a val split: Flowers' trnid + valid, as iBOT) and testing on its test
split (iNat: val, as iBOT); any other name is an ImageFolder tree ``<data.root>/<split>/<class>/<image>``
(ShapesWorld). SimCLR 1 %/10 % lists restrict the train split through ``data.subset``.

**Transforms** are timm's ``create_transform``: training = RandomResizedCrop(``input_size``, ``scale``, bicubic) +
flip + RandAugment + ToTensor/normalise + RandomErasing; test = Resize(``input_size / crop_pct``, shorter side) +
CenterCrop(``input_size``). Small images (CIFAR's 32 px) are upsampled by the crop to ``input_size`` (iBOT).

**Randomness.** Every epoch reseeds python/numpy/torch from (seed, epoch, rank) and the loader's generator from
(seed, epoch), and worker processes seed numpy from their torch seed. An epoch is therefore a function of the state
at its start, which is what makes resuming from an epoch checkpoint bit-exact.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from evaluate.protocols.evalrun import DataConfig, load_train_test
from evaluate.protocols.finetune.config import AugConfig


@dataclasses.dataclass
class Split:
    """A map-style dataset of ``(image tensor, label)``, its labels in order, the class names and the split's name."""

    dataset: Dataset
    labels: list[int]
    classes: tuple[str, ...]
    split: str = ""


def build_datasets(data: DataConfig, train_transform: Any, test_transform: Any) -> tuple[Split, Split]:
    """The (train, test) splits of ``data`` with their transforms applied (see the module docstring).

    Raises:
        DataError: a missing split, an empty one, a bad subset list, or train/test class lists that differ.
    """
    train, test = load_train_test(data)
    return (
        Split(train.dataset(train_transform), train.labels, train.classes, train.split),
        Split(test.dataset(test_transform), test.labels, test.classes, test.split),
    )


def transforms(aug: AugConfig) -> tuple[Any, Any]:
    """(training transform, test transform) from timm's ``create_transform``."""
    from timm.data import create_transform

    train = create_transform(
        aug.input_size,
        is_training=True,
        scale=tuple(aug.scale),
        hflip=aug.hflip,
        color_jitter=aug.color_jitter,
        auto_augment=aug.auto_augment,
        interpolation=aug.interpolation,
        re_prob=aug.reprob,
        re_mode=aug.remode,
        re_count=aug.recount,
    )
    test = create_transform(aug.input_size, is_training=False, interpolation=aug.interpolation, crop_pct=aug.crop_pct)
    return _pillow_safe_posterize(train), test


def _posterize(img: Any, bits_to_keep: int, **_: Any) -> Any:
    """timm's posterize, with 0 bits giving the black image older Pillow returned (Pillow >= 12 raises instead)."""
    from PIL import ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point(lambda _value: 0)
    return ImageOps.posterize(img, bits_to_keep)


def _pillow_safe_posterize(transform: Any) -> Any:
    """Route RandAugment's posterize ops through :func:`_posterize`.

    ``rand-...-inc1`` maps magnitude 10 (reached by m9 + N(0, 0.5) noise) to 0 bits kept; current Pillow rejects 0
    bits, so a long run would crash on its first such draw. The result for 1..8 bits is unchanged.
    """
    from timm.data.auto_augment import RandAugment

    for step in getattr(transform, "transforms", []):
        if isinstance(step, RandAugment):
            for op in step.ops:
                if op.name.startswith("Posterize"):
                    op.aug_fn = _posterize
    return transform


def seed_epoch(seed: int, epoch: int, rank: int) -> int:
    """Seed python, numpy and torch for (seed, epoch, rank); returns the seed used."""
    value = (seed * 1_000_003 + epoch * 9_973 + rank * 101) % (2**31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
    return value


def _worker_init(_worker_id: int) -> None:
    # torch seeds python's random and torch per worker; timm's RandAugment also draws from numpy
    np.random.seed(torch.initial_seed() % 2**32)


def train_loader(
    split: Split, batch: int, rank: int, world: int, aug: AugConfig, num_workers: int, seed: int, device: torch.device
) -> DataLoader:
    """Shuffled per-process batches of ``batch`` images, last partial batch dropped (timm/DeiT).

    ``aug.repeated_aug > 1`` uses timm's ``RepeatAugSampler`` (each image ``repeated_aug`` times per epoch on
    different ranks, the epoch cut to a multiple of 256 images as DeiT, whole below 256 images); otherwise a
    ``DistributedSampler``.
    """
    from timm.data.distributed_sampler import RepeatAugSampler
    from torch.utils.data.distributed import DistributedSampler

    if aug.repeated_aug > 1:
        # DeiT cuts the epoch to a multiple of 256 images; below 256 images timm >= 1.0.31 keeps them all, while
        # older timm (1.0.29, a GPU image's) selects 0 and the epoch is empty: asked for explicitly, one rule
        rounding = 256 if len(split.dataset) >= 256 else 0
        sampler: Any = RepeatAugSampler(
            split.dataset, world, rank, shuffle=True, num_repeats=aug.repeated_aug, selected_round=rounding
        )
    else:
        sampler = DistributedSampler(split.dataset, world, rank, shuffle=True, seed=seed, drop_last=False)
    return DataLoader(
        split.dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=device.type == "cuda",
    )


def test_loader(split: Split, batch: int, rank: int, world: int, num_workers: int, device: torch.device) -> DataLoader:
    """Rank ``r`` reads images r, r + W, ... (no padding, so counts summed over ranks are exact)."""
    indices = list(range(rank, len(split.dataset), world))
    return DataLoader(
        Subset(split.dataset, indices), batch_size=batch, num_workers=num_workers, pin_memory=device.type == "cuda"
    )


def mixup_and_loss(aug: AugConfig, num_classes: int) -> tuple[Any, torch.nn.Module]:
    """(timm ``Mixup`` or None, training loss): soft-target CE under mixup/cutmix (smoothing inside the targets),
    label-smoothing CE with smoothing only, plain CE otherwise."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if aug.mixup > 0 or aug.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=aug.mixup,
            cutmix_alpha=aug.cutmix,
            prob=aug.mixup_prob,
            switch_prob=aug.mixup_switch_prob,
            mode=aug.mixup_mode,
            label_smoothing=aug.smoothing,
            num_classes=num_classes,
        )
        return mixup, SoftTargetCrossEntropy()
    if aug.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=aug.smoothing)
    return None, torch.nn.CrossEntropyLoss()
