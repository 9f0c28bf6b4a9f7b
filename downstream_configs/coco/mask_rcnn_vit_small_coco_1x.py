# COCO Mask R-CNN 1x, ViT-S/16: SelfPatch's released protocol (protocols.md §6.2, adclr.md §5), whose numbers ADCLR's
# Table 3 compares with. ADCLR's own fine-tuning, as its paper states it (batch 32, lr 3e-4, layer decay 0.75), is
# mask_rcnn_vit_small_coco_1x_adclr.py; the papers suite runs that one.
# SelfPatch detection/configs/selfpatch/mask_rcnn_vit_small_12_p16_1x_coco.py: FPN 256, Shared2FC box head with L1
# loss, AdamW lr 5e-5, wd 0.05 without decay on pos_embed/cls_token/norms, no layer decay, drop-path 0.05,
# 12 epochs (steps 8, 11), warm-up 1000 iterations, 1 image per GPU (8 GPUs assumed: batch 8), DETR-style
# augmentation. The head count comes from the checkpoint (SelfPatch's config hard-codes 8 heads for ViT-S: a bug).
_base_ = [
    "mmdet::_base_/models/mask-rcnn_r50_fpn.py",
    "mmdet::_base_/default_runtime.py",
    "../_base_/coco_instance_detr_aug.py",
    "../_base_/coco_1x_adamw_layer_decay.py",
]
custom_imports = dict(imports=["evaluate.protocols.dense.register"], allow_failed_imports=False)
norm_cfg = dict(type="SyncBN", requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,
        type="SSLViTBackbone",
        arch="vit_small",
        checkpoint=None,
        out_indices=[3, 5, 7, 11],
        out_with_norm=False,
        drop_path_rate=0.05,
        norm_cfg=norm_cfg,
    ),
    neck=dict(in_channels=[384] * 4),
    roi_head=dict(bbox_head=dict(loss_bbox=dict(type="L1Loss", loss_weight=1.0))),
)
optim_wrapper = dict(optimizer=dict(lr=5e-5), paramwise_cfg=dict(layer_decay_rate=1.0))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
train_dataloader = dict(batch_size=1, num_workers=2)
auto_scale_lr = dict(base_batch_size=8)
