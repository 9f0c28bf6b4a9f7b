"""Dense downstream protocols (COCO detection, ADE20K/VOC/ImageNet-S segmentation) through mmdet / mmsegmentation.

Importing this package imports nothing from the mm stack. :mod:`evaluate.protocols.dense.backbone` is plain torch (layer decay
is :mod:`evaluate.protocols.layer_decay`, shared with fine-tuning); :mod:`evaluate.protocols.dense.register` is the only module that touches mm
registries (configs load it through ``custom_imports``); :mod:`evaluate.protocols.dense.runner` imports mm inside its functions.
"""
