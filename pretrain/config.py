"""The pretraining configuration schema: the only home of the defaults (YAML recipes list differences).

Sections: ``model`` (backbone), ``data`` (source and multi-crop augmentation), ``optim`` (AdamW and the per-iteration
schedules), ``ema`` (teacher), ``train`` (loop, precision, checkpoints, logging), ``ccrop`` (ContrastiveCrop boxes),
``knn`` (online k-NN monitor), and one section per method component: ``bam``, ``dino`` (DINO head and CLS
self-distillation, also the CLS part of iBOT and of the methods built on it), ``ibot`` (masked patch prediction, also
ADCLR*'s MIM term), ``adclr`` (query crops and their loss term) and ``sere`` (pixel/channel self-relation losses).
Load with ``sslcore.config.load_config(PretrainConfig, path, overrides)``.

Defaults follow DINO/BAM conventions where one exists; the BAM recipes in ``pretrain/configs/`` set the paper's values.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from sslcore.config import FRACTION, NON_NEGATIVE, POSITIVE, PROBABILITY, SCALE_RANGE, validate
from sslcore.device import parse_device


@dataclasses.dataclass
class ModelConfig:
    """Backbone (``pretrain.backbones.build_backbone``)."""

    arch: str = "vit_small"  # a name in pretrain.vit.ARCHS or pretrain.pooled.POOLED_ARCHS (resnet50, caformer_m36)
    pos_embed: Literal["learned", "sincos"] = "learned"
    freeze_patch_embed: bool = False  # MoCo v3 "random patch projection"
    init: Literal["timm", "moco", "dino"] = "timm"
    drop_path: float = 0.0
    pos_interp: Literal["dino", "timm"] = "dino"


@dataclasses.dataclass
class DataConfig:
    """Image source and the multi-crop augmentation (DINO/BYOL photometric recipe per view)."""

    root: str = ""  # ImageFolder tree: <root>/<class>/<image> (ImageNet train, ShapesWorld classification/train)
    global_crops: int = 2
    global_size: int = 224
    global_scale: tuple[float, float] = (0.25, 1.0)
    local_crops: int = 6
    local_size: int = 96
    local_scale: tuple[float, float] = (0.05, 0.25)
    ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)  # global 1, global 2, locals
    blur_radius: tuple[float, float] = (0.1, 2.0)
    solarize_p: tuple[float, float, float] = (0.0, 0.2, 0.0)  # global 1, global 2, locals
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    num_workers: int = 4
    on_bad_image: Literal["skip", "error"] = "skip"
    # where the crops' pixels are made: "pil" = per image in the DataLoader workers (the official recipes' PIL ops);
    # "batch" = the same parameters drawn per image, the pixels of the whole batch made at once by tensor ops (in the
    # loader's collate on CPU, on the GPU under CUDA; pretrain.render: crops within ~1 grey level of PIL's bicubic,
    # photometric ops within a few)
    render: Literal["pil", "batch"] = "pil"

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "global_crops": POSITIVE,
                "global_size": POSITIVE,
                "global_scale": SCALE_RANGE,
                "local_crops": NON_NEGATIVE,
                "local_size": POSITIVE,
                "local_scale": SCALE_RANGE,
                "ratio": (lambda v: 0 < v[0] <= v[1], "must be (low, high) with 0 < low <= high"),
                "flip_p": PROBABILITY,
                "jitter_p": PROBABILITY,
                "grayscale_p": PROBABILITY,
                "blur_p": (lambda v: all(0 <= p <= 1 for p in v), "each must be in [0, 1]"),
                "solarize_p": (lambda v: all(0 <= p <= 1 for p in v), "each must be in [0, 1]"),
                "std": (lambda v: all(x > 0 for x in v), "each must be > 0"),
                "num_workers": NON_NEGATIVE,
            },
        )


@dataclasses.dataclass
class OptimConfig:
    """AdamW (or LARS) and the per-iteration LR / weight-decay schedules (linear warm-up, then cosine)."""

    name: Literal["adamw", "lars"] = "adamw"  # lars: BAM's ResNet-50 recipe (pretrain.optim.LARS)
    lr: float = 5e-4  # per 256 images: peak lr = lr * global_batch / 256
    min_lr: float = 1e-6  # absolute (not scaled)
    warmup_epochs: float = 10.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    momentum: float = 0.9  # LARS
    lars_eta: float = 0.001  # LARS trust coefficient
    clip_grad: float = 3.0  # 0 disables clipping
    clip_mode: Literal["global", "per_param"] = "global"  # per_param = DINO's utils.clip_gradients
    freeze_last_layer_epochs: int = 0
    last_layer: str = ""  # parameter-name prefix in the student (e.g. "head.last_layer") frozen for those epochs

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "lr": POSITIVE,
                "min_lr": NON_NEGATIVE,
                "warmup_epochs": NON_NEGATIVE,
                "weight_decay": NON_NEGATIVE,
                "weight_decay_end": NON_NEGATIVE,
                "clip_grad": NON_NEGATIVE,
                "freeze_last_layer_epochs": NON_NEGATIVE,
                "momentum": FRACTION,
                "lars_eta": POSITIVE,
            },
        )


@dataclasses.dataclass
class EMAConfig:
    """Teacher: an EMA of the student with momentum on a per-iteration cosine from ``momentum`` to ``momentum_end``."""

    enabled: bool = True  # False = teacher-free (the method uses the student for its targets)
    momentum: float = 0.996
    momentum_end: float = 1.0

    def __post_init__(self) -> None:
        validate(self, {"momentum": PROBABILITY, "momentum_end": PROBABILITY})


@dataclasses.dataclass
class TrainConfig:
    """The loop: length, batch, precision, devices, checkpoints and logging."""

    out: str = "runs/pretrain"
    epochs: int = 100
    batch_size: int = 64  # per process; the global batch is batch_size * world_size
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    device: str = "auto"  # auto = cuda:<local_rank> if available else cpu
    seed: int = 0
    threads: int = 0  # torch CPU threads (0 = torch's default); results are bit-reproducible per thread count
    checkpoint_every_steps: int = 0  # 0 = only at the end of each epoch
    keep_every_epochs: int = 0  # also keep checkpoint<epoch>.pth every N epochs (0 = never)
    log_every: int = 10
    export_every_epoch: bool = True  # refresh <out>/backbone.pth at each epoch end
    compile: bool = False  # torch.compile the student and teacher networks (in place: weights and keys unchanged)

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "epochs": POSITIVE,
                "batch_size": POSITIVE,
                "seed": NON_NEGATIVE,
                "threads": NON_NEGATIVE,
                "checkpoint_every_steps": NON_NEGATIVE,
                "keep_every_epochs": NON_NEGATIVE,
                "log_every": POSITIVE,
            },
        )
        parse_device(self.device, "train.device", available=False)


@dataclasses.dataclass
class CCropConfig:
    """ContrastiveCrop boxes from the teacher's last-block CLS attention (BAM App. G; notes/bam.md §4)."""

    enabled: bool = False
    warmup_epochs: int = 40  # boxes are first computed at the end of this epoch
    interval: int = 20  # then refreshed every `interval` epochs (paper 20, official code 40)
    alpha: float = 0.6  # Beta(alpha, alpha) crop-centre sampling
    threshold: float = 0.1
    size: int = 224  # images are resized (squashed) to size x size for the attention pass
    batch_size: int = 64


