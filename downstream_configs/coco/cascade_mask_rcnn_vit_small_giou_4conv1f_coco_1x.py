# COCO Cascade Mask R-CNN 1x, ViT-S/16 (iBOT protocol, used by BAM and SERE): protocols.md §6.1, sere.md §6.4.
# iBOT README command: 8 GPUs x 4 images = batch 32, lr 1e-4, 12 epochs (steps 8, 11), drop-path 0.1,
# activation checkpointing. Layer decay 0.75 as in iBOT's config file (its README command uses 0.8).
_base_ = [
    "../_base_/cascade_mask_rcnn_vit_simplefpn.py",
    "../_base_/coco_instance_detr_aug.py",
    "../_base_/coco_1x_adamw_layer_decay.py",
]
model = dict(backbone=dict(arch="vit_small", drop_path_rate=0.1))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.75))
train_dataloader = dict(batch_size=4, num_workers=4)
auto_scale_lr = dict(base_batch_size=32)
