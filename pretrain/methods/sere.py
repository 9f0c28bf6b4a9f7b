"""SERE (Li, Gao, Cheng; arXiv 2206.05184 v1, TPAMI 2023; official code MCG-NKU/SERE ``main_sere.py``) on the
sslbench engine: pixel- and channel-level self-relation losses on top of iBOT (``sere.base: ibot``, the released
code) or DINO (``sere.base: dino``, the v1 paper's framing).

* Features: the last block's patch tokens **before** the final LayerNorm, CLS dropped, as an (N, C, h, w) map
  (``TokenOutput.prenorm_patch``); the student's global crops are the iBOT-masked ones when the base is iBOT.
* Heads (:class:`~pretrain.heads.SEREHead`): ``pixel`` and ``channel`` for global crops, ``pixel_local`` and
  ``channel_local`` for local crops (only when there are local crops). Each is projection = BN2d -> ReLU, predictor =
  1x1 conv (no bias) -> BN -> ReLU; the teacher uses the projection output, the student the predictor's. The BNs
  normalise over the world batch (:class:`~pretrain.syncbn.WorldBatchNorm2d`, the official SyncBatchNorm) and the
  teacher's run with batch statistics: the engine keeps every network in train mode and SERE never calls ``eval``.
  Global heads see the G crops of the step in one batch, local heads the L local crops in one batch (as released).
* Relations and losses: :mod:`pretrain.losses.sere` (pixel relation per head, d^-1/2 scale, resampled on the overlap
  grids of :mod:`pretrain.overlap`, 13 x 13 global-global and 6 x 6 global-local; channel relation / (h w);
  teacher temperatures 0.5 / 0.1, student 1).
* Objective: ``base * (4 - alpha - beta) / 2 + alpha * L_pix + beta * L_ch`` where ``base`` is iBOT's
  ``lambda1 * L_cls + lambda2 * L_mim`` (:func:`pretrain.methods.ibot.ibot_objective`) or DINO's CLS loss
  (:func:`pretrain.methods.dino.dino_objective`). The v1 text writes ``L = L_I + L_p + L_c`` with L_I DINO's loss
  (equal weights, v1 eq. 6); the released code has the weighted form with alpha 0.2, beta 0.5. One formula serves
  both: alpha = beta = 1 gives v1's equal weights, which the DINO+SERE recipe uses.

Choices where paper and code differ (docs/sere.md):

* The pixel relation follows the code: per-head relations on the full maps, then both axes resampled with bilinear
  ``grid_sample`` (edge-inclusive grid, ``align_corners=False``, zero padding: border samples are halved), not v1's
  "sample the overlap features, then relate them with 1/sqrt(C)".
* The released ``MultiCropWrapper`` picks the local heads with ``local_crop=end_idx > 2`` in a call that holds only
  the local crops, so a run with 1 or 2 local crops sends them through the *global* heads (and the channel
  normaliser 6 is hard-coded for locals, 14 for globals). That is a bug: here local crops always use the local heads
  and the normaliser is each map's own h * w.
* The official code samples the one global-global overlap once per crop (2 global crops); with G > 2 each
  (q, v) pair is sampled on its own overlap, which is the same thing for G = 2.
* The teacher computes only the projection (the release also runs its unused predictor, whose BN running statistics
  nothing reads). Relations are computed in fp32 (the release: fp16 autocast, resampling in fp32).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pretrain.backbones import backbone_from_config
from pretrain.config import PretrainConfig
from pretrain.heads import SEREHead
from pretrain.losses.dino import teacher_temperature_schedule
from pretrain.losses.sere import channel_relation, pixel_relation, sere_channel_loss, sere_pixel_loss
from pretrain.methods.base import SSLMethod, StepContext, patch_size_of
from pretrain.methods.dino import dino_head, dino_objective
from pretrain.methods.ibot import (
    IBOT,
    ibot_head,
    ibot_objective,
    patch_temperature_schedule,
    share_teacher_patch_layer,
)
from pretrain.networks import MultiCropNet
from pretrain.pooled import is_pooled
from pretrain.views import Batch, ViewPlan
from pretrain.vit import SSLViT, TokenOutput


class SERENet(MultiCropNet):
    """``{"cls": (V * B, K), "patch": (G * B, N, K) (iBOT base only), "pixel": (G * B, M, n, n), "channel":
    (G * B, C, C), "pixel_local": (L * B, M, n_l, n_l), "channel_local": (L * B, C, C)}`` for V = G + L crops, crop-major,
    globals first (the local entries only when the call holds local crops). ``predict``: relations from the
    predictor (student) or the projection (teacher, set on the EMA copy)."""

    def __init__(
        self, backbone: SSLViT, heads: dict[str, nn.Module], num_global: int, patch_logits: bool, relation_heads: int
    ) -> None:
        super().__init__(backbone, heads)
        self.num_global = num_global
        self.patch_logits = patch_logits
        self.relation_heads = relation_heads
        self.predict = True

    def relations(self, outs: list[TokenOutput], suffix: str) -> dict[str, Tensor]:
        maps = torch.cat([o.patch_map(prenorm=True) for o in outs])  # (crops * B, C, h, w)
        return {
            f"pixel{suffix}": pixel_relation(self.heads[f"pixel{suffix}"](maps, self.predict), self.relation_heads),
            f"channel{suffix}": channel_relation(self.heads[f"channel{suffix}"](maps, self.predict)),
        }

    def project(self, outs: list[TokenOutput]) -> dict[str, Tensor]:
        head = self.heads["cls"]
        glob, local = outs[: self.num_global], outs[self.num_global :]
        out = {"cls": head(torch.cat([o.cls for o in outs]))}
        if self.patch_logits:
            out["patch"] = head.forward_patches(torch.cat([o.patch for o in glob]))
        out.update(self.relations(glob, ""))
        if local:
            if len({o.grid for o in local}) != 1:
                raise ValueError(f"SERE's local crops must share one size, got patch grids {[o.grid for o in local]}")
            out.update(self.relations(local, "_local"))
        return out


class SERE(SSLMethod):
    needs_patch_tokens = True

    def __init__(self, cfg: PretrainConfig) -> None:
        d, i, s = cfg.dino, cfg.ibot, cfg.sere
        if not cfg.ema.enabled:
            raise ValueError("SERE needs an EMA teacher (ema.enabled=true)")
        ibot = s.base == "ibot"
        backbone = backbone_from_config(cfg.model, mask_token=ibot)
        if is_pooled(backbone):
            raise ValueError(f"model.arch={cfg.model.arch}: sere needs a ViT (patch tokens)")
        dim = backbone.embed_dim
        heads_m = s.relation_heads or backbone.blocks[-1].attn.num_heads
        if dim % heads_m:
            raise ValueError(f"sere.relation_heads={heads_m} does not divide the width {dim}")
        heads: dict[str, nn.Module] = {"cls": ibot_head(cfg, dim) if ibot else dino_head(cfg, dim)}
        kinds = ["", "_local"] if cfg.data.local_crops > 0 else [""]
        heads.update({f"{rel}{k}": SEREHead(dim) for k in kinds for rel in ("pixel", "channel")})
        super().__init__(cfg, SERENet(backbone, heads, cfg.data.global_crops, ibot, heads_m))
        self.teacher.predict = False
        if ibot:
            share_teacher_patch_layer(self)
        self.register_buffer("center", torch.zeros(1, d.out_dim))
        if ibot:
            self.register_buffer("center2", torch.zeros(1, 1, i.patch_out_dim))
            self.patch_temp_schedule = patch_temperature_schedule(cfg)
        self.temp_schedule = teacher_temperature_schedule(
            d.warmup_teacher_temp, d.teacher_temp, d.warmup_teacher_temp_epochs, cfg.train.epochs
        )

    @classmethod
    def view_plan(cls, cfg: PretrainConfig) -> ViewPlan:
        if cfg.sere.base == "ibot":
            return IBOT.view_plan(cfg)
        return ViewPlan(cfg.data.global_crops, cfg.data.local_crops, patch_size=patch_size_of(cfg))

    def base_objective(
        self, s_out: dict[str, Tensor], t_out: dict[str, Tensor], batch: Batch, ctx: StepContext
    ) -> tuple[Tensor, dict[str, Any]]:
        if self.cfg.sere.base == "ibot":
            schedules = (self.temp_schedule, self.patch_temp_schedule)
            return ibot_objective(
                self.cfg, self.center, self.center2, schedules, s_out, t_out, batch.masks, len(batch.views), ctx
            )
        return dino_objective(
            self.cfg, self.center, self.temp_schedule, s_out["cls"], t_out["cls"], len(batch.views), ctx
        )

    def loss(self, student: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Any]]:
        s = self.cfg.sere
        views, num_global, num_local = batch.views, len(batch.globals), len(batch.locals)
        masks = None
        if s.base == "ibot":
            if batch.masks is None:
                raise ValueError(
                    "SERE on iBOT needs masks in the batch (its view plan asks the data pipeline for them)"
                )
            masks = [*batch.masks, *([None] * num_local)]
        s_out = student(views, masks)
        with torch.no_grad():
            t_out = self.teacher(batch.globals)
        base, diag = self.base_objective(s_out, t_out, batch, ctx)
        patch = self.student.backbone.patch_embed.patch_size
        hws = [(v.shape[-2] // patch[0], v.shape[-1] // patch[1]) for v in views]
        s_pix = list(s_out["pixel"].chunk(num_global))
        s_ch = list(s_out["channel"].chunk(num_global))
        if num_local:
            s_pix += list(s_out["pixel_local"].chunk(num_local))
            s_ch += list(s_out["channel_local"].chunk(num_local))
        l_pix = sere_pixel_loss(
            s_pix, hws, list(t_out["pixel"].chunk(num_global)), hws[0], batch.boxes, batch.flips,
            s.pixel_temp, s.global_grid, s.local_grid,
        )  # fmt: skip
        l_ch = sere_channel_loss(s_ch, list(t_out["channel"].chunk(num_global)), s.channel_temp)
        loss = base * (4 - s.alpha - s.beta) / 2 + s.alpha * l_pix + s.beta * l_ch
        diag.update(
            {
                "loss_base": float(base.detach()),
                "loss_pixel": float(l_pix.detach()),
                "loss_channel": float(l_ch.detach()),
            }
        )
        return loss, diag
