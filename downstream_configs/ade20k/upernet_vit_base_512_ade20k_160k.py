# ADE20K UperNet 160k, ViT-B/16 (iBOT protocol): protocols.md §7.1, sere.md §6.3. lr 8e-5 (iBOT README command;
# its config says 7e-4), layer decay 0.65, batch 16 (8 GPUs x 2 images), UPerHead channels 768.
_base_ = [
    "../_base_/upernet_vit_simplefpn.py",
    "mmseg::_base_/datasets/ade20k.py",
    "mmseg::_base_/default_runtime.py",
    "../_base_/seg_iters_adamw_layer_decay.py",
]
model = dict(
    backbone=dict(arch="vit_base"),
    decode_head=dict(in_channels=[768] * 4, channels=768),
    auxiliary_head=dict(in_channels=768),
)
optim_wrapper = dict(optimizer=dict(lr=8e-5), paramwise_cfg=dict(layer_decay_rate=0.65))
train_dataloader = dict(batch_size=2)
# the protocol's total batch (the lr is not rescaled by default: the runner warns and records the effective batch)
auto_scale_lr = dict(enable=False, base_batch_size=16)
