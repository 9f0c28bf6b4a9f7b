"""The checkpoint adapter: load any supported ViT checkpoint strictly into :class:`pretrain.vit.SSLViT`, and ResNet /
CAFormer checkpoints (sslbench, BAM, DINO, MoCo, torchvision/timm layouts) into :mod:`pretrain.pooled` (:mod:`.pooled`).

Public API (other parts depend on it)::

    load_backbone(path, *, format=None, which="teacher", num_heads=None, img_size=None, pos_interp=None,
                  trust_pickle=False, name=None) -> LoadedBackbone(model, info, report)
    load_head_layer(path, *, format=None, which="teacher") -> HeadLayer(weight, bias, key)   # projection head, layer 1
    sha256_cached(path) -> str
    CHECKPOINT_FORMATS: dict[name, CheckpointFormat]      # converter, detector, allow-list, defaults
    convert_<format>(checkpoint, which="teacher") -> (backbone in timm keys, leftover keys)

Modules: :mod:`.formats` (converters, detector, defaults), :mod:`.reading` (safe reading, hashing),
:mod:`.heads` (the pretraining head's first layer, for fine-tuning from it), :mod:`.loader` (architecture
inference, strict matching, positional resampling), ``cli_*`` (``sslbench ckpt``).
See docs/checkpoints.md.
"""

from evaluate.checkpoints.formats import (
    CHECKPOINT_FORMATS,
    CheckpointFormat,
    convert_adclr,
    convert_bam,
    convert_dino,
    convert_mae,
    convert_sere,
    convert_sslbench,
    convert_timm,
    detect_format,
)
from evaluate.checkpoints.heads import HEAD_LAYER_KEYS, HeadLayer, head_layer_from, load_head_layer
from evaluate.checkpoints.loader import KeyReport, LoadedBackbone, infer_arch, is_sincos, load_backbone, resolve
from evaluate.checkpoints.pooled import infer_pooled_arch, is_pooled_checkpoint, require_vit
from evaluate.checkpoints.reading import PICKLE_ALLOW_LIST, read_checkpoint, sha256_cached

__all__ = [
    "CHECKPOINT_FORMATS",
    "PICKLE_ALLOW_LIST",
    "CheckpointFormat",
    "HEAD_LAYER_KEYS",
    "HeadLayer",
    "KeyReport",
    "LoadedBackbone",
    "convert_adclr",
    "convert_bam",
    "convert_dino",
    "convert_mae",
    "convert_sere",
    "convert_sslbench",
    "convert_timm",
    "detect_format",
    "head_layer_from",
    "infer_arch",
    "infer_pooled_arch",
    "is_pooled_checkpoint",
    "require_vit",
    "is_sincos",
    "load_backbone",
    "load_head_layer",
    "read_checkpoint",
    "resolve",
    "sha256_cached",
]
