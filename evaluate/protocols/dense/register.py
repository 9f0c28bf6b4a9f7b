"""The only module of sslbench that touches mm registries. Configs load it with
``custom_imports = dict(imports=["evaluate.protocols.dense.register"], allow_failed_imports=False)``.

Registers:

* ``SSLViTBackbone`` (:mod:`evaluate.protocols.dense.backbone`) in mmdet's and mmseg's ``MODELS``;
* ``SSLLayerDecayOptimizerConstructor`` (:mod:`evaluate.protocols.layer_decay`) in mmengine's
  ``OPTIM_WRAPPER_CONSTRUCTORS`` (mmdet's and mmseg's registries inherit from it). ``paramwise_cfg`` keys:
  ``layer_decay_rate`` (float), ``num_layers`` (default: counted from the model), ``decay_pos_cls`` (default False);
* a local checkpoint loader for mmengine (:func:`safe_load`): mmengine 0.10.7 calls ``torch.load`` with torch's
  default ``weights_only=True`` (torch >= 2.6), which refuses the runner's own resume checkpoints (``HistoryBuffer``,
  numpy arrays in the message hub). The loader lists the globals a file needs
  (``torch.serialization.get_unsafe_globals_in_checkpoint``) and, when they are all plain mmengine/numpy data types,
  loads weights-only with exactly those allowed. A ``HistoryBuffer`` also pickles its bound statistics methods
  through ``builtins.getattr``, which cannot be allowed safely (it reaches any attribute, hence any module); such a
  file is unpickled fully only when it lies under a directory of ``$SSLBENCH_DENSE_TRUSTED_DIRS`` (the runner sets
  it to the run's own ``mm/`` work directory, i.e. files this run wrote itself). Anything else is refused with the
  file and the global's name.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

import torch
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.runner.checkpoint import CheckpointLoader

from evaluate.protocols.dense.backbone import SSLViTBackbone
from evaluate.protocols.layer_decay import num_vit_layers, param_groups
from sslcore.errors import SSLBenchError

logger = logging.getLogger("sslbench")

# data types found in mmengine 0.10.7 runner checkpoints (message hub, meta) that are safe to rebuild
SAFE_GLOBALS = (
    "mmengine.logging.history_buffer.HistoryBuffer",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
    "_codecs.encode",
)
_SAFE_DTYPE_PREFIX = "numpy.dtypes."


def _resolve(name: str):
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _trusted(filename: str) -> bool:
    path = Path(filename).resolve()
    dirs = [Path(d).resolve() for d in os.environ.get("SSLBENCH_DENSE_TRUSTED_DIRS", "").split(os.pathsep) if d]
    return any(path.is_relative_to(d) for d in dirs)


def safe_load(filename: str, map_location=None):
    """Load a local mm checkpoint without unpickling arbitrary objects (see the module docstring)."""
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    refused = [g for g in needed if g not in SAFE_GLOBALS and not g.startswith(_SAFE_DTYPE_PREFIX)]
    if refused and _trusted(filename):
        logger.info("%s: unpickling %s from this run's own work directory", filename, refused)
        return torch.load(filename, map_location=map_location, weights_only=False)
    if refused:
        raise SSLBenchError(f"{filename}: refusing to unpickle {refused[0]!r} (not a known mmengine data type)")
    with torch.serialization.safe_globals([_resolve(g) for g in needed]):
        return torch.load(filename, map_location=map_location, weights_only=True)


@CheckpointLoader.register_scheme(prefixes="", force=True)
def _load_local(filename: str, map_location=None):
    import os.path as osp

    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    return safe_load(filename, map_location)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class SSLLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """mmengine constructor for :func:`evaluate.protocols.layer_decay.param_groups` (BEiT/iBOT layer decay)."""

    def add_params(self, params: list, module: torch.nn.Module, **kwargs) -> None:
        cfg = dict(self.paramwise_cfg)
        unknown = set(cfg) - {"layer_decay_rate", "num_layers", "decay_pos_cls"}
        if unknown:
            raise SSLBenchError(f"optim_wrapper.paramwise_cfg: unknown key {sorted(unknown)[0]!r}")
        num_layers = int(cfg.get("num_layers") or num_vit_layers(module))
        groups = param_groups(
            module.named_parameters(),
            base_lr=self.base_lr,
            weight_decay=self.base_wd or 0.0,
            decay=float(cfg.get("layer_decay_rate", 1.0)),
            num_layers=num_layers,
            decay_pos_cls=bool(cfg.get("decay_pos_cls", False)),
        )
        for group in groups:
            group.pop("names")
        params.extend(groups)


def _register() -> None:
    import mmcv
    import numpy as np
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine import fileio
    from mmseg.datasets import BaseSegDataset
    from mmseg.datasets.transforms import LoadAnnotations
    from mmseg.registry import DATASETS, TRANSFORMS
    from mmseg.registry import MODELS as SEG_MODELS

    for registry in (DET_MODELS, SEG_MODELS):
        registry.register_module(name="SSLViTBackbone", module=SSLViTBackbone, force=True)

    class LoadImageNetSAnnotations(LoadAnnotations):
        """ImageNet-S labels: RGB PNGs with class id = R + 256 * G (0 = other, 1000 = ignore); sere.md §6.2."""

        def _load_seg_map(self, results: dict) -> None:
            bgr = mmcv.imfrombytes(fileio.get(results["seg_map_path"]), flag="color", backend="cv2")
            results["gt_seg_map"] = bgr[..., 2].astype(np.int64) + 256 * bgr[..., 1].astype(np.int64)
            results["seg_fields"].append("gt_seg_map")

    class ImageNetSDataset(BaseSegDataset):
        """ImageNet-S919: ``<split>/<wnid>/<name>.JPEG`` with ``<split>-segmentation/<wnid>/<name>.png``."""

        METAINFO = dict(classes=("other",) + tuple(f"class{i}" for i in range(1, 920)))

        def __init__(self, **kwargs) -> None:
            kwargs.setdefault("img_suffix", ".JPEG")
            kwargs.setdefault("seg_map_suffix", ".png")
            kwargs.setdefault("ignore_index", 1000)
            super().__init__(**kwargs)

    TRANSFORMS.register_module(name="LoadImageNetSAnnotations", module=LoadImageNetSAnnotations, force=True)
    DATASETS.register_module(name="ImageNetSDataset", module=ImageNetSDataset, force=True)


_register()
