"""Layer-wise learning-rate decay and weight-decay exemptions for fine-tuning a ViT: one implementation for the
classification fine-tuning (:mod:`evaluate.protocols.finetune`) and the detectors/segmenters (:mod:`evaluate.protocols.dense`).

The rule is BEiT's (``run_class_finetuning.py`` / ``LayerDecayOptimizerConstructor``, copied by iBOT, MAE's
``lr_decay.py`` and timm's ``param_groups_layer_decay``; protocols.md §6.1): with L transformer blocks,

* ``backbone.cls_token``, ``backbone.pos_embed``, ``backbone.patch_embed.*`` -> layer 0;
* ``backbone.blocks.{i}.*`` (``backbone.vit.blocks.{i}`` in our wrapper) -> layer i + 1;
* everything else (final norm, simple-FPN adapters, neck, heads) -> layer L + 1;

and the learning rate of a parameter is ``base_lr * decay ** (L + 1 - layer)``. timm's ``param_groups_layer_decay``
agrees on every parameter except the final ``norm``, which timm puts at the last block's level (``decay ** 1``);
BEiT and MAE (and this module) give it the head's scale 1 (tested in tests/test_finetune.py).

Weight decay is 0 for 1-D parameters (norm weights, biases), ``pos_embed`` and ``cls_token``: what the papers' code
*intends*. The official constructor compares unprefixed names, so in practice ``backbone.pos_embed`` and
``backbone.cls_token`` (3-D) keep weight decay; ``decay_pos_cls=True`` reproduces that behaviour.

Parameter names are those of a module whose ViT sits under ``backbone`` (optionally ``backbone.vit``): the
classifier of :mod:`evaluate.protocols.finetune.model` and the dense wrappers both name it so.

Pure torch: :func:`layer_id` and :func:`param_groups` need no mm package. :mod:`evaluate.protocols.dense.register` wraps them in
an mmengine optimizer-wrapper constructor (groups with the scaled ``lr``); :mod:`evaluate.protocols.finetune` hands them to
``timm.optim.create_optimizer_v2(param_group_fn=...)`` with ``scale_lr=False`` (groups keep the base ``lr`` and carry
``lr_scale``, which timm's schedulers multiply in at every update).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

_BLOCK = re.compile(r"^backbone\.(?:vit\.)?blocks\.(\d+)\.")
_EMBED = re.compile(r"^backbone\.(?:vit\.)?(?:cls_token|pos_embed|patch_embed\.)")
_NO_WD = re.compile(r"(?:^|\.)(?:pos_embed|cls_token)$")


def layer_id(name: str, num_layers: int) -> int:
    """BEiT/iBOT layer index of a parameter of a detector/segmenter whose ViT sits under ``backbone``."""
    if _EMBED.match(name):
        return 0
    match = _BLOCK.match(name)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


def lr_scale(name: str, num_layers: int, decay: float) -> float:
    """The learning-rate multiplier ``decay ** (num_layers + 1 - layer_id(name))``."""
    return decay ** (num_layers + 1 - layer_id(name, num_layers))


def no_weight_decay(name: str, param: nn.Parameter, decay_pos_cls: bool = False) -> bool:
    """True for 1-D parameters and biases, and (unless ``decay_pos_cls``) for ``pos_embed`` / ``cls_token``."""
    if param.ndim <= 1 or name.endswith(".bias"):
        return True
    return not decay_pos_cls and bool(_NO_WD.search(name))


def num_vit_layers(model: nn.Module) -> int:
    """Number of transformer blocks under ``backbone`` (counted from parameter names)."""
    ids = {int(m.group(1)) for m in (_BLOCK.match(n) for n, _ in model.named_parameters()) if m}
    return max(ids) + 1 if ids else 0


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    base_lr: float,
    weight_decay: float,
    decay: float,
    num_layers: int,
    decay_pos_cls: bool = False,
    scale_lr: bool = True,
) -> list[dict]:
    """Optimizer parameter groups, one per (layer, weight decay on/off), each with ``lr``, ``weight_decay``,
    ``lr_scale``, ``layer_id`` and the parameter ``names``. Frozen parameters are skipped.

    ``lr`` is ``base_lr * lr_scale`` when ``scale_lr`` (optimisers that use ``lr`` as is, mmengine), else ``base_lr``
    (for schedulers that multiply ``lr_scale`` in themselves, timm's)."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        layer = layer_id(name, num_layers)
        exempt = no_weight_decay(name, param, decay_pos_cls)
        group = groups.get((layer, exempt))
        if group is None:
            scale = decay ** (num_layers + 1 - layer)
            group = groups[(layer, exempt)] = {
                "params": [],
                "names": [],
                "lr": base_lr * scale if scale_lr else base_lr,
                "lr_scale": scale,
                "layer_id": layer,
                "weight_decay": 0.0 if exempt else weight_decay,
            }
        group["params"].append(param)
        group["names"].append(name)
    return [groups[k] for k in sorted(groups)]
