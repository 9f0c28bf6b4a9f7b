"""Per-iteration schedules with DINO's ``cosine_scheduler`` semantics (BAM uses the same helper).

``cosine_schedule(base, final, epochs, iters_per_epoch, warmup_epochs, start)[it]`` is the value at iteration ``it``
(0-based, ``T = epochs * iters_per_epoch`` entries), with ``W = warmup_epochs * iters_per_epoch``::

    it <  W:  linspace(start, base, W)[it]          (inclusive: the last warm-up iteration is at ``base``)
    it >= W:  final + (base - final) * (1 + cos(pi * (it - W) / (T - W))) / 2

so the cosine starts at ``base`` and approaches ``final`` (never quite reached, as in DINO). The tables are plain
numpy arrays indexed by the global step: a resumed run reads the same values, there is no schedule state to save.
"""

from __future__ import annotations

import math

import numpy as np


def cosine_schedule(
    base: float,
    final: float,
    epochs: int,
    iters_per_epoch: int,
    warmup_epochs: float = 0.0,
    start: float = 0.0,
) -> np.ndarray:
    """Values for ``epochs * iters_per_epoch`` iterations (float64); see the module docstring."""
    total = int(epochs * iters_per_epoch)
    warmup = min(int(round(warmup_epochs * iters_per_epoch)), total)
    ramp = np.linspace(start, base, warmup) if warmup > 0 else np.zeros(0)
    rest = np.arange(total - warmup)
    cos = final + 0.5 * (base - final) * (1.0 + np.cos(math.pi * rest / max(len(rest), 1)))
    return np.concatenate([ramp, cos]).astype(np.float64)


def linear_then_constant(base: float, final: float, epochs: int, ramp_epochs: int) -> np.ndarray:
    """Per-epoch values: linear from ``base`` to ``final`` over ``ramp_epochs`` epochs, then ``final`` (BAM's eps)."""
    ramp = np.linspace(base, final, ramp_epochs) if ramp_epochs > 0 else np.zeros(0)
    return np.concatenate([ramp, np.full(max(epochs - len(ramp), 0), final)])[:epochs].astype(np.float64)


def scaled_lr(lr_per_256: float, global_batch: int) -> float:
    """Linear scaling rule (Goyal et al. 2017): ``lr * global_batch / 256``."""
    return lr_per_256 * global_batch / 256.0
