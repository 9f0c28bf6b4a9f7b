"""The fine-tuning schema: the only home of defaults. Recipes (``evaluate/protocols/finetune/recipes/*.yaml``) list differences.

The defaults are the DeiT recipe (``facebookresearch/deit`` ``main.py`` argparse defaults, as BAM Table 3 and the iBOT
transfer/semi-supervised scripts use them) except the length, which every recipe sets: AdamW (eps 1e-8, wd 0.05),
lr 5e-4 x global batch / 512, cosine stepped per epoch with 5 warm-up epochs from 1e-6 to a floor of 1e-5, drop-path
0.1, RandAugment ``rand-m9-mstd0.5-inc1``, bicubic RandomResizedCrop, random erasing 0.25 (pixel mode), mixup 0.8,
cutmix 1.0 (switch 0.5), label smoothing 0.1, repeated augmentation x3, EMA 0.99996 kept but not evaluated,
new Linear head (trunc-normal 0.02) on the normed CLS token, test Resize(256) + CenterCrop(224) (crop_pct 0.875).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from evaluate.protocols.evalrun import BackboneConfig, DataConfig
from sslcore.config import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_OR_NONE,
    PROBABILITY,
    SCALE_RANGE,
    validate,
)
from sslcore.device import parse_device


@dataclasses.dataclass
class ModelConfig:
    """The classifier around the backbone (:mod:`evaluate.protocols.finetune.model`)."""

    head: Literal["linear", "proj_layer"] = "linear"  # proj_layer: iBOT semi-sup head (checkpoint's head layer 1)
    pool: Literal["cls", "mean"] = "cls"  # cls: normed CLS (DeiT/iBOT); mean: mean patch + new fc_norm (MAE/BEiT)
    drop_path: float = 0.1  # stochastic depth, linear in depth (timm)
    head_init_std: float = 0.02  # trunc-normal std of the new classifier (MAE: 2e-5)
    head_init_scale: float = 1.0  # BEiT multiplies the new classifier's weights by 0.001
    freeze_sincos: bool = True  # keep a fixed sin-cos positional table fixed (BAM, MoCo v3 fine-tuning)

    def __post_init__(self) -> None:
        validate(self, {"drop_path": FRACTION, "head_init_std": POSITIVE, "head_init_scale": POSITIVE})


@dataclasses.dataclass
class OptimConfig:
    opt: Literal["adamw", "sgd"] = "adamw"
    lr: float = 5e-4  # base lr; effective lr = lr * global batch / lr_batch_ref
    lr_batch_ref: int | None = 512  # DeiT/iBOT 512, MAE 256; None: lr is absolute (BEiT/PQCL scripts)
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    warmup_epochs: int = 5
    warmup_prefix: bool = False  # False: timm/DeiT (cosine counted from 0); True: MAE/BEiT (cosine after warm-up)
    sched_on: Literal["epoch", "step"] = "epoch"  # DeiT: per epoch; MAE/BEiT: per iteration
    weight_decay: float = 0.05
    eps: float = 1e-8
    momentum: float = 0.9  # sgd only
    layer_decay: float | None = None  # BEiT/MAE layer-wise decay (evaluate.protocols.layer_decay); None: off
    clip_grad: float | None = None

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "lr": POSITIVE,
                "lr_batch_ref": POSITIVE_OR_NONE,
                "min_lr": NON_NEGATIVE,
                "warmup_lr": NON_NEGATIVE,
                "warmup_epochs": NON_NEGATIVE,
                "weight_decay": NON_NEGATIVE,
                "eps": POSITIVE,
                "momentum": FRACTION,
                "layer_decay": (lambda v: v is None or 0 < v <= 1, "must be in (0, 1] (or null)"),
                "clip_grad": POSITIVE_OR_NONE,
            },
        )


@dataclasses.dataclass
class AugConfig:
    input_size: int = 224
    scale: list[float] = dataclasses.field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    hflip: float = 0.5
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.3  # DeiT default (iBOT 0.4); timm drops it when a RandAugment policy is set
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    reprob: float = 0.25
    remode: Literal["pixel", "rand", "const"] = "pixel"
    recount: int = 1
    crop_pct: float = 0.875  # test: Resize(input_size / crop_pct) + CenterCrop(input_size)
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: Literal["batch", "pair", "elem"] = "batch"
    smoothing: float = 0.1
    repeated_aug: int = 3  # timm RepeatAugSampler repeats (DeiT/iBOT 3); 1 = off

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "input_size": POSITIVE,
                "scale": SCALE_RANGE,
                "hflip": PROBABILITY,
                "color_jitter": NON_NEGATIVE,
                "reprob": PROBABILITY,
                "recount": POSITIVE,
                "crop_pct": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
                "mixup": NON_NEGATIVE,
                "cutmix": NON_NEGATIVE,
                "mixup_prob": PROBABILITY,
                "mixup_switch_prob": PROBABILITY,
                "smoothing": FRACTION,
                "repeated_aug": POSITIVE,
            },
        )


@dataclasses.dataclass
class EmaConfig:
    enabled: bool = True
    decay: float = 0.99996
    evaluate: bool = False  # DeiT/iBOT keep the EMA but report the model itself

    def __post_init__(self) -> None:
        validate(self, {"decay": FRACTION})


@dataclasses.dataclass
class FinetuneConfig:
    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    aug: AugConfig = dataclasses.field(default_factory=AugConfig)
    ema: EmaConfig = dataclasses.field(default_factory=EmaConfig)
    recipe: str = "deit"  # the recipe's name (records, tables)
    source: str = ""  # paper and code the recipe follows
    epochs: int = 300
    batch_size: int = 1024  # global; each of W processes takes batch_size / W
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    report: Literal["max", "last"] = "max"  # which top-1 is the record's "top1" (the paper's convention)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 (fp16) on CUDA, fp32 on CPU
    device: str = "auto"
    num_workers: int = 8
    threads: int = 0  # torch CPU threads (0 = default); bit-exact resume needs the same count
    seed: int = 0
    resume: bool = True  # continue from <out>/checkpoint.pth when it exists
    progress: bool = True
    out: str | None = None

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "epochs": POSITIVE,
                "batch_size": POSITIVE,
                "eval_every": POSITIVE,
                "num_workers": NON_NEGATIVE,
                "threads": NON_NEGATIVE,
                "seed": NON_NEGATIVE,
            },
        )
        parse_device(self.device, available=False)


# settings that may differ between a run and its resumption
RESUME_FREE_KEYS = ("out", "progress", "resume")
