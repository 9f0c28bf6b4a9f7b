# PASCAL VOC 2012 (+SBD aug) UperNet 20k, ViT-S/16: SERE's VOC protocol (sere.md §6.5). SERE publishes no VOC config
# (UNVERIFIED protocol): this is iBOT's ADE20K UperNet recipe (protocols.md §7.1) on mmseg's standard VOC aug data
# and 20k schedule (21 classes, 512x512 crops, batch 16). Evaluated on VOC val with slide test 512/341.
_base_ = [
    "../_base_/upernet_vit_simplefpn.py",
    "mmseg::_base_/datasets/pascal_voc12_aug.py",
    "mmseg::_base_/default_runtime.py",
    "../_base_/seg_iters_adamw_layer_decay.py",
]
total_iters = 20000
model = dict(decode_head=dict(num_classes=21), auxiliary_head=dict(num_classes=21))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=total_iters),
]
train_cfg = dict(max_iters=total_iters, val_interval=total_iters)
default_hooks = dict(checkpoint=dict(interval=4000))
train_dataloader = dict(batch_size=4)
# the protocol's total batch (the lr is not rescaled by default: the runner warns and records the effective batch)
auto_scale_lr = dict(enable=False, base_batch_size=16)
