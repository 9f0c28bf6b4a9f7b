"""The EMA teacher update: ``teacher <- m * teacher + (1 - m) * student`` over parameters, zipped by name.

Buffers (none in a ViT; BN statistics in a BN projector) are copied from the student, as DINO/BAM leave them to the
teacher's own forward or ignore them; copying keeps a teacher-with-BN evaluation consistent. Momentum follows
``schedules.cosine_schedule(m0, 1, ...)`` per iteration (BAM: 0.995 -> 1, DINO: 0.996 -> 1).

Timing: the engine updates after each optimizer step with the momentum of that step (DINO). The official BAM code
updates inside the next forward, before the teacher runs; the two sequences of teacher weights are the same except
that BAM's skips the update after the very last step and uses the momentum of the following step.
"""

from __future__ import annotations

import copy

import torch
from timm.layers import DropPath
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` with gradients off and stochastic depth off (the teacher starts equal to the
    student; DINO/iBOT build the teacher without drop-path)."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    for module in teacher.modules():
        if isinstance(module, DropPath):
            module.drop_prob = 0.0
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: every teacher parameter becomes ``m * t + (1 - m) * s`` (same names required)."""
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        missing = sorted(set(t_params) ^ set(s_params))
        raise ValueError(f"teacher and student parameters differ: {missing[:3]}")
    names = list(t_params)
    t_list = [t_params[n].data for n in names]
    s_list = [s_params[n].data.to(t_list[i].dtype) for i, n in enumerate(names)]
    torch._foreach_mul_(t_list, momentum)
    torch._foreach_add_(t_list, s_list, alpha=1.0 - momentum)
    s_buffers = dict(student.named_buffers())
    for name, buf in teacher.named_buffers():
        if name in s_buffers:
            buf.copy_(s_buffers[name])
