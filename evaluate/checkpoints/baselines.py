"""Reference "backbones" that are not networks: the raw-pixel baseline every pretraining result is compared with.

:class:`RawPixels` maps an evaluation batch (B, 3, H, W) (the protocols' own Resize + CenterCrop + ImageNet
normalisation) to its pixels, area-downsampled to ``size`` x ``size`` (``size = None``: as given) and flattened
channel-major into one token of 3 * size^2 values. It exposes the one method the frozen-feature protocols call,
``forward_tokens(x, taps=...)``, so k-NN, linear probing, logistic regression and clustering run on raw pixels
through the very code that evaluates a ViT; the records carry ``format: raw-pixels``. There is no patch token:
feature banks must use the CLS tap of one block (linear probing: ``taps=cls n_last=1``), and the protocols that need
patch tokens (DAVIS, dense tasks, fine-tuning) do not apply.

**Pseudo-checkpoints.** ``sslbench eval full`` (and the demo through it) addresses a baseline by a spec instead of
a file: ``baseline:raw-pixels[:SIDE][@INPUT]``, e.g. ``baseline:raw-pixels:16@64`` (the image at the protocols'
``INPUT`` x ``INPUT`` centre crop, default 224, area-downsampled to 16 x 16; no ``SIDE``: not downsampled).
:func:`parse_baseline` checks a spec (one line naming it otherwise), :func:`load_baseline` builds it, and
:func:`adapt_config` decides per protocol: the frozen-feature protocols run on the one token (linear probing with
``taps=cls n_last=1``), every protocol that needs patch tokens or a network to train is skipped with its reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from sslcore.errors import ConfigError

PREFIX = "baseline:"
KINDS = ("raw-pixels",)
DEFAULT_INPUT = 224  # the protocols' crop for a checkpoint without a training resolution
# the protocols that read frozen features (the one token of a baseline); every other one needs more than that
FEATURE_PROTOCOLS = ("knn", "linear", "logreg", "cluster")
NO_PATCHES = "raw pixels have no patch tokens (one token: the image)"
NOT_APPLICABLE = {
    "davis": f"label propagation needs patch tokens; {NO_PATCHES}",
    "finetune": "fine-tuning needs a network with weights; raw pixels have none",
}


@dataclasses.dataclass(frozen=True)
class _Arch:
    img_size: int


@dataclasses.dataclass
class _Tokens:
    taps: dict[int, Tensor]


class RawPixels(nn.Module):
    """``forward_tokens(x (B, 3, H, W), taps) -> taps {-1: (B, 1, 3 * s * s)}``: the image as its only token."""

    def __init__(self, img_size: int, size: int | None = None) -> None:
        super().__init__()
        if img_size < 1 or (size is not None and not 1 <= size <= img_size):
            raise ValueError(f"raw pixels: size {size} must be in [1, img_size={img_size}]")
        self.arch = _Arch(img_size)
        self.size = size
        self.embed_dim = 3 * (size or img_size) ** 2
        self.blocks = nn.ModuleList([nn.Identity()])  # one "block": its output is the pixel token

    def forward_tokens(self, x: Tensor, *, taps: Iterable[int] = (-1,), **_: Any) -> _Tokens:
        if self.size is not None and self.size != x.shape[-1]:
            x = F.adaptive_avg_pool2d(x, self.size)
        token = x.flatten(1)[:, None, :]
        return _Tokens({int(i): token for i in taps})


def raw_pixels(img_size: int, size: int | None = None) -> Any:
    """A :class:`evaluate.checkpoints.LoadedBackbone`-shaped object for the raw-pixel baseline."""
    from evaluate.checkpoints.loader import KeyReport, LoadedBackbone

    side = size or img_size
    name = f"raw-pixels-{side}px"
    info = {
        "path": None,
        "name": name,
        "sha256": hashlib.sha256(f"sslbench raw pixels {img_size} -> {side}".encode()).hexdigest(),
        "format": "raw-pixels",
        "arch": {"img_size": img_size, "pixels": side},
        "which": None,
        "pos_interp": None,
    }
    return LoadedBackbone(RawPixels(img_size, size).eval(), info, KeyReport())


@dataclasses.dataclass(frozen=True)
class BaselineSpec:
    """A parsed pseudo-checkpoint (see the module docstring)."""

    kind: str
    side: int | None
    input_size: int

    @property
    def spec(self) -> str:
        """The canonical spec (what the job graph stores as the checkpoint's path)."""
        side = "" if self.side is None else f":{self.side}"
        return f"{PREFIX}{self.kind}{side}@{self.input_size}"

    @property
    def name(self) -> str:
        """The default row label: ``raw-pixels-<side>px``."""
        return f"{self.kind}-{self.side or self.input_size}px"


def is_baseline(path: object) -> bool:
    """Whether a checkpoint argument is a pseudo-checkpoint spec (``baseline:...``) rather than a file."""
    return str(path).startswith(PREFIX)


_SPEC = re.compile(r"^baseline:(?P<kind>[^:@]+)(?::(?P<side>[^@]*))?(?:@(?P<input>.*))?$")


def parse_baseline(text: str) -> BaselineSpec:
    """``baseline:raw-pixels[:SIDE][@INPUT]`` -> :class:`BaselineSpec`; anything else raises ConfigError naming it."""
    match = _SPEC.match(str(text))
    if match is None or match["kind"] not in KINDS:
        kind = match["kind"] if match else str(text)[len(PREFIX) :]
        raise ConfigError(
            f"{text}: unknown baseline {kind!r} (known: {', '.join(KINDS)}; form baseline:raw-pixels[:SIDE][@INPUT])"
        )

    def number(value: str | None, what: str) -> int | None:
        if value is None:
            return None
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"{text}: {what} {value!r} must be a positive integer")
        return int(value)

    side = number(match["side"], "SIDE")
    size = number(match["input"], "INPUT") or DEFAULT_INPUT
    if side is not None and side > size:
        raise ConfigError(f"{text}: SIDE {side} must not exceed the input size {size}")
    return BaselineSpec(match["kind"], side, size)


