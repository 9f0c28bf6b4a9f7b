"""Loss functions of the pretraining methods (pure functions; state such as schedules lives in the engine)."""

from pretrain.losses.bam import bam_loss

__all__ = ["bam_loss"]
