"""ADCLR and ADCLR* (Zhang, Zhu, Zhao, Yan, ICLR 2023, "Patch-level contrasting without patch correspondence") on
the sslbench engine. The paper is the method; the released code (Sherrylone/PQCL) implements PQCL instead (queries
carry positions only, no pixels; queries attend to every query; one 96-px local crop gives 36 query tokens; no
multi-crop term; MIM always on), see docs/adclr.md.

* Query crops (``adclr`` section; :class:`~pretrain.views.ViewPlan` ``query_crops``): Q = 10 random crops of the
  original image per image, area fraction 0.05-0.15, each resized to one patch (16x16 for /16 models), embedded by
  the backbone's own patch embedding with no positional embedding (:meth:`~pretrain.vit.SSLViT.embed_queries`); the
  same Q tokens are appended to every global view, for student and teacher. Local crops get no queries.
* Attention (``adclr.attention``): unidirectional cross-attention in every block with no extra parameter
  (:func:`pretrain.vit.query_block`): raw tokens (CLS + patches) attend to raw tokens only, so CLS and patch outputs
  are exactly those of the plain ViT; query i attends to the raw tokens and itself (``oneway``, the paper's stated rule
  {RP, QP_i} -> QP_i). Options: ``raw`` (Eq. 5 literally: no self), ``patches`` (appendix pseudo-code: patches only),
  ``all`` (the PQCL release: queries see all queries), ``bidirectional`` (Fig. 2(c) ablation: plain self-attention
  over the joint sequence, the image tokens then depend on the queries).
* Networks: one :class:`~pretrain.heads.DINOHead` ``"cls"`` for CLS and query tokens (and patch tokens for ADCLR*;
  ``ibot.shared_head=false`` gives the patches their own last layer, as iBOT).
* Loss (:func:`pretrain.losses.adclr.adclr_loss`): DINO's multi-crop CLS term + lambda / Q * sum_i H(teacher query i
  in global view a, student query i in global view b != a), lambda = ``adclr.lambda_query`` (0.5); a separate query
  center (``center_query``, momentum ``adclr.center_momentum_query``) and teacher query temperature
  ``adclr.warmup_teacher_query_temp -> adclr.teacher_query_temp`` over ``dino.warmup_teacher_temp_epochs`` (App. B:
  0.04 -> 0.07 over 30 epochs, for CLS and queries).
* ADCLR* (``adclr.mim: true``): plus iBOT's masked-patch term exactly as :class:`~pretrain.methods.ibot.IBOT` (block
  masks on the student's global views, the teacher unmasked, ``center2``, ``ibot.lambda2``; the CLS term keeps weight
  ``ibot.lambda1``).
* Export: a plain ViT (queries are a training-time construct; no query parameter exists; the mask token of ADCLR* is
  dropped as for iBOT).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pretrain.backbones import backbone_from_config
from pretrain.config import PretrainConfig
from pretrain.losses.adclr import adclr_loss
from pretrain.losses.dino import entropy, teacher_probs, teacher_temperature_schedule, updated_center
from pretrain.losses.ibot import masked_patch_loss
from pretrain.methods.base import SSLMethod, StepContext, patch_size_of
from pretrain.methods.dino import dino_head, teacher_diagnostics
from pretrain.methods.ibot import ibot_head, mask_plan, patch_temperature_schedule, share_teacher_patch_layer
from pretrain.networks import MultiCropNet
from pretrain.views import Batch, ViewPlan
from pretrain.vit import ExtraAttn, SSLViT, TokenOutput


class ADCLRNet(MultiCropNet):
    """``forward(crops, masks=None, queries=None)``: ``queries`` (B, Q, 3, P, P) are embedded by the backbone's patch
    embedding inside the call (so DDP sees one forward) and appended to the first ``num_global`` crops.

    Output: ``{"cls": (V * B, K) crop-major, "query": (G * B, Q, K) when queries are given, "patch": (G * B, N, K2)
    when ``patches``}``.
    """

    def __init__(
        self, backbone: SSLViT, heads: dict[str, nn.Module], num_global: int, attention: ExtraAttn, patches: bool
    ) -> None:
        super().__init__(backbone, heads)
        self.num_global = num_global
        self.extra_attn = attention
        self.patches = patches

    def forward(
        self, crops: list[Tensor], masks: list[Tensor | None] | None = None, queries: Tensor | None = None
    ) -> dict[str, Tensor]:
        extras = None
        if queries is not None:
            tokens = self.backbone.embed_queries(queries)
            extras = [tokens if v < self.num_global else None for v in range(len(crops))]
        return self.project(self.backbone.forward_crops(crops, masks, extras, self.extra_attn))

    def project(self, outs: list[TokenOutput]) -> dict[str, Tensor]:
        head = self.heads["cls"]
        out = {"cls": head(torch.cat([o.cls for o in outs]))}
        globals_ = outs[: self.num_global]
        if globals_[0].extra is not None:
            out["query"] = head(torch.cat([o.extra for o in globals_]))
        if self.patches:
            out["patch"] = head.forward_patches(torch.cat([o.patch for o in globals_]))
        return out


def query_temperature_schedule(cfg: PretrainConfig) -> np.ndarray:
    a, d = cfg.adclr, cfg.dino
    return teacher_temperature_schedule(
        a.warmup_teacher_query_temp, a.teacher_query_temp, d.warmup_teacher_temp_epochs, cfg.train.epochs
    )


class ADCLR(SSLMethod):
    needs_patch_tokens = True

    def __init__(self, cfg: PretrainConfig) -> None:
        d, i, a = cfg.dino, cfg.ibot, cfg.adclr
        if not cfg.ema.enabled:
            raise ValueError("ADCLR needs an EMA teacher (ema.enabled=true)")
        if cfg.data.global_crops < 2:
            raise ValueError(
                f"the query term pairs two global views: data.global_crops must be >= 2, got {cfg.data.global_crops}"
            )
        backbone = backbone_from_config(cfg.model, mask_token=a.mim)
        head = ibot_head(cfg, backbone.embed_dim) if a.mim else dino_head(cfg, backbone.embed_dim)
        net = ADCLRNet(backbone, {"cls": head}, cfg.data.global_crops, a.attention, patches=a.mim)
        super().__init__(cfg, net)
        if a.mim:
            share_teacher_patch_layer(self)
        self.register_buffer("center", torch.zeros(1, d.out_dim))
        self.register_buffer("center_query", torch.zeros(1, 1, d.out_dim))
        if a.mim:
            self.register_buffer("center2", torch.zeros(1, 1, i.patch_out_dim))
            self.patch_temp_schedule = patch_temperature_schedule(cfg)
        self.temp_schedule = teacher_temperature_schedule(
            d.warmup_teacher_temp, d.teacher_temp, d.warmup_teacher_temp_epochs, cfg.train.epochs
        )
        self.query_temp_schedule = query_temperature_schedule(cfg)

    @classmethod
    def view_plan(cls, cfg: PretrainConfig) -> ViewPlan:
        a, i = cfg.adclr, cfg.ibot
        masks = mask_plan(i) if a.mim else {}
        return ViewPlan(
            cfg.data.global_crops,
            cfg.data.local_crops,
            patch_size=patch_size_of(cfg),
            query_crops=a.query_crops,
            query_scale=tuple(a.query_scale),
            query_ratio=tuple(a.query_ratio),
            **masks,
        )

    def loss(self, student: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Any]]:
        d, i, a = self.cfg.dino, self.cfg.ibot, self.cfg.adclr
        if batch.queries is None:
            raise ValueError("ADCLR needs query crops in the batch (its view plan asks the data pipeline for them)")
        if a.mim and batch.masks is None:
            raise ValueError("ADCLR* needs masks in the batch (its view plan asks the data pipeline for them)")
        views = batch.views
        masks = [*batch.masks, *([None] * len(batch.locals))] if a.mim else None
        s_out = student(views, masks, queries=batch.queries)
        with torch.no_grad():
            t_out = self.teacher(batch.globals, queries=batch.queries)
        t_cls, t_query = t_out["cls"].float(), t_out["query"].float()
        epoch = ctx.epoch
        temp = float(self.temp_schedule[min(epoch, len(self.temp_schedule) - 1)])
        query_temp = float(self.query_temp_schedule[min(epoch, len(self.query_temp_schedule) - 1)])
        loss, l_global, l_query = adclr_loss(
            s_out["cls"],
            t_cls,
            s_out["query"],
            t_query,
            self.center,
            self.center_query,
            num_student=len(views),
            teacher_temp=temp,
            teacher_query_temp=query_temp,
            student_temp=d.student_temp,
            lam=a.lambda_query,
        )
        query_probs = teacher_probs(t_query, self.center_query, query_temp)
        diag = {
            "loss_global": float(l_global.detach()),
            "loss_query": float(l_query.detach()),
            "teacher_temp": temp,
            "teacher_query_temp": query_temp,
            "teacher_query_entropy": float(entropy(query_probs)),
            "teacher_query_batch_entropy": float(entropy(query_probs.flatten(0, 1).mean(0))),
            **teacher_diagnostics(t_cls, self.center, temp),
        }
        if a.mim:
            t_patch = t_out["patch"].float()
            flat_masks = torch.cat([m.flatten(1) for m in batch.masks])
            patch_temp = float(self.patch_temp_schedule[min(epoch, len(self.patch_temp_schedule) - 1)])
            g = self.cfg.data.global_crops
            views_ = zip(s_out["patch"].chunk(g), t_patch.chunk(g), flat_masks.chunk(g))
            l_mim = sum(masked_patch_loss(s, t, m, self.center2, patch_temp, d.student_temp) for s, t, m in views_) / g
            loss = i.lambda1 * l_global + a.lambda_query * l_query + i.lambda2 * l_mim
            diag.update(
                loss_mim=float(l_mim.detach()),
                mask_ratio=float(flat_masks.float().mean()),
                teacher_patch_temp=patch_temp,
            )
            self.center2.copy_(
                updated_center(self.center2, t_patch, i.center_momentum2, ctx.all_reduce, ctx.world_size)
            )
        self.center.copy_(updated_center(self.center, t_cls, d.center_momentum, ctx.all_reduce, ctx.world_size))
        self.center_query.copy_(
            updated_center(self.center_query, t_query, a.center_momentum_query, ctx.all_reduce, ctx.world_size)
        )
        return loss, diag
