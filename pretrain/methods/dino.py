"""DINO (Caron et al., ICCV 2021; official code facebookresearch/dino ``main_dino.py``) on the sslbench engine.

* Networks: backbone (``model`` section; DINO's ViTs use learned positions, drop-path 0.1 in the student only) and a
  :class:`~pretrain.heads.DINOHead` ``"cls"`` (``dino`` section: 3-layer MLP, hidden 2048, GELU, L2-normalised
  bottleneck 256, weight-normalised last layer to K = 65536), run once on the CLS tokens of all crops.
* Views: ``data.global_crops`` (2) + ``data.local_crops`` (10 in the ViT-S recipe); the teacher sees the global crops.
* Loss: :func:`pretrain.losses.dino.dino_loss` with the teacher temperature of the current epoch
  (:func:`~pretrain.losses.dino.teacher_temperature_schedule`), then the center update, all-reduced over ranks
  (``center`` is a buffer of the method: checkpointed and restored with it). ``dino.centering=sinkhorn_knopp``:
  DINOv2's Sinkhorn-Knopp targets instead (:func:`pretrain.losses.dino.sinkhorn_knopp_probs`; no center update).
* The last layer is frozen during ``optim.freeze_last_layer_epochs`` (recipes: 1, ``optim.last_layer: last_layer``);
  gradient clipping per parameter (``optim.clip_mode: per_param``) as the official ``utils.clip_gradients``.

Diagnostics logged each step: the teacher temperature, the mean entropy of the teacher's distributions and that of
their batch mean (collapse to one prototype drives both to 0; uniform outputs drive both to ln K), the KL of the
batch mean to the uniform (how far the center is from uniform) and K itself (``teacher_num_outputs``, so that
:func:`pretrain.diagnostics.collapse_findings` can compare the entropies with ln K).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pretrain.backbones import backbone_from_config
from pretrain.config import PretrainConfig
from pretrain.heads import DINOHead
from pretrain.losses.dino import (
    distillation_loss,
    entropy,
    sinkhorn_knopp_probs,
    teacher_probs,
    teacher_temperature_schedule,
    updated_center,
)
from pretrain.methods.base import SSLMethod, StepContext
from pretrain.networks import CLSProjectionNet
from pretrain.views import Batch


def dino_head(cfg: PretrainConfig, in_dim: int, patch_out_dim: int = 0) -> DINOHead:
    d = cfg.dino
    return DINOHead(
        in_dim,
        out_dim=d.out_dim,
        hidden_dim=d.hidden_dim,
        bottleneck_dim=d.bottleneck_dim,
        nlayers=d.nlayers,
        use_bn=d.use_bn,
        norm_last_layer=d.norm_last_layer,
        patch_out_dim=patch_out_dim,
    )


def teacher_diagnostics(teacher: Tensor, center: Tensor, temp: float) -> dict[str, float]:
    """Collapse diagnostics of teacher logits (R, K): mean row entropy, entropy of the batch mean, KL(mean || U)."""
    return target_diagnostics(teacher_probs(teacher, center, temp))


def target_diagnostics(probs: Tensor) -> dict[str, float]:
    """:func:`teacher_diagnostics` of ready (R, K) teacher targets."""
    mean = probs.mean(0)
    mean_entropy = float(entropy(mean))
    return {
        "teacher_entropy": float(entropy(probs)),
        "teacher_batch_entropy": mean_entropy,
        "teacher_kl_uniform": math.log(probs.shape[-1]) - mean_entropy,
        "teacher_num_outputs": float(probs.shape[-1]),
    }


class DINO(SSLMethod):
    def __init__(self, cfg: PretrainConfig) -> None:
        backbone = backbone_from_config(cfg.model)
        if not cfg.ema.enabled:
            raise ValueError("DINO needs an EMA teacher (ema.enabled=true)")
        net = CLSProjectionNet(backbone, {"cls": dino_head(cfg, backbone.embed_dim)}, head="cls")  # (V * B, K) rows
        super().__init__(cfg, net)
        d = cfg.dino
        self.register_buffer("center", torch.zeros(1, d.out_dim))
        self.temp_schedule = teacher_temperature_schedule(
            d.warmup_teacher_temp, d.teacher_temp, d.warmup_teacher_temp_epochs, cfg.train.epochs
        )

    def loss(self, student: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Any]]:
        views = batch.views
        s_out = student(views)["cls"]
        with torch.no_grad():
            t_out = self.teacher(batch.globals)["cls"]
        return dino_objective(self.cfg, self.center, self.temp_schedule, s_out, t_out, len(views), ctx)


def dino_objective(
    cfg: PretrainConfig,
    center: Tensor,
    temp_schedule: np.ndarray,
    s_cls: Tensor,
    t_cls: Tensor,
    num_views: int,
    ctx: StepContext,
) -> tuple[Tensor, dict[str, Any]]:
    """DINO's loss of one step from the student's (V * B, K) and the teacher's (G * B, K) CLS logits; updates
    ``center`` in place after the loss (the methods built on DINO call this too)."""
    d = cfg.dino
    t_cls = t_cls.float()
    temp = float(temp_schedule[min(ctx.epoch, len(temp_schedule) - 1)])
    if d.centering == "sinkhorn_knopp":
        probs = sinkhorn_knopp_probs(
            t_cls, temp, d.sinkhorn_iters, all_gather=ctx.all_gather, all_reduce=ctx.all_reduce
        )
    else:
        probs = teacher_probs(t_cls, center, temp)
    loss = distillation_loss(s_cls, probs, num_views, d.student_temp)
    diag = {"teacher_temp": temp, **target_diagnostics(probs)}
    if d.centering == "centering":
        center.copy_(updated_center(center, t_cls, d.center_momentum, ctx.all_reduce, ctx.world_size))
    return loss, diag
