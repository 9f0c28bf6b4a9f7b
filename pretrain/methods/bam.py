"""BAM (Shalam & Korman, ECCV 2024) on the sslbench engine: backbone + projector + ``pretrain.losses.bam_loss``.

* Backbone: ``pretrain.backbones.build_backbone`` from the ``model`` section (the BAM recipes use ``vit_small_12h`` /
  ``vit_base``, fixed sin-cos positions, a frozen random patch projection and the MoCo init).
* Backbones beyond ViT (paper Table 8): ``model.arch=resnet50`` / ``caformer_m36`` (:mod:`pretrain.pooled`) give
  one pooled feature per crop in the place of the CLS token (``TokenOutput.cls``), so the projector and the loss are
  unchanged; crops of different sizes run as separate batches (BatchNorm statistics per size group, as the official
  ``MultiCropWrapper``).
* Projector: :class:`pretrain.heads.BAMProjector` (3 Linear layers, GELU (``bam.proj_act=relu``: the paper's ResNet
  projector), 4096 hidden/out; BN as an option for teacher-free runs), head ``"proj"`` of a
  :class:`~pretrain.networks.CLSProjectionNet`, run once on the CLS tokens (pooled features) of all crops. Student and EMA teacher are backbone + projector (``ema.enabled=false``: teacher-free, the
  student's own detached similarities give the Sinkhorn target and its global crops the columns).
* Loss per step: the student runs on all V crops; the teacher (no gradient) on all V crops (``bam.teacher_rows=all``,
  the official code: local-crop rows only help balance the columns) or on the G global crops; the columns are the
  teacher's global crops gathered over all ranks (``ctx.all_gather``) and the Sinkhorn column sums are all-reduced
  (``ctx.all_reduce``), so the target is balanced over the world batch.
* Diagnostics per logged step (besides the loss's ``diag/*`` entropies): ``diag/uniform_entropy`` = ln(K - G), the
  reference a source entropy must stay below, and the mean positive / negative cosine of this rank's student
  projector outputs (:mod:`pretrain.diagnostics`).
* eps follows the official per-epoch schedule: linear from ``bam.eps`` to ``bam.eps_final`` over
  ``bam.eps_warmup_epochs`` epochs, then constant (the paper and the released scripts keep 0.05 throughout).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pretrain.backbones import backbone_from_config
from pretrain.config import PretrainConfig
from pretrain.diagnostics import uniform_entropy, view_cosines
from pretrain.heads import BAMProjector
from pretrain.losses.bam import bam_loss
from pretrain.methods.base import SSLMethod, StepContext
from pretrain.networks import CLSProjectionNet
from pretrain.schedules import linear_then_constant
from pretrain.views import Batch


class BAM(SSLMethod):
    def __init__(self, cfg: PretrainConfig) -> None:
        b = cfg.bam
        backbone = backbone_from_config(cfg.model)
        head = BAMProjector(
            backbone.embed_dim,
            hidden_dim=b.proj_hidden,
            out_dim=b.proj_out,
            num_layers=b.proj_layers,
            batch_norm=b.proj_bn,
            act=b.proj_act,
        )
        super().__init__(cfg, CLSProjectionNet(backbone, {"proj": head}))
        self.eps_schedule = linear_then_constant(b.eps, b.eps_final, cfg.train.epochs, b.eps_warmup_epochs)

    def loss(self, student: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Any]]:
        b, views, n_global = self.cfg.bam, batch.views, len(batch.globals)
        s_out = student(views)["cls"]
        teacher = None
        if self.teacher is not None:
            with torch.no_grad():
                teacher = self.teacher(views if b.teacher_rows == "all" else batch.globals)["cls"]
        eps = float(self.eps_schedule[min(ctx.epoch, len(self.eps_schedule) - 1)])
        loss, diag = bam_loss(
            s_out,
            teacher,
            num_crops=len(views),
            num_global=n_global,
            tau=b.tau,
            eps=eps,
            sinkhorn_iters=b.sinkhorn_iters,
            topk=b.top_k or None,
            mask_positives=b.mask_positives,
            positive_mode=b.positive_mode,
            all_gather=ctx.all_gather,
            all_reduce=ctx.all_reduce,
            rank=ctx.rank,
        )
        diag["eps"] = eps
        # collapse diagnostics (pretrain.diagnostics): ln(K - G) of this world batch, projector-output cosines
        columns = n_global * (s_out.shape[0] // len(views)) * ctx.world_size
        diag["diag/uniform_entropy"] = uniform_entropy(columns, n_global)
        diag.update(view_cosines(s_out.detach(), len(views)))
        return loss, diag
