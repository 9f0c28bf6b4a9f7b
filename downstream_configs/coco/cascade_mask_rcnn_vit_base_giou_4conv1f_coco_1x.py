# COCO Cascade Mask R-CNN 1x, ViT-B/16 (iBOT protocol): protocols.md §6.1, sere.md §6.4.
# iBOT README command: 8 GPUs x 2 images = batch 16, lr 1e-4, 12 epochs (steps 8, 11), drop-path 0.2.
# Layer decay 0.65 as in iBOT's config file (its README command uses 0.75).
_base_ = [
    "../_base_/cascade_mask_rcnn_vit_simplefpn.py",
    "../_base_/coco_instance_detr_aug.py",
    "../_base_/coco_1x_adamw_layer_decay.py",
]
embed_dim = 768
model = dict(backbone=dict(arch="vit_base", drop_path_rate=0.2), neck=dict(in_channels=[768] * 4))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.65))
train_dataloader = dict(batch_size=2, num_workers=4)
auto_scale_lr = dict(base_batch_size=16)
