"""Reference "backbones" that are not networks: the raw-pixel baseline every pretraining result is compared with.

:class:`RawPixels` maps an evaluation batch (B, 3, H, W) (the protocols' own Resize + CenterCrop + ImageNet
normalisation) to its pixels, area-downsampled to ``size`` x ``size`` (``size = None``: as given) and flattened
channel-major into one token of 3 * size^2 values. It exposes the one method the frozen-feature protocols call,
``forward_tokens(x, taps=...)``, so k-NN, linear probing, logistic regression and clustering run on raw pixels
through the very code that evaluates a ViT; the records carry ``format: raw-pixels``. There is no patch token:
feature banks must use the CLS tap of one block (linear probing: ``taps=cls n_last=1``), and the protocols that need
patch tokens (DAVIS, dense tasks, fine-tuning) do not apply.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


@dataclasses.dataclass(frozen=True)
class _Arch:
    img_size: int


@dataclasses.dataclass
class _Tokens:
    taps: dict[int, Tensor]


class RawPixels(nn.Module):
    """``forward_tokens(x (B, 3, H, W), taps) -> taps {-1: (B, 1, 3 * s * s)}``: the image as its only token."""

    def __init__(self, img_size: int, size: int | None = None) -> None:
        super().__init__()
        if img_size < 1 or (size is not None and not 1 <= size <= img_size):
            raise ValueError(f"raw pixels: size {size} must be in [1, img_size={img_size}]")
        self.arch = _Arch(img_size)
        self.size = size
        self.embed_dim = 3 * (size or img_size) ** 2
        self.blocks = nn.ModuleList([nn.Identity()])  # one "block": its output is the pixel token

    def forward_tokens(self, x: Tensor, *, taps: Iterable[int] = (-1,), **_: Any) -> _Tokens:
        if self.size is not None and self.size != x.shape[-1]:
            x = F.adaptive_avg_pool2d(x, self.size)
        token = x.flatten(1)[:, None, :]
        return _Tokens({int(i): token for i in taps})


def raw_pixels(img_size: int, size: int | None = None) -> Any:
    """A :class:`evaluate.checkpoints.LoadedBackbone`-shaped object for the raw-pixel baseline."""
    from evaluate.checkpoints.loader import KeyReport, LoadedBackbone

    side = size or img_size
    name = f"raw-pixels-{side}px"
    info = {
        "path": None,
        "name": name,
        "sha256": hashlib.sha256(f"sslbench raw pixels {img_size} -> {side}".encode()).hexdigest(),
        "format": "raw-pixels",
        "arch": {"img_size": img_size, "pixels": side},
        "which": None,
        "pos_interp": None,
    }
    return LoadedBackbone(RawPixels(img_size, size).eval(), info, KeyReport())