@dataclasses.dataclass
class KnnConfig:
    """Online weighted k-NN monitor (DINO-style) on an ImageFolder train/val pair."""

    every_epochs: int = 0  # 0 = off
    train_root: str = ""
    val_root: str = ""
    k: int = 20
    temperature: float = 0.07
    size: int = 224  # resize to size/0.875, centre crop size
    batch_size: int = 128
    network: Literal["teacher", "student"] = "teacher"


@dataclasses.dataclass
class BAMConfig:
    """BAM loss and projector (paper §3, notes/bam.md §1-2)."""

    tau: float = 0.1  # source softmax temperature
    eps: float = 0.05  # Sinkhorn entropy regularisation
    eps_final: float = 0.05
    eps_warmup_epochs: int = 30  # linear eps -> eps_final over these epochs (per epoch, as the official code)
    sinkhorn_iters: int = 3
    top_k: int = 0  # 0 = no sparsification; the official scripts use 128 (not in the paper)
    mask_positives: bool = True
    positive_mode: Literal["paper", "code"] = "paper"  # exclude positives exactly, or the release's finfo.min fill
    teacher_rows: Literal["all", "global"] = "all"  # teacher crops entering the Sinkhorn (official code: all V)
    proj_hidden: int = 4096
    proj_out: int = 4096
    proj_layers: int = 3
    proj_bn: bool = False  # BN variant (paper: for teacher-free ViT runs)
    proj_act: Literal["gelu", "relu"] = "gelu"  # paper App. 0.C: GELU for ViTs, ReLU for ResNet

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "tau": POSITIVE,
                "eps": POSITIVE,
                "eps_final": POSITIVE,
                "eps_warmup_epochs": NON_NEGATIVE,
                "sinkhorn_iters": NON_NEGATIVE,  # 0: a plain softmax target (the no-balancing ablation)
                "top_k": NON_NEGATIVE,
                "proj_hidden": POSITIVE,
                "proj_out": POSITIVE,
                "proj_layers": POSITIVE,
            },
        )


