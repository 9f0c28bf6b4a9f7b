"""Layer-wise learning-rate decay for the dense protocols: re-exported from :mod:`evaluate.layer_decay`, the single
implementation shared with classification fine-tuning."""

from evaluate.layer_decay import layer_id, lr_scale, no_weight_decay, num_vit_layers, param_groups

__all__ = ["layer_id", "lr_scale", "no_weight_decay", "num_vit_layers", "param_groups"]
