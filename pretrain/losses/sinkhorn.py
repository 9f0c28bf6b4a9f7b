"""Sinkhorn-Knopp balancing of a batch of score rows, shared by BAM's target and DINOv2-style teacher centering.

Layout: ``logits`` (n, K) on this rank (n rows: samples or attention rows; K columns: batch columns or prototypes,
every rank holding all K). The result is row-stochastic, and after each iteration its column sums over all ranks
are equal: the soft assignment spreads the world's rows evenly over the K columns.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Collective = Callable[[Tensor], Tensor]


def identity(t: Tensor) -> Tensor:
    """The one-process collective."""
    return t


@torch.no_grad()
def sinkhorn_balance(
    logits: Tensor, iters: int, *, all_gather: Collective = identity, all_reduce: Collective = identity
) -> Tensor:
    """Balance exp(logits) (n, K) so that its column sums over all ranks are equal; rows sum to 1 on return.

    Each iteration scales the columns by their global sums (``all_reduce``), then the rows by theirs (rows are
    local: every rank holds all K columns). A final row normalisation makes ``iters=0`` the plain softmax. Entries
    with logit -inf (or the most negative float) come out exactly 0. One global max shift (``all_gather`` of each
    rank's max) keeps exp in range with the same scale on every rank.
    """
    shift = all_gather(logits.max().reshape(1)).max()
    q = torch.exp(logits - shift)
    tiny = torch.finfo(q.dtype).tiny
    for _ in range(iters):
        q = q / all_reduce(q.sum(0, keepdim=True)).clamp_min(tiny)
        q = q / q.sum(1, keepdim=True).clamp_min(tiny)
    return q / q.sum(1, keepdim=True).clamp_min(tiny)
