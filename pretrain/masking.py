"""Masks for masked image modelling (iBOT, BEiT-style "block" masks), drawn from the torch generator.

Per crop the masking ratio is drawn as iBOT's ``ImageFolderMask.get_pred_ratio``: for each (mean m, spread s) pair a
value U(m - s, m + s) (m when s = 0), then one of the pairs picked uniformly; the ViT-S/B recipes use pairs (0, 0) and
(0.3, 0.2), i.e. ratio 0 or U(0.1, 0.5) with probability 1/2 each. A "block" mask then adds rectangles (BEiT's
``MaskingGenerator`` as iBOT copies it) until ratio * h * w patches are covered: area U(low, remaining) with
low = (min(h, w) // 3)^2, log-aspect U(log a0, log a1), up to 10 tries per rectangle, stop when a rectangle adds
nothing; "rand" masks int(ratio * h * w) patches uniformly at random.

Differences from the release, on purpose: randomness comes from torch's generator (the data pipeline seeds it per
(seed, epoch, image), which keeps ``--resume`` exact) instead of Python's ``random``/NumPy's global state, so the
masks are equal in distribution to iBOT's, not bit-equal.

Layout: (h, w) bool, True = the patch is replaced by the mask token; h, w = crop size // patch size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _randint(lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (both ends included, as ``random.randint``)."""
    return int(torch.randint(lo, hi + 1, ()))


def sample_ratio(means: Sequence[float], spreads: Sequence[float]) -> float:
    """One masking ratio: U(m - s, m + s) for each pair, then one pair chosen uniformly."""
    if len(means) != len(spreads) or not means:
        raise ValueError(f"masking ratios {list(means)} and spreads {list(spreads)} must pair up")
    values = []
    for m, s in zip(means, spreads):
        if not 0 <= s <= m or m + s > 1:
            raise ValueError(f"masking ratio {m} +- {s} must stay within [0, 1]")
        values.append(_uniform(m - s, m + s) if s > 0 else m)
    return values[_randint(0, len(values) - 1)] if len(values) > 1 else values[0]


def block_mask(h: int, w: int, ratio: float, aspect: tuple[float, float] = (0.3, 1 / 0.3)) -> Tensor:
    """An (h, w) bool mask of rectangles covering about ``ratio * h * w`` patches (see the module docstring)."""
    mask = torch.zeros(h, w, dtype=torch.bool)
    target = ratio * h * w
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    low = (min(h, w) // 3) ** 2
    count = 0
    while count < target:
        remaining = target - count
        delta = 0
        for _ in range(10):
            area = _uniform(low, remaining)
            ar = math.exp(_uniform(*log_aspect))
            bh, bw = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
            if bw < w and bh < h:
                top, left = _randint(0, h - bh), _randint(0, w - bw)
                block = mask[top : top + bh, left : left + bw]
                new = bh * bw - int(block.sum())
                if 0 < new <= remaining:
                    block.fill_(True)
                    delta += new
            if delta > 0:
                break
        if delta == 0:
            break
        count += delta
    return mask


def random_mask(h: int, w: int, ratio: float) -> Tensor:
    """An (h, w) bool mask of ``int(ratio * h * w)`` patches chosen uniformly."""
    mask = torch.zeros(h * w, dtype=torch.bool)
    mask[torch.randperm(h * w)[: int(ratio * h * w)]] = True
    return mask.reshape(h, w)


def draw_mask(
    h: int,
    w: int,
    means: Sequence[float],
    spreads: Sequence[float],
    shape: str = "block",
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> Tensor:
    """The mask of one crop: a ratio from :func:`sample_ratio`, then a block or random mask."""
    ratio = sample_ratio(means, spreads)
    if shape == "block":
        return block_mask(h, w, ratio, aspect)
    if shape == "rand":
        return random_mask(h, w, ratio)
    raise ValueError(f"unknown mask shape {shape!r} (valid: block, rand)")