@dataclasses.dataclass
class DINOConfig:
    """DINO head and CLS self-distillation (official ``main_dino.py`` argparse defaults; recipes set the paper's)."""

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3
    use_bn: bool = False
    norm_last_layer: bool = True  # weight-norm scale g fixed at 1 (False for the ViT-S/16 800-epoch release)
    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.04  # final value; the released ViT-S/16 uses 0.07 after 30 warm-up epochs
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    # teacher targets: the DINO paper's center + softmax, or DINOv2's Sinkhorn-Knopp option (its train.centering);
    # applies to the CLS term of dino and of sere on dino
    centering: Literal["centering", "sinkhorn_knopp"] = "centering"
    sinkhorn_iters: int = 3

    def __post_init__(self) -> None:
        if self.sinkhorn_iters < 1:
            raise ValueError(f"dino.sinkhorn_iters must be >= 1, got {self.sinkhorn_iters}")
        if min(self.out_dim, self.hidden_dim, self.bottleneck_dim, self.nlayers) < 1:
            raise ValueError("dino.out_dim, hidden_dim, bottleneck_dim and nlayers must be >= 1")
        if min(self.student_temp, self.teacher_temp, self.warmup_teacher_temp) <= 0:
            raise ValueError("dino temperatures must be > 0")
        if not 0 <= self.center_momentum <= 1:
            raise ValueError(f"dino.center_momentum must be in [0, 1], got {self.center_momentum}")


@dataclasses.dataclass
class IBOTConfig:
    """iBOT's masked patch prediction (official ``main_ibot.py``); the CLS part is the ``dino`` section."""

    patch_out_dim: int = 8192
    shared_head: bool = True  # patch tokens use the CLS head's last layer (False: a separate last layer)
    # with shared_head=false, the teacher still scores its patches with its CLS last layer (the official argparse
    # default --shared_head_teacher true); false (the paper's separate heads): the teacher mirrors the student
    shared_head_teacher: bool = False
    warmup_teacher_patch_temp: float = 0.04
    teacher_patch_temp: float = 0.07
    center_momentum2: float = 0.9
    lambda1: float = 1.0  # CLS term
    lambda2: float = 1.0  # MIM term
    mask_ratio: tuple[float, ...] = (0.0, 0.3)  # per crop: one (ratio, var) pair chosen, then U(ratio +- var)
    mask_ratio_var: tuple[float, ...] = (0.0, 0.2)
    mask_shape: Literal["block", "rand"] = "block"
    mask_aspect: tuple[float, float] = (0.3, 1 / 0.3)
    mask_start_epoch: int = 0

    def __post_init__(self) -> None:
        if len(self.mask_ratio) != len(self.mask_ratio_var) or not self.mask_ratio:
            raise ValueError("ibot.mask_ratio and ibot.mask_ratio_var must have the same (non-zero) length")
        for m, v in zip(self.mask_ratio, self.mask_ratio_var):
            if not 0 <= v <= m or m + v > 1:
                raise ValueError(f"ibot.mask_ratio {m} +- {v} must stay within [0, 1]")
        if min(self.teacher_patch_temp, self.warmup_teacher_patch_temp) <= 0:
            raise ValueError("ibot teacher patch temperatures must be > 0")


