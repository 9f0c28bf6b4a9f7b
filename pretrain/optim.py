"""Optimizers the engine builds from ``optim.name``: AdamW (the ViT recipes) and LARS (BAM's ResNet-50 recipe).

:class:`LARS` is the layer-wise adaptive rate scaling of You et al. (2017) in the form of Barlow Twins'
``main.py``, which the official BAM code copies (``utils.LARS``): for every parameter with more than one dimension,
``u = g + wd * p``, then ``u *= eta * ||p|| / ||u||`` when both norms are positive; parameters with one dimension or
fewer (biases, BatchNorm/LayerNorm weights) get neither weight decay nor the adaptation (``u = g``). Then
``mu = momentum * mu + u`` and ``p -= lr * mu``. The engine sets ``lr`` and the decay group's ``weight_decay`` each
iteration, as for AdamW. State per parameter: ``mu``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

OPTIMIZERS = ("adamw", "lars")


class LARS(torch.optim.Optimizer):
    """LARS with momentum (module docstring). ``weight_decay`` comes from the parameter group."""

    def __init__(
        self, params: Any, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.001
    ) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(update)
                    one = torch.ones_like(param_norm)
                    trust = torch.where(
                        param_norm > 0.0,
                        torch.where(update_norm > 0.0, group["eta"] * param_norm / update_norm, one),
                        one,
                    )
                    update = update.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(update)
                p.add_(mu, alpha=-group["lr"])
        return loss


def build_optimizer(
    name: str, groups: list[dict[str, Any]], betas: tuple[float, float], momentum: float, eta: float
) -> torch.optim.Optimizer:
    """AdamW(groups, betas) or LARS(groups, momentum, eta); learning rate and weight decay are set per step."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=0.0, betas=betas)
    if name == "lars":
        return LARS(groups, lr=0.0, momentum=momentum, eta=eta)
    raise ValueError(f"optim.name={name!r}: valid {', '.join(OPTIMIZERS)}")
