"""The contract between a pretraining method and the engine.

A method subclasses :class:`SSLMethod`, builds its backbone and head, and implements :meth:`SSLMethod.loss`. The
engine owns the optimizer, schedules, EMA updates, precision, distribution and checkpoints; the method owns only the
networks and the objective. ``student``/``teacher`` are :class:`~pretrain.engine.MultiCropWrapper`s, so their state
dict keys are ``backbone.<timm key>`` and ``head.<...>`` (the layout the checkpoint adapter reads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from pretrain.config import PretrainConfig
from pretrain.ema import make_teacher

if TYPE_CHECKING:
    from pretrain.engine import StepContext


class SSLMethod(nn.Module):
    """``student`` (trained), ``teacher`` (EMA copy or None) and ``loss(student, views, ctx)``."""

    def __init__(self, cfg: PretrainConfig, backbone: nn.Module, head: nn.Module) -> None:
        from pretrain.engine import MultiCropWrapper

        super().__init__()
        self.cfg = cfg
        self.student = MultiCropWrapper(backbone, head)
        self.teacher = make_teacher(self.student) if cfg.ema.enabled else None

    def loss(self, student: nn.Module, views: list[Tensor], ctx: StepContext) -> tuple[Tensor, dict[str, Any]]:
        """Scalar loss (fp32, local mean over this rank's images) and a dict of scalar diagnostics.

        Args:
            student: the student to call (``self.student``, DDP-wrapped when distributed): ``student(views)`` gives
                (V * B, D) crop-major outputs.
            views: V tensors (B, 3, S_v, S_v), globals first.
            ctx: step, epoch, world size and the collectives ``all_gather`` / ``all_reduce``.
        """
        raise NotImplementedError
