# Cascade Mask R-CNN on a plain ViT with the BEiT/iBOT simple-FPN adapter, GIoU 4conv1fc box heads.
# Source: iBOT evaluation/object_detection/configs/_base_/models/cascade_mask_rcnn_vit_fpn.py and
# cascade_rcnn/vit_small_giou_4conv1f_coco_3x.py (protocols.md §6.1). mmdet 3.x port of the mmdet 2.11 config.
_base_ = [
    "mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py",
    "mmdet::_base_/default_runtime.py",
]
custom_imports = dict(imports=["evaluate.protocols.dense.register"], allow_failed_imports=False)
embed_dim = 384
num_classes = 80
norm_cfg = dict(type="SyncBN", requires_grad=True)


def giou_4conv1fc(stds):
    return dict(
        type="Shared4Conv1FCBBoxHead",
        in_channels=256,
        conv_out_channels=256,
        fc_out_channels=1024,
        roi_feat_size=7,
        num_classes=num_classes,
        bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0, 0.0, 0.0, 0.0], target_stds=stds),
        reg_class_agnostic=False,
        reg_decoded_bbox=True,
        norm_cfg=norm_cfg,
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type="GIoULoss", loss_weight=10.0),
    )


model = dict(
    backbone=dict(
        _delete_=True,
        type="SSLViTBackbone",
        arch="vit_small",
        checkpoint=None,
        out_indices=[3, 5, 7, 11],
        out_with_norm=False,
        drop_path_rate=0.1,
        with_cp=True,
        norm_cfg=norm_cfg,
    ),
    neck=dict(in_channels=[embed_dim] * 4),
    roi_head=dict(
        bbox_head=[
            giou_4conv1fc([0.1, 0.1, 0.2, 0.2]),
            giou_4conv1fc([0.05, 0.05, 0.1, 0.1]),
            giou_4conv1fc([0.033, 0.033, 0.067, 0.067]),
        ],
        mask_head=dict(num_classes=num_classes),
    ),
)
del giou_4conv1fc
