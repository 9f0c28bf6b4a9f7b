"""DINO and iBOT losses against the official code's outputs, hand-checked cases and invariants.

``tests/data/official/dino_ibot_losses.pt`` holds inputs and outputs of ``DINOLoss`` (facebookresearch/dino@7c446df)
and ``iBOTLoss`` (bytedance/ibot@da316d8), written by ``scripts/reference/official_dino_ibot_losses.py`` (one-process
gloo group, stand-ins for iBOT's logging imports; their files untouched): three DINO steps and two iBOT steps, so the
center updates between steps are checked too. ``tests/data/official/dinov2_sinkhorn.pt`` holds inputs and outputs of
DINOv2's ``DINOLoss.sinkhorn_knopp_teacher`` (facebookresearch/dinov2@b8931f7, its file untouched), written by
``scripts/reference/official_dinov2_sinkhorn.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from collectives import ThreadGroup, run_ranks

from pretrain.losses.dino import (
    dino_loss,
    distillation_loss,
    sinkhorn_knopp_probs,
    teacher_probs,
    teacher_temperature_schedule,
    updated_center,
)
from pretrain.losses.ibot import ibot_loss, masked_patch_loss

OFFICIAL = Path(__file__).parent / "data" / "official" / "dino_ibot_losses.pt"
OFFICIAL_SK = Path(__file__).parent / "data" / "official" / "dinov2_sinkhorn.pt"


def _identity(x, op="sum"):
    return x


@pytest.fixture(scope="module")
def official():
    return torch.load(OFFICIAL, weights_only=True)


def test_temperature_schedule_matches_the_official_table():
    sched = teacher_temperature_schedule(0.04, 0.07, 30, 100)
    ref = np.concatenate((np.linspace(0.04, 0.07, 30), np.ones(70) * 0.07))
    np.testing.assert_array_equal(sched, ref)
    assert len(teacher_temperature_schedule(0.04, 0.07, 30, 10)) == 30  # warm-up longer than training: cut short


def test_dino_loss_and_center_equal_the_official_code(official):
    ref = official["dino"]
    s = ref["settings"]
    temps = teacher_temperature_schedule(s["warmup_temp"], s["temp"], s["warmup_epochs"], s["epochs"])
    center = torch.zeros(1, s["out_dim"])
    for (student, teacher), epoch, out in zip(ref["inputs"], ref["epochs"], ref["outputs"]):
        loss = dino_loss(student, teacher, center, s["ncrops"], float(temps[epoch]), s["student_temp"])
        torch.testing.assert_close(loss, out["loss"], rtol=1e-6, atol=1e-6)
        center = updated_center(center, teacher, s["center_momentum"], _identity, 1)
        torch.testing.assert_close(center, out["center"], rtol=1e-6, atol=1e-7)


def test_ibot_loss_terms_and_both_centers_equal_the_official_code(official):
    ref = official["ibot"]
    s = ref["settings"]
    t1 = teacher_temperature_schedule(s["warmup_temp"], s["temp"], s["warmup_epochs"], s["epochs"])
    t2 = teacher_temperature_schedule(s["warmup_temp2"], s["temp2"], s["warmup_epochs"], s["epochs"])
    center, center2 = torch.zeros(1, s["out_dim"]), torch.zeros(1, 1, s["patch_out_dim"])
    for x, epoch, out in zip(ref["inputs"], ref["epochs"], ref["outputs"]):
        s_cls = torch.cat([x["s_cls"], x["s_local"]])
        loss, l_cls, l_mim = ibot_loss(
            s_cls,
            x["t_cls"],
            x["s_patch"],
            x["t_patch"],
            x["masks"].flatten(1),
            center,
            center2,
            num_student=s["ngcrops"] + s["nlcrops"],
            teacher_temp=float(t1[epoch]),
            teacher_patch_temp=float(t2[epoch]),
            lambda1=s["lambda1"],
            lambda2=s["lambda2"],
        )
        torch.testing.assert_close(l_cls * s["lambda1"], out["cls"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(l_mim * s["lambda2"], out["patch"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(loss, out["loss"], rtol=1e-6, atol=1e-6)
        center = updated_center(center, x["t_cls"], 0.9, _identity, 1)
        center2 = updated_center(center2, x["t_patch"], 0.9, _identity, 1)
        torch.testing.assert_close(center, out["center"], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(center2, out["center2"], rtol=1e-6, atol=1e-7)


def test_dino_loss_by_hand_two_crops_one_image():
    """Two crops, one image, K = 2: teacher q = 0 vs student v = 1 and q = 1 vs v = 0, averaged."""
    student = torch.tensor([[0.0, 0.0], [0.1, 0.0]])
    teacher = torch.tensor([[0.04 * math.log(3.0), 0.0], [0.0, 0.0]])  # probs (3/4, 1/4) and (1/2, 1/2) at tau 0.04
    loss = dino_loss(student, teacher, torch.zeros(1, 2), num_student=2, teacher_temp=0.04, student_temp=0.1)
    log_s1 = torch.log_softmax(torch.tensor([1.0, 0.0]), 0)  # crop 1 at tau_s 0.1
    log_s0 = torch.log(torch.tensor([0.5, 0.5]))
    expected = (-(0.75 * log_s1[0] + 0.25 * log_s1[1]) - (0.5 * log_s0).sum()) / 2
    torch.testing.assert_close(loss, expected)


def test_masked_patch_loss_all_false_and_all_true_masks():
    torch.manual_seed(0)
    s, t = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    none = torch.zeros(2, 6, dtype=torch.bool)
    assert masked_patch_loss(s, t, none, torch.zeros(1, 1, 4), 0.04, 0.1) == 0  # no masked patch: 0, no NaN
    full = torch.ones(2, 6, dtype=torch.bool)
    per_token = -(torch.softmax(t / 0.04, -1) * torch.log_softmax(s / 0.1, -1)).sum(-1)
    torch.testing.assert_close(masked_patch_loss(s, t, full, torch.zeros(1, 1, 4), 0.04, 0.1), per_token.mean())
    # one image unmasked, the other fully masked: the unmasked image still counts in the mean over images
    half = torch.stack([none[0], full[1]])
    torch.testing.assert_close(masked_patch_loss(s, t, half, torch.zeros(1, 1, 4), 0.04, 0.1), per_token[1].mean() / 2)


def test_center_update_averages_over_ranks():
    """Two simulated ranks: the all-reduced sum over both halves equals one rank holding the whole batch."""
    torch.manual_seed(0)
    teacher = torch.randn(8, 5)
    center = torch.randn(1, 5)
    whole = updated_center(center, teacher, 0.9, _identity, 1)
    halves = teacher.chunk(2)

    def all_reduce(x, op):  # what rank 0 receives: its own sum plus rank 1's
        assert op == "sum"
        return halves[0].sum(0, keepdim=True) + halves[1].sum(0, keepdim=True)

    torch.testing.assert_close(updated_center(center, halves[0], 0.9, all_reduce, 2), whole)
    patch = torch.randn(4, 3, 5)  # patch center: per-image mean over tokens, then the batch mean
    ref = 0.9 * torch.zeros(1, 1, 5) + 0.1 * patch.mean(1).mean(0).reshape(1, 1, 5)
    torch.testing.assert_close(updated_center(torch.zeros(1, 1, 5), patch, 0.9, _identity, 1), ref)


def test_sinkhorn_knopp_targets_equal_dinov2():
    ref = torch.load(OFFICIAL_SK, weights_only=True)
    assert ref["source"].startswith("facebookresearch/dinov2@b8931f7")
    assert len(ref["cases"]) == 6
    for case in ref["cases"]:
        got = sinkhorn_knopp_probs(case["teacher"], case["temp"], case["iters"])
        torch.testing.assert_close(got, case["probs"], rtol=1e-5, atol=1e-7)


def test_sinkhorn_knopp_targets_balance_the_prototypes_and_differ_from_centering():
    torch.manual_seed(1)
    teacher = torch.tanh(torch.randn(12, 4)) + torch.tensor([2.0, 0.0, 0.0, 0.0])  # prototype 0 favoured by all rows
    probs = sinkhorn_knopp_probs(teacher, 0.07, iters=200)
    torch.testing.assert_close(probs.sum(1), torch.ones(12))
    torch.testing.assert_close(probs.sum(0), torch.full((4,), 3.0), rtol=1e-4, atol=1e-4)  # 12 rows over 4 prototypes
    plain = teacher_probs(teacher, torch.zeros(1, 4), 0.07)
    assert plain[:, 0].mean() > 0.9 and probs[:, 0].mean() < 0.3  # softmax without a center would collapse here
    # the loss from ready targets equals the centred DINO loss when the targets are the centred softmax
    student = torch.randn(3 * 6, 4)
    center = torch.randn(1, 4)
    torch.testing.assert_close(
        distillation_loss(student, teacher_probs(teacher, center, 0.04), 3),
        dino_loss(student, teacher, center, 3, 0.04),
    )


def test_sinkhorn_knopp_targets_over_two_ranks_equal_one_process():
    """Rank r holds half of the teacher rows; balancing over the world equals balancing the whole batch at once."""
    torch.manual_seed(2)
    teacher = torch.tanh(torch.randn(10, 6)) * 3
    whole = sinkhorn_knopp_probs(teacher, 0.04, 3)
    group, halves = ThreadGroup(2), teacher.chunk(2)
    parts = run_ranks(
        2,
        lambda r: sinkhorn_knopp_probs(
            halves[r], 0.04, 3, all_gather=group.all_gather(r), all_reduce=group.all_reduce(r)
        ),
    )
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-6, atol=1e-7)
    alone = sinkhorn_knopp_probs(halves[0], 0.04, 3)  # without the collectives rank 0 would balance its half only
    assert not torch.allclose(alone, parts[0], atol=1e-4)
