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

from collections.abc import Sequence

from torch import Tensor, nn

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
    """BAM's projector: ``num_layers`` Linear layers with GELU between them (no activation after the last).

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
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        specs: list[LayerSpec] = []
        for i in range(num_layers):
            last = i == num_layers - 1
            norm = nn.BatchNorm1d(dims[i + 1], affine=not last or last_bn_affine) if batch_norm else None
            specs.append((dims[i], dims[i + 1], norm, None if last else nn.GELU()))
        super().__init__(specs)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = ["BAMProjector", "LayerSpec", "ProjectionHead", "count_parameters"]