@dataclasses.dataclass
class ADCLRConfig:
    """ADCLR's query crops, attention rule and query term (paper §3.2, §4.3, App. B; docs/adclr.md).

    The CLS term is the ``dino`` section (the query term uses the same head and student temperature); ``mim: true``
    is ADCLR* (adds iBOT's masked-patch term with the ``ibot`` section's masks, temperatures and weights).
    """

    query_crops: int = 10  # Q
    query_scale: tuple[float, float] = (0.05, 0.15)  # area fraction of the original image
    query_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    lambda_query: float = 0.5  # lambda of Eq. 6: loss = L_global + lambda / Q * sum_i L_Q^i
    # oneway = {RP, QP_i} -> QP_i (paper's stated rule); raw = Eq. 5 (CLS + patches, not itself); patches = appendix
    # code (patches only); all = released PQCL code (queries see every query); bidirectional = Fig. 2(c) ablation
    attention: Literal["oneway", "raw", "patches", "all", "bidirectional"] = "oneway"
    warmup_teacher_query_temp: float = 0.04
    teacher_query_temp: float = 0.07  # reached after dino.warmup_teacher_temp_epochs
    center_momentum_query: float = 0.9
    mim: bool = False  # ADCLR*

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "query_crops": POSITIVE,
                "query_scale": SCALE_RANGE,
                "query_ratio": (lambda v: 0 < v[0] <= v[1], "must be (low, high) with 0 < low <= high"),
                "lambda_query": NON_NEGATIVE,
                "warmup_teacher_query_temp": POSITIVE,
                "teacher_query_temp": POSITIVE,
                "center_momentum_query": PROBABILITY,
            },
        )


@dataclasses.dataclass
class SEREConfig:
    """SERE's pixel/channel self-relation losses on top of iBOT or DINO (official ``main_sere.py`` argparse defaults;
    the recipes set the released alpha 0.2 / beta 0.5). Total: ``base * (4 - alpha - beta) / 2 + alpha * L_pix +
    beta * L_ch``; alpha = beta = 1 gives the v1 paper's ``L_I + L_p + L_c``."""

    base: Literal["ibot", "dino"] = "ibot"  # the released code is iBOT + SERE; the v1 paper builds on DINO
    alpha: float = 1.0  # pixel relation weight (released ViT-S/B: 0.2)
    beta: float = 1.0  # channel relation weight (released ViT-S/B: 0.5)
    pixel_temp: float = 0.5  # teacher temperature t_p (student 1)
    channel_temp: float = 0.1  # teacher temperature t_c (student 1)
    global_grid: int = 13  # overlap grid S, global-global pairs
    local_grid: int = 6  # overlap grid S, global-local pairs
    relation_heads: int = 0  # M for the pixel relation; 0 = the backbone's number of attention heads

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "alpha": NON_NEGATIVE,
                "beta": NON_NEGATIVE,
                "pixel_temp": POSITIVE,
                "channel_temp": POSITIVE,
                "global_grid": (lambda v: v >= 2, "must be >= 2 (edge-inclusive grid)"),
                "local_grid": (lambda v: v >= 2, "must be >= 2 (edge-inclusive grid)"),
                "relation_heads": NON_NEGATIVE,
            },
        )
        if self.alpha + self.beta > 4:
            total = self.alpha + self.beta
            raise ValueError(f"alpha + beta = {total}: must be <= 4 (the base loss weight is (4 - alpha - beta) / 2)")


@dataclasses.dataclass
class PretrainConfig:
    method: str = "bam"  # a key of pretrain.methods.METHODS, or "package.module:Class"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    ema: EMAConfig = dataclasses.field(default_factory=EMAConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    ccrop: CCropConfig = dataclasses.field(default_factory=CCropConfig)
    knn: KnnConfig = dataclasses.field(default_factory=KnnConfig)
    bam: BAMConfig = dataclasses.field(default_factory=BAMConfig)
    dino: DINOConfig = dataclasses.field(default_factory=DINOConfig)
    ibot: IBOTConfig = dataclasses.field(default_factory=IBOTConfig)
    adclr: ADCLRConfig = dataclasses.field(default_factory=ADCLRConfig)
    sere: SEREConfig = dataclasses.field(default_factory=SEREConfig)

    def __post_init__(self) -> None:
        if self.data.global_crops < 1:
            raise ValueError(f"data.global_crops must be >= 1, got {self.data.global_crops}")
        if self.train.batch_size < 1 or self.train.epochs < 1:
            raise ValueError("train.batch_size and train.epochs must be >= 1")
        ignores_centering = self.method in ("ibot", "adclr") or (self.method == "sere" and self.sere.base != "dino")
        if self.dino.centering != "centering" and ignores_centering:
            raise ValueError(
                f"dino.centering={self.dino.centering} is implemented for method dino and sere on dino only, "
                f"not for method {self.method}" + (" on ibot" if self.method == "sere" else "")
            )