def load_baseline(text: str, name: str | None = None) -> Any:
    """The LoadedBackbone-shaped baseline of a spec (:func:`parse_baseline`), labelled ``name`` if given."""
    spec = parse_baseline(text)
    loaded = raw_pixels(spec.input_size, spec.side)
    loaded.info["path"] = spec.spec
    if name:
        loaded.info["name"] = name
    return loaded


def adapt_config(protocol: str, cfg: Any, subject: str | None = None) -> str | None:
    """Fit a protocol config to a baseline's one token, in place, or say why the protocol does not apply.

    Returns None when ``cfg`` runs (linear probing: its bank is set to ``taps=cls n_last=1``), else the reason
    (patch tokens, a network to train, feature taps other than the one token). ``subject`` says why there is only one
    feature when it is not a raw-pixel baseline (a CNN / MetaFormer checkpoint's pooled feature); every protocol
    beyond the frozen-feature ones is then ViT-only.
    """
    no_patches = subject or NO_PATCHES
    if protocol not in FEATURE_PROTOCOLS:
        if subject:
            return f"{protocol} needs a ViT (patch tokens); {subject}"
        return NOT_APPLICABLE.get(protocol, f"dense tasks need patch tokens; {NO_PATCHES}")
    if protocol == "linear":
        if cfg.variant != "dino":
            return f"linear variant {cfg.variant!r} averages patch tokens; {no_patches}"
        cfg.taps, cfg.n_last = "cls", 1
        return None
    taps, n_last = cfg.features.taps, cfg.features.n_last
    if taps != "cls" or n_last != 1:
        why = subject or "raw pixels are one token of one block"
        return f"features.taps={taps} n_last={n_last}: {why} (taps=cls, n_last=1)"
    return None
