"""A BatchNorm2d whose training statistics cover the world batch on every backend (gloo on CPU as well as NCCL).

``torch.nn.SyncBatchNorm`` runs on accelerators only, so a CPU (gloo) run could not show that two processes equal one.
:class:`WorldBatchNorm2d` has BatchNorm2d's parameters, buffers and state-dict keys; in training mode it normalises
each channel over (world batch x h x w) with the biased variance and updates the running statistics with the unbiased
one (momentum 0.1), as SyncBatchNorm. The per-rank sums go through an all-reduce that is differentiable (backward:
the all-reduced gradient), so gradients are those of one process holding the whole batch. In one process (or when
``torch.distributed`` is not initialised) the same formulas run without collectives. Statistics are computed in fp32
whatever the autocast dtype. In eval mode the running statistics are used, as BatchNorm2d.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def world_sum(x: Tensor) -> Tensor:
    """Sum of ``x`` over ranks (identity in one process), differentiable."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _AllReduceSum.apply(x)
    return x


class WorldBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with world-batch statistics in training mode (module docstring). A subclass of BatchNorm2d only
    for its parameters and buffers; :func:`torch.nn.SyncBatchNorm.convert_sync_batchnorm` would replace it on CUDA by
    the same computation."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"WorldBatchNorm2d expects (N, C, h, w), got {tuple(x.shape)}")
        if not self.training:
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            xf = x.float()
            count = world_sum(torch.tensor(float(xf.numel() // xf.shape[1]), device=x.device))
            mean = world_sum(xf.sum(dim=(0, 2, 3))) / count
            centred = xf - mean[None, :, None, None]
            var = world_sum(centred.pow(2).sum(dim=(0, 2, 3))) / count
            out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
            if self.affine:
                out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
            if self.track_running_stats:
                with torch.no_grad():
                    unbiased = var.detach() * count / (count - 1).clamp_min(1)
                    self.running_mean.mul_(1 - self.momentum).add_(mean.detach() * self.momentum)
                    self.running_var.mul_(1 - self.momentum).add_(unbiased * self.momentum)
                    self.num_batches_tracked.add_(1)
        return out
