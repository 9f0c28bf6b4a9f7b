"""iBOT (Zhou et al., ICLR 2022; official code bytedance/ibot ``main_ibot.py``) on the sslbench engine.

* Networks: backbone with a learned mask token (``model`` section) and one :class:`~pretrain.heads.DINOHead` ``"cls"``
  for CLS and patch tokens (``ibot.shared_head=true``, the released ViT-S/B recipes; ``false`` adds a separate last
  layer ``last_layer2`` of ``ibot.patch_out_dim`` for the patches, the MLP staying shared, as the official head).
  The head widths and the CLS temperatures are the ``dino`` section (iBOT recipes: K = 8192). With separate heads,
  the paper's teacher mirrors the student; the official code's argparse default (``--shared_head_teacher true``) has
  the teacher score its patches with its CLS last layer instead, which ``ibot.shared_head_teacher=true`` gives (the
  student's ``last_layer2`` is then trained towards the teacher's CLS-layer patch distributions). As in the official
  code, the teacher's CLS layer then starts as a copy of the student's *patch* layer (its state-dict copy loads the
  alias ``last_layer2`` last) and only the EMA brings it towards the student's CLS layer.
* Views: the plan asks for one block mask per global crop (``ibot.mask_*``: ratio 0 or U(0.1, 0.5) with probability
  1/2 each, BEiT block shapes; :mod:`pretrain.masking`). The student sees the *masked* global crops and the
  unmasked local crops; the teacher sees the unmasked global crops.
* Loss: :func:`pretrain.losses.ibot.ibot_loss`: DINO's CLS term over (teacher global q, student crop v != q) plus the
  masked-patch term on the same view; separate CLS and patch centers (buffers of the method, checkpointed), each
  updated after the loss with momentum 0.9 and all-reduced over ranks; teacher CLS temperature from the ``dino``
  section and patch temperature ``ibot.warmup_teacher_patch_temp -> ibot.teacher_patch_temp`` over the same
  warm-up epochs (the official code; ``ibot.mask_start_epoch`` > 0 holds the patch temperature at its warm-up value
  until then, as ``mim_start_epoch``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pretrain.backbones import backbone_from_config
from pretrain.config import IBOTConfig, PretrainConfig
from pretrain.heads import DINOHead
from pretrain.losses.dino import teacher_temperature_schedule, updated_center
from pretrain.losses.ibot import ibot_loss
from pretrain.methods.base import SSLMethod, StepContext, patch_size_of
from pretrain.methods.dino import dino_head, teacher_diagnostics
from pretrain.networks import MultiCropNet
from pretrain.views import Batch, ViewPlan
from pretrain.vit import SSLViT, TokenOutput


class IBOTNet(MultiCropNet):
    """``{"cls": (V * B, K) crop-major, "patch": (G * B, N, K2)}``: the head on every crop's CLS token and on the
    patch tokens of the first ``num_global`` crops."""

    def __init__(self, backbone: SSLViT, heads: dict[str, nn.Module], num_global: int) -> None:
        super().__init__(backbone, heads)
        self.num_global = num_global

    def project(self, outs: list[TokenOutput]) -> dict[str, Tensor]:
        head = self.heads["cls"]
        return {
            "cls": head(torch.cat([o.cls for o in outs])),
            "patch": head.forward_patches(torch.cat([o.patch for o in outs[: self.num_global]])),
        }


def ibot_head(cfg: PretrainConfig, in_dim: int) -> DINOHead:
    """The CLS + patch head of a method with iBOT's masked-patch term (``dino`` widths, ``ibot`` head options)."""
    d, i = cfg.dino, cfg.ibot
    for key, shared in (("shared_head", i.shared_head), ("shared_head_teacher", i.shared_head_teacher)):
        if shared and i.patch_out_dim != d.out_dim:
            raise ValueError(
                f"ibot.{key}=true gives patch logits of dino.out_dim={d.out_dim}; set ibot.patch_out_dim to "
                f"the same value (got {i.patch_out_dim}) or ibot.{key}=false"
            )
    return dino_head(cfg, in_dim, patch_out_dim=0 if i.shared_head else i.patch_out_dim)


@torch.no_grad()
def share_teacher_patch_layer(method: SSLMethod) -> None:
    """``ibot.shared_head_teacher``: the teacher's head scores patches with its CLS last layer, which starts as a
    copy of the student's patch layer ``last_layer2`` (the official initial copy); call once the teacher is made.
    The student keeps both layers; the teacher's unused ``last_layer2`` follows the EMA."""
    i = method.cfg.ibot
    if not i.shared_head and i.shared_head_teacher:
        head = method.teacher.heads["cls"]
        head.patches_from_cls_layer = True
        head.last_layer.load_state_dict(method.student.heads["cls"].last_layer2.state_dict())


