# Tiny CPU variant of ade20k/upernet_vit_small_512_ade20k_160k.py for ShapesWorld's ade20k/ part (ADE layout:
# images/{training,validation}/*.jpg, annotations/*/*.png with 0 = "other" and 1..10 the shape classes, read with
# reduce_zero_label as ADE20K). Same model family (simple-FPN ViT, UperNet + auxiliary FCN, layer decay, slide
# test), tiny ViT and a few iterations on a fixed batch of 2 (UPerHead's BN needs batch >= 2).
_base_ = ["../_base_/upernet_vit_simplefpn.py", "mmseg::_base_/default_runtime.py"]
norm_cfg = dict(type="BN", requires_grad=True)
classes = ("circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "heart", "crescent", "arrow")
crop = (64, 64)
train_iters = 6
data_root = "data/shapesworld/ade20k/"
model = dict(
    data_preprocessor=dict(size=crop),
    backbone=dict(arch="vit_pico", out_indices=None, drop_path_rate=0.0, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[64] * 4, channels=32, num_classes=len(classes), norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=64, channels=16, num_classes=len(classes), norm_cfg=norm_cfg),
    test_cfg=dict(mode="slide", crop_size=crop, stride=(43, 43)),
)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="Resize", scale=crop, keep_ratio=True),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=crop, keep_ratio=True),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="PackSegInputs"),
]
palette = [[(37 * i) % 256, (91 * i) % 256, (53 * i) % 256] for i in range(1, len(classes) + 1)]
dataset = dict(
    type="BaseSegDataset",
    data_root=data_root,
    metainfo=dict(classes=classes, palette=palette),
    img_suffix=".jpg",
    seg_map_suffix=".png",
    reduce_zero_label=True,
)
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    # an endless sampler: mmengine's iteration loop sleeps 2 s each time a finite one runs out (every iteration here)
    sampler=dict(type="InfiniteSampler", shuffle=False),
    dataset=dict(
        dataset,
        data_prefix=dict(img_path="images/training", seg_map_path="annotations/training"),
        indices=2,
        pipeline=train_pipeline,
    ),
)
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        dataset,
        data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
        pipeline=test_pipeline,
    ),
)
test_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
val_dataloader = val_evaluator = val_cfg = None  # the runner tests once after training
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    constructor="SSLLayerDecayOptimizerConstructor",
    paramwise_cfg=dict(layer_decay_rate=0.9),
)
param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=0, end=train_iters)]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=train_iters)
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=1, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=train_iters, max_keep_ckpts=1),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="SegVisualizationHook"),
)
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo"))
randomness = dict(seed=0)
