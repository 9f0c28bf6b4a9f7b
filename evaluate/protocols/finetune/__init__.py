"""End-to-end fine-tuning of a pretrained ViT (``sslbench eval finetune``): ImageNet (DeiT, MAE/BEiT recipes),
semi-supervised 1 %/10 % (iBOT, from the projection head's first layer or a new linear head) and transfer (iBOT's
per-dataset settings). See docs/finetune.md.

Modules: :mod:`.config` (schema = defaults), :mod:`.model` (classifier), :mod:`.data` (dataset hook, timm
transforms, mixup), :mod:`.engine` (loop, checkpoints, evaluation), :mod:`.run` (``run(cfg)`` and the CLI),
``recipes/*.yaml`` (one file per paper setting).
"""
