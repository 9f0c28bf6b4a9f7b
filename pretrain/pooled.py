"""Pooled-feature backbones: ResNet and CAFormer (MetaFormer) from timm, one global feature per image.

BAM trains ResNet-50 and CAFormer-M36 with the same loss as its ViTs (paper Table 8, App. 0.B); the projector reads
the backbone's pooled feature where a ViT gives its CLS token. These models are timm's own classes
(``timm.models.resnet.ResNet``, ``timm.models.metaformer.MetaFormer``) with ``num_classes=0``, so their state-dict keys
are timm's (``conv1.weight``, ``layer1.0.conv1.weight``...; ``stem.conv.weight``, ``stages.2.blocks.0.token_mixer.qkv
.weight``...) and equal torchvision's ResNet keys without ``fc.*``. :class:`PooledMixin` adds the small interface the
engine and the evaluation share with :class:`pretrain.vit.SSLViT`:

* ``forward_tokens(x) -> TokenOutput``: ``cls`` (B, D) is the pooled feature (ResNet: global average pool of the last
  stage, D = 2048 for ResNet-50; CAFormer: global average pool then the head's LayerNorm, D = 576 for M36, what
  BAM's ``MultiCropWrapper`` feeds its projector); ``patch`` (B, h*w, C) is the last feature map flattened row-major
  (ResNet: C = D; no norm); ``taps`` is ``{-1: cls[:, None]}`` (one "token": the frozen-feature protocols take its CLS
  tap); masks, appended tokens and attention maps are ViT-only and raise.
* ``forward_crops``: consecutive crops of one size run as one batch (DINO's / BAM's ``MultiCropWrapper``): BatchNorm
  statistics are those of the group (the two global crops together, the local crops together), as in the official
  code.
* ``activation_map(x) -> (B, h, w)``: the ContrastiveCrop map of a CNN (Peng et al., CVPR 2022, their rule for
  ResNets): the last feature map averaged over channels (:func:`pretrain.contrastive_crop.boxes_for_images`).

Architectures (:data:`POOLED_ARCHS`):

* ``resnet50``: timm/torchvision ResNet-50 (Bottleneck, [3, 4, 6, 3], widths 64..512, 2048-d); timm's default init
  (last BN of each block zero-initialised, as ``timm.create_model("resnet50")`` which the BAM code calls).
* ``caformer_m36``: CAFormer-M36 as BAM's ``models/metaformer.py`` builds it: depths [3, 12, 18, 3], dims
  [96, 192, 384, 576], SepConv, SepConv, Attention, Attention, **GELU** in the MLPs and the SepConv (BAM replaced
  StarReLU: "GELU is faster"), no residual scales (``res_scale_init_values=(None,)*4``); timm's and the MetaFormer
  paper's CAFormer (StarReLU, residual scales 1.0 in stages 3-4) is ``act="starrelu"``, ``res_scale=(None, None, 1.0,
  1.0)`` (what the checkpoint adapter builds for such files).
* ``resnet_tiny``, ``caformer_tiny``: the same classes with one block per stage and small widths, for CPU tests and the
  ShapesWorld smoke run (64 px).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from timm.models.metaformer import Attention, LayerNorm2dNoBias, LayerNormNoBias, MetaFormer, SepConv, StarReLU
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import Tensor, nn

from pretrain.vit import TokenOutput

EXPORT_FORMAT = "sslbench-backbone"
EXPORT_VERSION = 1
FAMILIES = ("resnet", "metaformer")
MIXERS = ("sepconv", "attention")
ACTS = ("gelu", "starrelu")


@dataclasses.dataclass(frozen=True)
class PooledArch:
    """A ResNet (``family="resnet"``) or MetaFormer (``family="metaformer"``) with a pooled output.

    ``depths``: blocks per stage; ``widths``: ResNet planes per stage (``channels`` of timm's ResNet; the output width
    is ``widths[-1] * 4`` for Bottleneck blocks) or MetaFormer dims. ResNet only: ``block`` (``"bottleneck"`` or
    ``"basic"``; the stem is timm's plain 7x7 convolution of width 64). MetaFormer only: ``mixers`` per stage, ``act`` (MLP and SepConv activation),
    ``res_scale`` per stage (None: no residual scale). ``img_size`` is the training resolution (the default crop of
    the frozen-feature protocols).
    """

    family: Literal["resnet", "metaformer"]
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    block: Literal["bottleneck", "basic"] = "bottleneck"
    mixers: tuple[str, ...] = ()
    act: Literal["gelu", "starrelu"] = "gelu"
    res_scale: tuple[float | None, ...] = ()
    img_size: int = 224

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if not self.depths or len(self.depths) != len(self.widths) or min(self.depths) < 1 or min(self.widths) < 1:
            raise ValueError(f"depths {self.depths} and widths {self.widths} must be positive, one per stage")
        if self.family == "resnet" and self.block not in ("bottleneck", "basic"):
            raise ValueError(f"block must be 'bottleneck' or 'basic', got {self.block!r}")
        if self.family == "metaformer":
            if len(self.mixers) != len(self.depths) or any(m not in MIXERS for m in self.mixers):
                raise ValueError(f"mixers {self.mixers}: one of {MIXERS} per stage")
            if len(self.res_scale) != len(self.depths):
                raise ValueError(f"res_scale {self.res_scale}: one value (or None) per stage")
            if self.act not in ACTS:
                raise ValueError(f"act must be one of {ACTS}, got {self.act!r}")
            for mixer, dim in zip(self.mixers, self.widths):
                if mixer == "attention" and dim % 32:
                    raise ValueError(f"attention stage of width {dim}: CAFormer attention needs a multiple of 32")

    @property
    def embed_dim(self) -> int:
        if self.family == "resnet":
            return self.widths[-1] * (4 if self.block == "bottleneck" else 1)
        return self.widths[-1]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("depths", "widths", "mixers", "res_scale"):
            out[key] = list(out[key])
        return out

    def described(self) -> dict[str, Any]:
        """:meth:`to_dict` without the fields of the other family (a ResNet has no mixers, a MetaFormer no block)."""
        other = ("mixers", "act", "res_scale") if self.family == "resnet" else ("block",)
        return {k: v for k, v in self.to_dict().items() if k not in other}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PooledArch:
        data = dict(data)
        for key in ("depths", "widths", "mixers", "res_scale"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


POOLED_ARCHS: dict[str, PooledArch] = {
    "resnet50": PooledArch("resnet", (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet_tiny": PooledArch("resnet", (1, 1, 1, 1), (8, 16, 32, 64), img_size=64),
    "caformer_m36": PooledArch(
        "metaformer",
        (3, 12, 18, 3),
        (96, 192, 384, 576),
        mixers=("sepconv", "sepconv", "attention", "attention"),
        res_scale=(None, None, None, None),
    ),
    "caformer_tiny": PooledArch(
        "metaformer",
        (1, 1, 1, 1),
        (16, 32, 64, 96),
        mixers=("sepconv", "sepconv", "attention", "attention"),
        res_scale=(None, None, None, None),
        img_size=64,
    ),
}


def is_pooled_arch(arch: Any) -> bool:
    """True for a name in :data:`POOLED_ARCHS`, a :class:`PooledArch` or its dict (which has ``family``)."""
    if isinstance(arch, str):
        return arch in POOLED_ARCHS
    if isinstance(arch, PooledArch):
        return True
    return isinstance(arch, dict) and arch.get("family") in FAMILIES


def is_pooled(model: Any) -> bool:
    """True for a backbone built here (one pooled feature, no patch tokens of a ViT)."""
    return isinstance(model, PooledMixin)


class PooledMixin:
    """The :class:`pretrain.vit.SSLViT`-like interface of a pooled backbone (module docstring)."""

    arch: PooledArch
    pooled_features = True  # the frozen-feature code's marker: one feature, CLS tap of one block only

    @property
    def embed_dim(self) -> int:
        return self.arch.embed_dim

    def feature_map(self, x: Tensor) -> Tensor:
        """The last stage's output, (B, C, h, w)."""
        return self.forward_features(x)  # type: ignore[attr-defined]

    def pool(self, fmap: Tensor) -> Tensor:
        """(B, D) pooled feature of a feature map (ResNet: average pool; CAFormer: average pool + LayerNorm)."""
        return self.forward_head(fmap, pre_logits=True)  # type: ignore[attr-defined]

    def forward_tokens(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        extra: Tensor | None = None,
        extra_attn: str = "oneway",
        taps: Iterable[int] | None = None,
        tap_norm: bool = True,
        attn: bool = False,
    ) -> TokenOutput:
        if mask is not None or extra is not None or attn:
            raise ValueError(
                f"{self.arch.family} backbone: masks, appended tokens and attention maps need a ViT (got "
                f"mask={mask is not None}, extra={extra is not None}, attn={attn})"
            )
        fmap = self.feature_map(x)
        cls = self.pool(fmap)
        patch = fmap.flatten(2).transpose(1, 2)
        tap_out: dict[int, Tensor] = {}
        for i in taps if taps is not None else ():
            if int(i) not in (-1, 0):
                raise ValueError(f"{self.arch.family} backbone: only the final pooled feature can be tapped, got {i}")
            tap_out[-1] = cls[:, None]
        return TokenOutput(cls, patch, patch, None, (fmap.shape[-2], fmap.shape[-1]), tap_out)

    def forward_crops(
        self,
        crops: Sequence[Tensor],
        masks: Sequence[Tensor | None] | None = None,
        extras: Sequence[Tensor | None] | None = None,
        extra_attn: str = "oneway",
    ) -> list[TokenOutput]:
        """:meth:`forward_tokens` per crop, consecutive crops of one size as one batch (BatchNorm over the group)."""
        if any(m is not None for m in masks or ()) or any(e is not None for e in extras or ()):
            raise ValueError(f"{self.arch.family} backbone: masks and appended tokens need a ViT")
        outs: list[TokenOutput] = []
        start, n = 0, len(crops)
        while start < n:
            end = start + 1
            while end < n and crops[end].shape[1:] == crops[start].shape[1:]:
                end += 1
            out = self.forward_tokens(torch.cat(list(crops[start:end])))
            outs.extend(out.split(end - start))
            start = end
        return outs

    def activation_map(self, x: Tensor) -> Tensor:
        """(B, h, w): the last feature map averaged over channels (ContrastiveCrop's class-agnostic map for CNNs)."""
        return self.feature_map(x).float().mean(dim=1)


class PooledResNet(PooledMixin, ResNet):
    """timm's ResNet (``num_classes=0``) with the pooled-backbone interface."""


class PooledMetaFormer(PooledMixin, MetaFormer):
    """timm's MetaFormer (``num_classes=0``) with the pooled-backbone interface."""


def build_pooled(arch: str | PooledArch | dict[str, Any], drop_path: float = 0.0) -> nn.Module:
    """A :class:`PooledResNet` or :class:`PooledMetaFormer` for ``arch`` (a name in :data:`POOLED_ARCHS`, an arch or
    its dict). ``drop_path``: stochastic depth rate (timm's linear rule)."""
    if isinstance(arch, str):
        if arch not in POOLED_ARCHS:
            raise ValueError(f"unknown pooled architecture {arch!r} (valid: {', '.join(POOLED_ARCHS)})")
        arch = POOLED_ARCHS[arch]
    elif isinstance(arch, dict):
        arch = PooledArch.from_dict(arch)
    model: nn.Module
    if arch.family == "resnet":
        model = PooledResNet(
            block=Bottleneck if arch.block == "bottleneck" else BasicBlock,
            layers=arch.depths,
            channels=arch.widths,
            num_classes=0,
            drop_path_rate=drop_path,
        )
    else:
        act = nn.GELU if arch.act == "gelu" else StarReLU
        model = PooledMetaFormer(
            depths=arch.depths,
            dims=arch.widths,
            token_mixers=[SepConv if m == "sepconv" else Attention for m in arch.mixers],
            norm_layers=[LayerNorm2dNoBias if m == "sepconv" else LayerNormNoBias for m in arch.mixers],
            mlp_act=act,
            act1_layer=act,
            res_scale_init_values=list(arch.res_scale),
            num_classes=0,
            drop_path_rate=drop_path,
        )
    model.arch = arch
    return model


def export_pooled(model: nn.Module, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The exported-backbone payload of a pooled backbone (the layout of :func:`pretrain.vit.export_backbone`):
    ``{"format": "sslbench-backbone", "version": 1, "arch": PooledArch dict (with "family"), "state_dict": timm
    keys, "meta": {...}}``; tensors and plain values only."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "arch": model.arch.to_dict(),
        "state_dict": state,
        "meta": dict(meta or {}),
    }
