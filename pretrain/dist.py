"""Process-group set-up and the collectives handed to losses (identity functions in a single process).

``Distributed.from_env()`` reads the ``torchrun`` variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
...); without them the run is a plain single process and no ``torch.distributed`` call is made. Backend: NCCL on CUDA,
gloo on CPU. Losses never call ``torch.distributed`` themselves: they receive

    all_gather(x: (n, ...)) -> (world * n, ...)   rank-major concatenation, differentiable (each rank's slice gets
                                                  the sum over ranks of the gradients flowing into it)
    all_reduce(x, op)       -> x reduced over ranks, op in {"sum", "max", "mean"}; no gradient

so the same loss runs unchanged in one process (tests) and on many GPUs.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class _GatherWithGrad(torch.autograd.Function):
    """Forward: all_gather + concat. Backward: all-reduce (sum) the full gradient and keep this rank's slice.

    Written with all_reduce only, so it works on every backend (gloo has no reduce_scatter).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.n = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}


@dataclasses.dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str = "cpu") -> Distributed:
        """Join the process group described by torchrun's environment, or return a single-process instance."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            backend = "nccl" if device_type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        return cls(rank=rank, world_size=world, local_rank=local_rank)

    def all_gather(self, x: Tensor) -> Tensor:
        return _GatherWithGrad.apply(x) if self.enabled else x

    def all_reduce(self, x: Tensor, op: str = "sum") -> Tensor:
        if not self.enabled:
            return x
        out = x.detach().clone()
        if op == "mean":
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
            return out / self.world_size
        dist.all_reduce(out, op=_OPS[op])
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()
