# ADE20K UperNet 160k, ViT-S/16 (iBOT protocol, used by BAM, SERE and ADCLR): protocols.md §7.1, sere.md §6.3.
# 512x512 crops, slide test 512/341, AdamW lr 3e-5, wd 0.05, layer decay 0.9, warm-up 1500, poly, 160k
# iterations, batch 16 (iBOT README: 4 GPUs x 4 images), UPerHead channels 384, final norm on every tap.
_base_ = [
    "../_base_/upernet_vit_simplefpn.py",
    "mmseg::_base_/datasets/ade20k.py",
    "mmseg::_base_/default_runtime.py",
    "../_base_/seg_iters_adamw_layer_decay.py",
]
optim_wrapper = dict(optimizer=dict(lr=3e-5), paramwise_cfg=dict(layer_decay_rate=0.9))
train_dataloader = dict(batch_size=4)
# the protocol's total batch (the lr is not rescaled by default: the runner warns and records the effective batch)
auto_scale_lr = dict(enable=False, base_batch_size=16)
