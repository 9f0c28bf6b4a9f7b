# ADE20K Semantic FPN 40k, ViT-S/16: the SelfPatch/XCiT protocol of ADCLR's Table 4 (protocols.md §7.3, adclr.md §5).
# SelfPatch segmentation/configs/semfpn_vit-s16_512x512_40k_ade20k.py: blocks (2, 5, 8, 11) at stride 16 without
# the deconvolution adapters, FPN neck (256, 4 outputs) + FPNHead (128 channels), AdamW lr 6e-5, wd 0.01 (none on
# pos_embed/cls_token/norms), no layer decay, poly power 1.0, warm-up 1500, 40k iterations, 4 images per GPU
# (GPU count unstated; 8 assumed), whole-image test. Head count from the checkpoint (SelfPatch hard-codes 8).
_base_ = [
    "../_base_/upernet_vit_simplefpn.py",
    "mmseg::_base_/datasets/ade20k.py",
    "mmseg::_base_/default_runtime.py",
    "../_base_/seg_iters_adamw_layer_decay.py",
]
total_iters = 40000
model = dict(
    # whole-image test: pad every test image to a multiple of 32 (patch 16 and the FPN's stride 32); mmseg removes
    # the padding from the logits (img_padding_size) before scoring
    data_preprocessor=dict(test_cfg=dict(size_divisor=32)),
    backbone=dict(out_indices=[2, 5, 8, 11], out_with_norm=False, with_fpn=False),
    neck=dict(type="FPN", in_channels=[384] * 4, out_channels=256, num_outs=4),
    decode_head=dict(
        _delete_=True,
        type="FPNHead",
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=128,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=dict(type="SyncBN", requires_grad=True),
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    ),
    auxiliary_head=None,
    test_cfg=dict(_delete_=True, mode="whole"),
)
optim_wrapper = dict(optimizer=dict(lr=6e-5, weight_decay=0.01), paramwise_cfg=dict(layer_decay_rate=1.0))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=total_iters),
]
train_cfg = dict(max_iters=total_iters, val_interval=total_iters)
default_hooks = dict(checkpoint=dict(interval=8000))
train_dataloader = dict(batch_size=4)
# the protocol's total batch (the lr is not rescaled by default: the runner warns and records the effective batch)
auto_scale_lr = dict(enable=False, base_batch_size=32)
