# ImageNet-S919 semi-supervised semantic segmentation, ViT-S/16: SERE's mmseg port (sere.md §6.2,
# configs/imagenets/fcn_sere-small_pretrained_fp16_8x32_224x224_3600_imagenets919.py). Last block through the
# pretrained final LayerNorm, a linear (1x1 conv) classifier at stride 16 over 920 classes (919 + "other"),
# ignore label 1000. AdamW lr 5e-4, wd 0.05, layer decay 0.5, drop-path 0.1, 180 warm-up iterations then cosine to
# 1e-6, 3600 iterations (100 epochs of the 9190 train-semi images at batch 256 = 8 GPUs x 32). Train: resize (1024,
# 256) x [0.5, 2], random crop 224 (cat_max_ratio 0.75), flip, photometric distortion; test: whole image resized to
# (1024, 256). mIoU is over all 920 classes including "other".
_base_ = ["mmseg::_base_/default_runtime.py"]
custom_imports = dict(imports=["evaluate.protocols.dense.register"], allow_failed_imports=False)
crop_size = (224, 224)
data_root = "data/ImageNetS919/"
model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(
        type="SegDataPreProcessor",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=1000,
        size=crop_size,
        # whole-image test on (1024, 256)-resized images of any aspect: pad to a multiple of the patch size; mmseg
        # removes the padding from the logits before scoring
        test_cfg=dict(size_divisor=16),
    ),
    backbone=dict(
        type="SSLViTBackbone",
        arch="vit_small",
        checkpoint=None,
        out_indices=[11],
        out_with_norm=True,
        with_fpn=False,
        drop_path_rate=0.1,
    ),
    decode_head=dict(
        type="FCNHead",
        in_channels=384,
        channels=384,
        num_convs=0,
        concat_input=False,
        dropout_ratio=0.0,
        num_classes=920,
        ignore_index=1000,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadImageNetSAnnotations"),
    dict(type="RandomResize", scale=(1024, 256), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(1024, 256), keep_ratio=True),
    dict(type="LoadImageNetSAnnotations"),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        type="ImageNetSDataset",
        data_root=data_root,
        data_prefix=dict(img_path="train-semi", seg_map_path="train-semi-segmentation"),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type="ImageNetSDataset",
        data_root=data_root,
        data_prefix=dict(img_path="validation", seg_map_path="validation-segmentation"),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"], ignore_index=1000)
test_evaluator = val_evaluator
total_iters = 3600
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor="SSLLayerDecayOptimizerConstructor",
    paramwise_cfg=dict(layer_decay_rate=0.5),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=180),
    dict(type="CosineAnnealingLR", eta_min=1e-6, by_epoch=False, begin=180, end=total_iters),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=total_iters, val_interval=total_iters)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=900, max_keep_ckpts=2),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="SegVisualizationHook"),
)
# the protocol's total batch (the lr is not rescaled by default: the runner warns and records the effective batch)
auto_scale_lr = dict(enable=False, base_batch_size=256)
