"""The classifier that fine-tuning trains: a pretrained ViT under ``backbone``, a pooling rule and a new head.

Layouts: images (B, 3, H, W) -> backbone tokens (B, 1 + N, D) -> pooled (B, D) -> logits (B, C).

* ``pool="cls"`` (DeiT, iBOT transfer and semi-supervised scripts): the CLS token after the backbone's final norm.
* ``pool="mean"`` (MAE ``global_pool``, BEiT ``--use_mean_pooling`` as PQCL/ADCLR run it): the mean of the patch
  tokens of the last block *before* the final norm, through a new LayerNorm ``fc_norm`` (weight 1, bias 0). The
  backbone's final norm is replaced by an identity, as MAE and BEiT build their fine-tuning ViT; its weights from the
  checkpoint are not used.
* ``head="linear"``: a new ``Linear(D, C)``, weights trunc-normal(``head_init_std``) x ``head_init_scale``, bias 0
  (DeiT/timm 0.02; MAE 2e-5; BEiT 0.02 x 0.001).
* ``head="proj_layer"`` (iBOT ``--finetune_head_layer 1``): ``Linear(D, hidden)`` holding the checkpoint's first
  projection-head layer (:mod:`evaluate.checkpoints.heads`), GELU, a new ``Linear(hidden, C)``. A first layer stored
  without a bias (followed by BatchNorm in pretraining) gets a zero bias.

Parameter names put the ViT under ``backbone.``, so :mod:`evaluate.protocols.layer_decay` assigns the BEiT layer ids
unchanged: embeddings 0, block i -> i + 1, ``fc_norm`` and ``head`` -> depth + 1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pretrain.vit import SSLViT


class FinetuneClassifier(nn.Module):
    """``backbone`` (an :class:`SSLViT`), optional ``fc_norm`` (mean pooling), ``head`` (Linear or MLP)."""

    def __init__(self, backbone: SSLViT, head: nn.Module, pool: str = "cls") -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.pool = pool
        self.backbone = backbone
        self.fc_norm: nn.Module = nn.Identity()
        if pool == "mean":
            dim = backbone.embed_dim
            self.backbone.norm = nn.Identity()  # MAE/BEiT: no final norm before the pooling (see module docstring)
            self.fc_norm = nn.LayerNorm(dim, eps=backbone.arch.norm_eps)
        self.head = head

    def features(self, images: Tensor) -> Tensor:
        """Pooled features (B, D)."""
        tokens = self.backbone.forward_features(images)
        pooled = tokens[:, 0] if self.pool == "cls" else tokens[:, self.backbone.num_prefix_tokens :].mean(dim=1)
        return self.fc_norm(pooled)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def new_linear(in_dim: int, out_dim: int, std: float, scale: float = 1.0, generator: torch.Generator | None = None):
    """A Linear with trunc-normal(std) weights (cut at +-2 std) times ``scale`` and zero bias."""
    layer = nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        weight = torch.empty(out_dim, in_dim)
        nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std, generator=generator)
        layer.weight.copy_(weight * scale)
        layer.bias.zero_()
    return layer


def proj_layer_head(weight: Tensor, bias: Tensor | None, num_classes: int, std: float, generator=None) -> nn.Sequential:
    """iBOT's semi-supervised head: Linear(D, hidden) = the given (hidden, D) weights, GELU, new Linear(hidden, C)."""
    hidden, dim = weight.shape
    first = nn.Linear(dim, hidden)
    with torch.no_grad():
        first.weight.copy_(weight)
        first.bias.copy_(bias if bias is not None else torch.zeros(hidden))
    return nn.Sequential(first, nn.GELU(), new_linear(hidden, num_classes, std, generator=generator))


def build_classifier(
    backbone: SSLViT,
    num_classes: int,
    *,
    head: str = "linear",
    pool: str = "cls",
    drop_path: float = 0.0,
    head_init_std: float = 0.02,
    head_init_scale: float = 1.0,
    head_layer: tuple[Tensor, Tensor | None] | None = None,
    freeze_sincos: bool = True,
    seed: int = 0,
) -> FinetuneClassifier:
    """A :class:`FinetuneClassifier` over a copy of ``backbone`` rebuilt with stochastic depth ``drop_path``.

    The copy has the same architecture, positional rule and weights (loaded strictly); the head is seeded by ``seed``.
    With ``freeze_sincos`` a fixed 2-D sin-cos positional table (BAM, MoCo v3: ``arch.pos_embed == "sincos"``) stays
    fixed, as MoCo v3's ViT keeps it (``requires_grad=False``) when fine-tuned with the DeiT code.
    """
    vit = SSLViT(backbone.arch, pos_interp=backbone.pos_interp, drop_path_rate=drop_path)
    vit.load_state_dict(backbone.state_dict(), strict=True)
    if freeze_sincos and backbone.arch.pos_embed == "sincos":
        vit.pos_embed.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    if head == "linear":
        module: nn.Module = new_linear(vit.embed_dim, num_classes, head_init_std, head_init_scale, gen)
    elif head == "proj_layer":
        if head_layer is None:
            raise ValueError("head='proj_layer' needs the checkpoint's head layer")
        weight, bias = head_layer
        if weight.shape[1] != vit.embed_dim:
            raise ValueError(f"head layer takes {weight.shape[1]} features, the backbone gives {vit.embed_dim}")
        if pool != "cls":
            raise ValueError("head='proj_layer' follows iBOT: it reads the normed CLS token (pool='cls')")
        module = proj_layer_head(weight, bias, num_classes, head_init_std, gen)
    else:
        raise ValueError(f"head must be 'linear' or 'proj_layer', got {head!r}")
    return FinetuneClassifier(vit, module, pool)
