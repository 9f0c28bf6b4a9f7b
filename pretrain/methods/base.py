"""The contract between a pretraining method and the engine.

A method is networks + state + a loss:

* **networks**: ``student``, a :class:`~pretrain.networks.MultiCropNet` (backbone + named heads; the engine wraps it
  in DDP and trains it) and ``teacher``, its EMA copy or None (``ema.enabled=false``);
* **state**: buffers and plain attributes registered on the method (DINO's centers), checkpointed by the engine
  through :meth:`SSLMethod.method_state` and restored with :meth:`SSLMethod.load_method_state`; schedules are
  tables indexed by step or epoch, rebuilt from the config;
* **a view plan**: :meth:`SSLMethod.view_plan` says which crops (and masks) the data pipeline makes;
* **a loss**: :meth:`SSLMethod.loss` gets the student to call (DDP-wrapped when distributed; call it ONCE per step,
  with every crop the student needs), the :class:`~pretrain.views.Batch` and a :class:`StepContext`.

The engine owns the optimizer, schedules, EMA updates, precision, distribution and checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from pretrain.config import PretrainConfig
from pretrain.ema import make_teacher
from pretrain.networks import MultiCropNet
from pretrain.pooled import is_pooled
from pretrain.views import Batch, ViewPlan
from pretrain.vit import ARCHS
from sslcore.errors import SSLBenchError

NETWORKS = ("student.", "teacher.")


@dataclasses.dataclass
class StepContext:
    """What a method's loss may use besides the batch: the step, epoch and the collectives of
    :mod:`pretrain.dist` (identities in one process)."""

    step: int
    epoch: int
    epochs: int
    iters_per_epoch: int
    rank: int
    world_size: int
    all_gather: Callable[[Tensor], Tensor]
    all_reduce: Callable[[Tensor, str], Tensor]
    teacher_momentum: float = 0.0


class SSLMethod(nn.Module):
    """``student`` (trained), ``teacher`` (EMA copy or None), method state, ``view_plan`` and ``loss``.

    ``needs_patch_tokens``: the method reads ViT patch tokens, masks or appended queries, so a pooled CNN/MetaFormer
    backbone (:mod:`pretrain.pooled`) is refused when the method is built (a ValueError, a one-line ConfigError)."""

    needs_patch_tokens = False

    def __init__(self, cfg: PretrainConfig, student: MultiCropNet) -> None:
        if self.needs_patch_tokens and is_pooled(student.backbone):
            raise ValueError(f"model.arch={cfg.model.arch}: {cfg.method} needs a ViT (patch tokens)")
        super().__init__()
        self.cfg = cfg
        self.student = student
        self.teacher = make_teacher(student) if cfg.ema.enabled else None

    @classmethod
    def view_plan(cls, cfg: PretrainConfig) -> ViewPlan:
        """Crops the data pipeline makes for this method; by default ``data.global_crops`` + ``data.local_crops``."""
        return ViewPlan(cfg.data.global_crops, cfg.data.local_crops, patch_size=patch_size_of(cfg))

    def loss(self, student: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Any]]:
        """Scalar loss (fp32, local mean over this rank's images) and a dict of scalar diagnostics."""
        raise NotImplementedError

    def method_state(self) -> dict[str, Any]:
        """Everything of ``state_dict()`` that is not a network (centers, ...)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(NETWORKS)}

    def load_method_state(self, state: dict[str, Any]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(NETWORKS)]
        if missing or unexpected:
            raise SSLBenchError(
                f"method state does not match {self.cfg.method}: missing {missing}, unexpected {unexpected}"
            )


def patch_size_of(cfg: PretrainConfig) -> int:
    """Patch size of ``model.arch`` (16 for an unknown name, which the backbone builder then rejects)."""
    arch = ARCHS.get(cfg.model.arch)
    return arch.patch_size if arch is not None else 16  # pooled (CNN) backbones: no patch grid, never used
