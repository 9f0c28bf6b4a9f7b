# Tiny CPU variant of coco/cascade_mask_rcnn_vit_small_giou_4conv1f_coco_1x.py for ShapesWorld's coco/ part
# (images/{train,val}/, annotations/instances_{train,val}.json, 10 classes, 64-128 px images). Same model family
# (simple-FPN ViT, Cascade Mask R-CNN with GIoU 4conv1fc heads, layer decay), tiny ViT and schedule: a handful of
# iterations on a fixed batch (no random augmentation), evaluated with the COCO metric on val.
_base_ = ["../_base_/cascade_mask_rcnn_vit_simplefpn.py"]
num_classes = 10
norm_cfg = dict(type="BN", requires_grad=True)
classes = ("circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "heart", "crescent", "arrow")
img_scale = (128, 128)
width = 64  # FPN / RoI-head channels (256 in the paper configs)
train_iters = 6
data_root = "data/shapesworld/coco/"


def stage(stds):  # the base file's GIoU 4conv1fc head (lists replace, they do not merge)
    return dict(
        type="Shared4Conv1FCBBoxHead",
        in_channels=width,
        conv_out_channels=width,
        fc_out_channels=256,
        roi_feat_size=7,
        num_classes=num_classes,
        bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0, 0.0, 0.0, 0.0], target_stds=stds),
        reg_class_agnostic=False,
        reg_decoded_bbox=True,
        norm_cfg=norm_cfg,
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type="GIoULoss", loss_weight=10.0),
    )


def rcnn_stage(iou):
    return dict(
        assigner=dict(
            type="MaxIoUAssigner",
            pos_iou_thr=iou,
            neg_iou_thr=iou,
            min_pos_iou=iou,
            match_low_quality=False,
            ignore_iof_thr=-1,
        ),
        sampler=dict(type="RandomSampler", num=128, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
        mask_size=28,
        pos_weight=-1,
        debug=False,
    )


model = dict(
    backbone=dict(arch="vit_pico", out_indices=None, drop_path_rate=0.0, with_cp=False, norm_cfg=norm_cfg),
    neck=dict(in_channels=[64] * 4, out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        mask_roi_extractor=dict(out_channels=width),
        bbox_head=[
            stage([0.1, 0.1, 0.2, 0.2]),
            stage([0.05, 0.05, 0.1, 0.1]),
            stage([0.033, 0.033, 0.067, 0.067]),
        ],
        mask_head=dict(num_classes=num_classes, in_channels=width, conv_out_channels=width),
    ),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=200, max_per_img=100),
        rcnn=[rcnn_stage(iou) for iou in (0.5, 0.6, 0.7)],
    ),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100), rcnn=dict(max_per_img=20)),
)
del stage, rcnn_stage
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="Resize", scale=img_scale, keep_ratio=True),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=img_scale, keep_ratio=True),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
]
dataset = dict(type="CocoDataset", data_root=data_root, metainfo=dict(classes=classes), backend_args=None)
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    # an endless sampler: mmengine's iteration loop sleeps 2 s each time a finite one runs out (every iteration here)
    sampler=dict(type="InfiniteSampler", shuffle=False),
    batch_sampler=dict(type="AspectRatioBatchSampler"),
    dataset=dict(
        dataset,
        ann_file="annotations/instances_train.json",
        data_prefix=dict(img="images/train/"),
        indices=2,
        filter_cfg=dict(filter_empty_gt=True, min_size=1),
        pipeline=train_pipeline,
    ),
)
test_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        dataset,
        ann_file="annotations/instances_val.json",
        data_prefix=dict(img="images/val/"),
        test_mode=True,
        pipeline=test_pipeline,
    ),
)
test_evaluator = dict(
    type="CocoMetric", ann_file=data_root + "annotations/instances_val.json", metric=["bbox", "segm"], format_only=False
)
# the runner tests once after training: no separate validation pass
val_dataloader = val_evaluator = val_cfg = None
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor="SSLLayerDecayOptimizerConstructor",
    paramwise_cfg=dict(layer_decay_rate=0.75),
)
param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=0, end=train_iters)]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=train_iters)
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=1),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=train_iters, max_keep_ckpts=1),
)
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo"))
randomness = dict(seed=0)
