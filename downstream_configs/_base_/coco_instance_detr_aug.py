# COCO 2017 instances with the DETR-style multi-scale + crop augmentation iBOT/BEiT use (protocols.md §6.1):
# flip 0.5; then either short side 480..800 step 32 (long <= 1333), or short side 400/500/600 -> absolute random
# crop 384..600 -> the same multi-scale resize. Test: single scale (1333, 800). Batches are padded to 32 by the
# data preprocessor.
_base_ = ["mmdet::_base_/datasets/coco_instance.py"]
multi_scale = [(1333, s) for s in range(480, 801, 32)]
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="RandomFlip", prob=0.5),
    dict(
        type="RandomChoice",
        transforms=[
            [dict(type="RandomChoiceResize", scales=multi_scale, keep_ratio=True)],
            [
                dict(type="RandomChoiceResize", scales=[(1333, 400), (1333, 500), (1333, 600)], keep_ratio=True),
                dict(type="RandomCrop", crop_type="absolute_range", crop_size=(384, 600), allow_negative_crop=True),
                dict(type="RandomChoiceResize", scales=multi_scale, keep_ratio=True),
            ],
        ],
    ),
    dict(type="PackDetInputs"),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