def patch_temperature_schedule(cfg: PretrainConfig) -> np.ndarray:
    i, d = cfg.ibot, cfg.dino
    ramp = teacher_temperature_schedule(
        i.warmup_teacher_patch_temp, i.teacher_patch_temp, d.warmup_teacher_temp_epochs, cfg.train.epochs
    )
    held = np.full(i.mask_start_epoch, i.warmup_teacher_patch_temp)
    return np.concatenate([held, ramp])


def mask_plan(i: IBOTConfig) -> dict[str, Any]:
    """The :class:`~pretrain.views.ViewPlan` keywords of an ``ibot`` section: block masks on the global crops."""
    return dict(
        masks=True,
        mask_means=tuple(i.mask_ratio),
        mask_spreads=tuple(i.mask_ratio_var),
        mask_shape=i.mask_shape,
        mask_aspect=tuple(i.mask_aspect),
        mask_start_epoch=i.mask_start_epoch,
    )


class IBOT(SSLMethod):
    needs_patch_tokens = True

    def __init__(self, cfg: PretrainConfig) -> None:
        d, i = cfg.dino, cfg.ibot
        if not cfg.ema.enabled:
            raise ValueError("iBOT needs an EMA teacher (ema.enabled=true)")
        backbone = backbone_from_config(cfg.model, mask_token=True)
        head = ibot_head(cfg, backbone.embed_dim)
        super().__init__(cfg, IBOTNet(backbone, {"cls": head}, cfg.data.global_crops))
        share_teacher_patch_layer(self)
        self.register_buffer("center", torch.zeros(1, d.out_dim))
        self.register_buffer("center2", torch.zeros(1, 1, i.patch_out_dim))
        self.temp_schedule = teacher_temperature_schedule(
            d.warmup_teacher_temp, d.teacher_temp, d.warmup_teacher_temp_epochs, cfg.train.epochs
        )
        self.patch_temp_schedule = patch_temperature_schedule(cfg)

    @classmethod
    def view_plan(cls, cfg: PretrainConfig) -> ViewPlan:
        i = cfg.ibot
        return ViewPlan(
            cfg.data.global_crops,
            cfg.data.local_crops,
            patch_size=patch_size_of(cfg),
            **mask_plan(i),
        )

    def loss(self, student: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Any]]:
        if batch.masks is None:
            raise ValueError("iBOT needs masks in the batch (its view plan asks the data pipeline for them)")
        views = batch.views
        s_out = student(views, [*batch.masks, *([None] * len(batch.locals))])
        with torch.no_grad():
            t_out = self.teacher(batch.globals)
        schedules = (self.temp_schedule, self.patch_temp_schedule)
        return ibot_objective(
            self.cfg, self.center, self.center2, schedules, s_out, t_out, batch.masks, len(views), ctx
        )


def ibot_objective(
    cfg: PretrainConfig,
    center: Tensor,
    center2: Tensor,
    schedules: tuple[np.ndarray, np.ndarray],
    s_out: dict[str, Tensor],
    t_out: dict[str, Tensor],
    masks: list[Tensor],
    num_views: int,
    ctx: StepContext,
) -> tuple[Tensor, dict[str, Any]]:
    """iBOT's loss of one step from the student's and the teacher's ``{"cls", "patch"}`` outputs (:class:`IBOTNet`
    layouts) and the G global masks (B, h, w); updates both centers in place after the loss (the methods built on
    iBOT call this too). ``schedules``: the CLS and patch teacher temperatures per epoch."""
    d, i = cfg.dino, cfg.ibot
    t_cls, t_patch = t_out["cls"].float(), t_out["patch"].float()
    flat_masks = torch.cat([m.flatten(1) for m in masks])
    temp = float(schedules[0][min(ctx.epoch, len(schedules[0]) - 1)])
    patch_temp = float(schedules[1][min(ctx.epoch, len(schedules[1]) - 1)])
    loss, l_cls, l_mim = ibot_loss(
        s_out["cls"],
        t_cls,
        s_out["patch"],
        t_patch,
        flat_masks,
        center,
        center2,
        num_student=num_views,
        teacher_temp=temp,
        teacher_patch_temp=patch_temp,
        student_temp=d.student_temp,
        lambda1=i.lambda1,
        lambda2=i.lambda2,
    )
    diag = {
        "loss_cls": float(l_cls.detach()),
        "loss_mim": float(l_mim.detach()),
        "mask_ratio": float(flat_masks.float().mean()),
        "teacher_temp": temp,
        "teacher_patch_temp": patch_temp,
        **teacher_diagnostics(t_cls, center, temp),
    }
    center.copy_(updated_center(center, t_cls, d.center_momentum, ctx.all_reduce, ctx.world_size))
    center2.copy_(updated_center(center2, t_patch, i.center_momentum2, ctx.all_reduce, ctx.world_size))
    return loss, diag
