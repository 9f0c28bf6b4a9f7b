# UperNet on a plain ViT with the BEiT/iBOT simple-FPN adapter (strides 4/8/16/32) and an auxiliary FCN head on
# the stride-16 level. Source: iBOT evaluation/semantic_segmentation/configs/_base_/models/upernet.py and
# upernet/vit_small_512_ade20k_160k.py (protocols.md §7.1). mmseg 1.x port of the mmseg 0.12 config.
custom_imports = dict(imports=["evaluate.protocols.dense.register"], allow_failed_imports=False)
norm_cfg = dict(type="SyncBN", requires_grad=True)

model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(
        type="SegDataPreProcessor",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(512, 512),
    ),
    backbone=dict(
        type="SSLViTBackbone",
        arch="vit_small",
        checkpoint=None,
        out_indices=[3, 5, 7, 11],
        out_with_norm=True,
        drop_path_rate=0.1,
        with_cp=False,
        norm_cfg=norm_cfg,
    ),
    decode_head=dict(
        type="UPerHead",
        in_channels=[384, 384, 384, 384],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=384,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    ),
    auxiliary_head=dict(
        type="FCNHead",
        in_channels=384,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="slide", crop_size=(512, 512), stride=(341, 341)),
)
