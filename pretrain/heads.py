"""Projection heads built from layer specs, and BAM's projector.

A head is a list of ``(in_dim, out_dim, norm, act)`` specs, one per Linear layer: ``Linear(in, out)`` then the
optional norm module, then the optional activation (lightly's ``ProjectionHead`` convention). A Linear followed by a
norm has no bias (the norm's shift replaces it).

BAM (paper App. 0.C; official ``models/heads.py``): three Linear layers, GELU, hidden and output width 4096, no
normalisation when an EMA teacher is used; the paper adds BatchNorm after each layer for teacher-free ViT runs, which
``batch_norm=True`` gives (the official argparse defaults put an affine-free BatchNorm on the output, as MoCo v3;
``last_bn_affine`` controls that). Weights: ``trunc_normal_(std=0.02)`` (cut at +-2, i.e. effectively normal), zero
biases, as the official head. Without BN the ``state_dict`` keys are ``layers.{0,2,4}.{weight,bias}``, the official
``projector.{0,2,4}`` order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pretrain.syncbn import WorldBatchNorm2d

LayerSpec = tuple[int, int, "nn.Module | None", "nn.Module | None"]


class ProjectionHead(nn.Module):
    """An MLP from ``(in_dim, out_dim, norm, act)`` specs; ``forward`` maps (N, in) to (N, out)."""

    def __init__(self, specs: Sequence[LayerSpec]) -> None:
        super().__init__()
        if not specs:
            raise ValueError("a projection head needs at least one layer spec")
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim, norm, act) in enumerate(specs):
            if i and in_dim != specs[i - 1][1]:
                raise ValueError(f"layer {i} takes {in_dim} features but layer {i - 1} gives {specs[i - 1][1]}")
            layers.append(nn.Linear(in_dim, out_dim, bias=norm is None))
            layers.extend(m for m in (norm, act) if m is not None)
        self.layers = nn.Sequential(*layers)
        self.apply(_init_linear)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class BAMProjector(ProjectionHead):
    """BAM's projector: ``num_layers`` Linear layers with GELU between them (no activation after the last);
    ``act="relu"`` is the paper's ResNet projector (App. 0.C: ReLU for ResNet, GELU for ViTs).

    ``batch_norm=True`` puts a BatchNorm1d after every layer (hidden ones affine, the last one with
    ``last_bn_affine``), for teacher-free runs.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 4096,
        out_dim: int = 4096,
        num_layers: int = 3,
        batch_norm: bool = False,
        last_bn_affine: bool = False,
        act: str = "gelu",
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if act not in ("gelu", "relu"):
            raise ValueError(f"projector activation must be 'gelu' or 'relu', got {act!r}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        specs: list[LayerSpec] = []
        for i in range(num_layers):
            last = i == num_layers - 1
            norm = nn.BatchNorm1d(dims[i + 1], affine=not last or last_bn_affine) if batch_norm else None
            specs.append((dims[i], dims[i + 1], norm, None if last else (nn.GELU() if act == "gelu" else nn.ReLU())))
        super().__init__(specs)


class WeightNormLinear(nn.Module):
    """Bias-free Linear with weight normalisation, ``W = g * v / ||v||`` row-wise (``torch.nn.utils.weight_norm``
    with dim 0, as DINO's last layer), stored as DINO stores it: ``weight_g`` (out, 1) and ``weight_v`` (out, in).

    ``g`` starts at 1; ``fix_norm=True`` (DINO's ``norm_last_layer``) keeps it there (``requires_grad=False``).
    ``v`` starts with PyTorch's Linear init (DINO creates the layer after its trunc-normal pass).
    """

    def __init__(self, in_dim: int, out_dim: int, fix_norm: bool = True) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not fix_norm)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight_v * (self.weight_g / self.weight_v.norm(dim=1, keepdim=True))
        return F.linear(x, weight)


class DINOHead(nn.Module):
    """DINO's head: an MLP (``nlayers`` Linear layers, GELU, optional BatchNorm, hidden ``hidden_dim``) to a
    ``bottleneck_dim`` vector, L2-normalised, then a :class:`WeightNormLinear` to ``out_dim`` logits.

    Keys as DINO's ``DINOHead`` (``mlp.0.weight``, ..., ``last_layer.weight_g``/``weight_v``), so released heads load.
    ``forward`` takes (..., in_dim) (CLS rows or patch tokens) and gives (..., out_dim). ``patch_out_dim`` adds a
    second last layer ``last_layer2`` for patch tokens (iBOT's separate-head option; the MLP stays shared).
    """

    patches_from_cls_layer = False  # set on a head with last_layer2 that scores patches with last_layer anyway

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
        patch_out_dim: int = 0,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"a DINO head needs nlayers >= 1, got {nlayers}")
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(nlayers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < nlayers - 1:
                if use_bn:
                    layers.append(nn.BatchNorm1d(dims[i + 1]))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.mlp.apply(_init_linear)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, fix_norm=norm_last_layer)
        self.last_layer2 = WeightNormLinear(bottleneck_dim, patch_out_dim, norm_last_layer) if patch_out_dim else None

    def bottleneck(self, x: Tensor) -> Tensor:
        """The L2-normalised bottleneck (..., bottleneck_dim)."""
        return F.normalize(self.mlp(x), dim=-1, p=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(self.bottleneck(x))

    def forward_patches(self, x: Tensor) -> Tensor:
        """Patch tokens (B, N, in_dim) -> (B, N, K): the shared last layer, or ``last_layer2`` when separate (unless
        ``patches_from_cls_layer``: iBOT's teacher with ``ibot.shared_head_teacher``)."""
        z = self.bottleneck(x)
        separate = self.last_layer2 is not None and not self.patches_from_cls_layer
        return (self.last_layer2 if separate else self.last_layer)(z)


class SEREHead(nn.Module):
    """SERE's relation head on a (N, C, h, w) feature map (official ``models/head.py`` PixelSERE/ChannelSERE).

    ``projection`` = BatchNorm2d -> ReLU (no linear layer) gives Z; ``predictor`` = 1x1 conv (no bias) -> BatchNorm2d
    -> ReLU on Z gives P. ``forward(x, predict)`` returns P when ``predict`` (the student) else Z (the teacher). The
    BatchNorms are :class:`~pretrain.syncbn.WorldBatchNorm2d` (world-batch statistics, the official SyncBatchNorm); the
    conv keeps PyTorch's default init and BN starts at (1, 0), as the release (its ``_init_weights`` is never
    called). Keys: ``projection.0.*``, ``predictor.0.weight``, ``predictor.1.*``, the official names.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.projection = nn.Sequential(WorldBatchNorm2d(dim), nn.ReLU())
        self.predictor = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), WorldBatchNorm2d(dim), nn.ReLU())

    def forward(self, x: Tensor, predict: bool = True) -> Tensor:
        z = self.projection(x)
        return self.predictor(z) if predict else z


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "BAMProjector",
    "DINOHead",
    "LayerSpec",
    "ProjectionHead",
    "SEREHead",
    "WeightNormLinear",
    "count_parameters",
]
