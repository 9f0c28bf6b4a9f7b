"""Per-iteration schedules against hand-computed values (DINO's cosine_scheduler semantics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pretrain.schedules import cosine_schedule, linear_then_constant, scaled_lr


def test_warmup_then_cosine_hand_values():
    # 2 epochs x 2 iterations, 1 warm-up epoch: linspace(0, 1, 2) then 0.5 * (1 + cos(pi * [0, 1] / 2))
    assert cosine_schedule(1.0, 0.0, 2, 2, warmup_epochs=1).tolist() == pytest.approx([0.0, 1.0, 1.0, 0.5])


def test_weight_decay_cosine_increasing_hand_values():
    r = math.sqrt(0.5)
    expected = [0.04, 0.4 - 0.18 * (1 + r), 0.22, 0.4 - 0.18 * (1 - r)]
    assert cosine_schedule(0.04, 0.4, 1, 4).tolist() == pytest.approx(expected)


def test_momentum_schedule_is_bams_formula():
    total = 3 * 5
    m = cosine_schedule(0.995, 1.0, 3, 5)
    t = np.arange(total)
    assert m == pytest.approx(1 - (1 - 0.995) * (1 + np.cos(np.pi * t / total)) / 2)
    assert m[0] == 0.995 and np.all(np.diff(m) > 0) and m[-1] < 1.0


def test_lengths_and_warmup_start_value():
    s = cosine_schedule(2.0, 0.1, 10, 7, warmup_epochs=3, start=0.5)
    assert len(s) == 70 and s[0] == 0.5 and s[20] == 2.0 and s[21] == 2.0
    assert s[21:].max() == 2.0 and s[-1] == pytest.approx(0.1 + 0.95 * (1 + math.cos(math.pi * 48 / 49)))


def test_eps_ramp_and_linear_scaling():
    assert linear_then_constant(0.1, 0.05, 5, 3).tolist() == pytest.approx([0.1, 0.075, 0.05, 0.05, 0.05])
    assert linear_then_constant(0.05, 0.05, 3, 0).tolist() == [0.05, 0.05, 0.05]
    assert scaled_lr(3e-4, 4096) == pytest.approx(4.8e-3)  # BAM's official peak LR
    assert scaled_lr(0.003 * 256 / 4096, 4096) == pytest.approx(0.003)  # the paper's
