"""A method's network: backbone + named heads, run on every crop of a batch in ONE forward call.

``MultiCropNet.forward(crops, masks=None, extras=None) -> dict[str, Tensor]`` runs
:meth:`pretrain.vit.SSLViT.forward_crops` (consecutive crops of one size as one batch) and hands the list of
:class:`~pretrain.vit.TokenOutput` (one per crop, in order) to :meth:`MultiCropNet.project`, which each method
overrides to apply its heads. One call per step keeps DistributedDataParallel to one forward per backward; the
teacher is an EMA copy of the same module (``pretrain.ema.make_teacher``).

State-dict keys: ``backbone.<timm key>`` and ``heads.<name>.<...>`` (what the checkpoint adapter reads).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pretrain.vit import ExtraAttn, SSLViT, TokenOutput


class MultiCropNet(nn.Module):
    extra_attn: ExtraAttn = "oneway"

    def __init__(self, backbone: SSLViT, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)

    def forward(
        self,
        crops: Sequence[Tensor],
        masks: Sequence[Tensor | None] | None = None,
        extras: Sequence[Tensor | None] | None = None,
    ) -> dict[str, Tensor]:
        return self.project(self.backbone.forward_crops(crops, masks, extras, self.extra_attn))

    def project(self, outs: list[TokenOutput]) -> dict[str, Tensor]:
        """Heads on the crops' tokens; the default is each crop's CLS, crop-major: ``{"cls": (V * B, D)}``."""
        return {"cls": torch.cat([o.cls for o in outs])}


class CLSProjectionNet(MultiCropNet):
    """``{"cls": heads[head](CLS of every crop)}``, (V * B, D_out) crop-major, the head run once on all crops (so a
    BatchNorm head normalises over every crop, as DINO's and BAM's ``MultiCropWrapper``). ``head`` names the one head
    (BAM: ``"proj"``, DINO: ``"cls"``; it is the state-dict key ``heads.<head>.*``)."""

    def __init__(self, backbone: SSLViT, heads: dict[str, nn.Module], head: str = "proj") -> None:
        super().__init__(backbone, heads)
        self.head = head

    def project(self, outs: list[TokenOutput]) -> dict[str, Tensor]:
        return {"cls": self.heads[self.head](torch.cat([o.cls for o in outs]))}
