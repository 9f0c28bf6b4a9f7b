"""The first Linear layer of a checkpoint's pretraining projection head, for fine-tuning "from the head layer".

iBOT's semi-supervised fine-tuning (``evaluation/semi_supervised/eval_cls.py --finetune_head_layer 1``, the SimCLRv2
idea; protocols.md §3.3) keeps the first Linear of the SSL projection head, Linear(D, hidden), and puts GELU and a new
classifier after it. Only formats that store the head carry it:

==========  =====================================================================================================
format      key of the first head Linear inside the selected network (after removing ``module.``/``_orig_mod.``)
==========  =====================================================================================================
dino        ``head.mlp.0.{weight,bias}`` (DINOHead / iBOTHead: Linear, GELU, Linear, GELU, Linear)
sere        same as dino (iBOT layout)
adclr       same as dino (PQCL keeps iBOT's head)
sslbench    training checkpoints: ``heads.proj.layers.0`` (BAM's :class:`pretrain.heads.ProjectionHead`),
            ``heads.cls.mlp.0`` (DINO/iBOT's :class:`pretrain.heads.DINOHead`); files written before the
            multi-head networks: ``head.layers.0`` / ``head.mlp.0``. Backbone exports carry no head
bam         official ``model`` dict: ``<which>.proj_head.projector.0.{weight,bias}`` (the student's under
            ``student.module.``)
==========  =====================================================================================================

MAE and timm files have no projection head: asking for one is an error naming the format. A first layer without a
bias (a Linear followed by BatchNorm) is returned with ``bias=None``; the caller decides what that means.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from evaluate.checkpoints.formats import _clean, _network, _unwrap, detect_format, get_format
from evaluate.checkpoints.reading import read_checkpoint
from sslcore.errors import SSLBenchError

# format -> candidate key prefixes of the first head Linear, tried in order
HEAD_LAYER_KEYS: dict[str, tuple[str, ...]] = {
    "dino": ("head.mlp.0",),
    "sere": ("head.mlp.0",),
    "adclr": ("head.mlp.0",),
    "sslbench": ("heads.proj.layers.0", "heads.cls.mlp.0", "head.layers.0", "head.mlp.0"),
    "bam": ("proj_head.projector.0", "proj_head.0"),
}


@dataclasses.dataclass
class HeadLayer:
    """``weight`` (hidden, D) and ``bias`` (hidden,) or None of the first head Linear; ``key`` names its source."""

    weight: Tensor
    bias: Tensor | None
    key: str


def _head_network(checkpoint: Mapping[str, Any], fmt: str, which: str) -> dict[str, Tensor]:
    if fmt == "bam":
        model = _unwrap(checkpoint, "model", "state_dict")
        prefix = f"{which}."
        return {_clean(k[len(prefix) :]): v for k, v in model.items() if k.startswith(prefix)}
    if fmt == "sslbench" and checkpoint.get("format") == "sslbench-backbone":
        raise SSLBenchError("an sslbench backbone export stores no projection head (use the training checkpoint.pth)")
    return {_clean(k): v for k, v in _network(checkpoint, which).items()}


def head_layer_from(checkpoint: Mapping[str, Any], *, format: str | None = None, which: str = "teacher") -> HeadLayer:
    """The first head Linear of a loaded checkpoint object (see the module docstring for the keys).

    Raises:
        SSLBenchError: the format carries no projection head, or the expected key is absent.
    """
    fmt = format or detect_format(checkpoint)
    get_format(fmt)  # unknown names fail listing the valid ones
    candidates = HEAD_LAYER_KEYS.get(fmt)
    if not candidates:
        raise SSLBenchError(
            f"format {fmt!r} stores no projection head; model.head=proj_layer needs one of: {', '.join(HEAD_LAYER_KEYS)}"
        )
    network = _head_network(checkpoint, fmt, which)
    for prefix in candidates:
        weight = network.get(f"{prefix}.weight")
        if weight is not None:
            if weight.dim() != 2:
                raise SSLBenchError(f"{prefix}.weight has shape {tuple(weight.shape)}; expected (hidden, D)")
            return HeadLayer(weight.detach().clone(), _bias(network.get(f"{prefix}.bias")), f"{which}:{prefix}")
    raise SSLBenchError(
        f"no projection-head layer in the {which} network of this {fmt} checkpoint (looked for "
        f"{', '.join(p + '.weight' for p in candidates)})"
    )


def _bias(bias: Tensor | None) -> Tensor | None:
    return None if bias is None else bias.detach().clone()


def load_head_layer(
    path: str | Path, *, format: str | None = None, which: str = "teacher", trust_pickle: bool = False
) -> HeadLayer:
    """:func:`head_layer_from` on a checkpoint file (read with the safe-loading policy of :mod:`.reading`)."""
    checkpoint, _ = read_checkpoint(path, trust_pickle=trust_pickle)
    if not isinstance(checkpoint, Mapping):
        raise SSLBenchError(f"{path}: checkpoint is a {type(checkpoint).__name__}, not a dict of weights")
    try:
        return head_layer_from(checkpoint, format=format, which=which)
    except SSLBenchError as exc:
        raise SSLBenchError(f"{path}: {exc}") from None
