"""Collectives between threads, standing in for a process group in tests of code that takes ``all_gather`` /
``all_reduce`` callables: each rank runs in its own thread, and every call deposits its tensor, waits for all ranks
and reads every slot."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch


class ThreadGroup:
    """Collectives between threads: each call deposits its tensor, waits for all ranks, reads every slot."""

    def __init__(self, world: int) -> None:
        self.world, self.barrier, self.slots = world, threading.Barrier(world), [None] * world

    def _exchange(self, rank: int, t: torch.Tensor) -> list[torch.Tensor]:
        self.slots[rank] = t
        self.barrier.wait()
        parts = list(self.slots)
        self.barrier.wait()
        return parts

    def all_gather(self, rank: int):
        group = self

        class Gather(torch.autograd.Function):  # backward: sum the gradients of all ranks, keep this rank's slice
            @staticmethod
            def forward(ctx, t):
                ctx.n = t.shape[0]
                return torch.cat(group._exchange(rank, t.detach()))

            @staticmethod
            def backward(ctx, grad):
                total = torch.stack(group._exchange(rank, grad)).sum(0)
                return total[rank * ctx.n : (rank + 1) * ctx.n]

        return Gather.apply

    def all_reduce(self, rank: int):
        return lambda t: torch.stack(self._exchange(rank, t)).sum(0)


def run_ranks(world: int, fn: Callable[[int], object]) -> list[object]:
    """``[fn(0), ..., fn(world - 1)]``, each call in its own thread (so that their collectives can meet)."""
    results: list[object] = [None] * world

    def run(r: int) -> None:
        results[r] = fn(r)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results
