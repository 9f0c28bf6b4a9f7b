"""A plain ViT (:class:`pretrain.vit.SSLViT`) as a 4-level detection/segmentation backbone (BEiT/iBOT "simple FPN").

Forward: image (B, 3, H, W), zero-padded at the bottom/right to multiples of the patch size p when the data
preprocessor did not (:func:`pad_to_patch`; mmdet/mmseg pad each batch) -> tokens of the
tapped blocks (B, 1 + h*w, D), CLS dropped, reshaped to (B, D, h, w), optionally through the final LayerNorm, then
one adapter per level:

=====  ===========================================  ======  ===========================================
level  p = 16 (iBOT, BEiT)                          stride  p = 8
=====  ===========================================  ======  ===========================================
0      ConvT 2x2/2 -> BN -> GELU -> ConvT 2x2/2     4       ConvT 2x2/2
1      ConvT 2x2/2                                   8       identity
2      identity                                     16      MaxPool 2
3      MaxPool 2x2/2                                32      MaxPool 4
=====  ===========================================  ======  ===========================================

The positional table is resampled to every padded batch's grid from the *pretrained* grid by the checkpoint's own
rule (``pos_interp``: DINO's bicubic +0.1 or timm's). iBOT first resizes the table once to a fixed detection grid at
load time and re-interpolates that per batch; we resample once, from the source (documented in docs/dense.md).

Weights: ``checkpoint`` is a converted file ``{"state_dict": timm ViT keys, "meta": {"arch": ViTArch dict,
"pos_interp": ..., ...}}`` (tensors and plain values only, read with ``weights_only=True``). The architecture,
including the head count, always comes from ``meta.arch``; the state dict is loaded strictly. Without a checkpoint
(config checks, tests) the ViT is built from ``arch`` and randomly initialised.

``init_weights`` initialises the adapters only: mm runners call it after construction, and the ViT's own timm
``init_weights`` would otherwise wipe the loaded weights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pretrain.vit import ARCHS, SSLViT, ViTArch
from sslcore.errors import SSLBenchError

logger = logging.getLogger("sslbench")

IBOT_TAPS = (3, 5, 7, 11)


def default_taps(depth: int) -> list[int]:
    """iBOT's taps (blocks 3, 5, 7, 11 of 12) scaled to a ViT of ``depth`` blocks: round((i + 1) * depth / 12) - 1."""
    return [max(0, round((i + 1) * depth / 12) - 1) for i in IBOT_TAPS]


def pad_to_patch(images: Tensor, patch: int) -> Tensor:
    """Zero-pad (B, 3, H, W) at the bottom and right to multiples of ``patch`` (mmseg's ViT "corner" padding).

    The fallback for inputs the data preprocessor did not pad (slide-mode crops of images smaller than the crop);
    whole-image test configs pad exactly with ``data_preprocessor.test_cfg.size_divisor`` so that mmseg removes the
    padding from the logits before scoring.
    """
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % patch, -width % patch
    if pad_h or pad_w:
        images = torch.nn.functional.pad(images, (0, pad_w, 0, pad_h))
    return images


def read_converted(path: str | Path) -> dict[str, Any]:
    """Load and validate a converted backbone file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise SSLBenchError(f"{path}: converted checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise SSLBenchError(f"{path}: not a tensor-only torch file ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "arch" not in payload.get("meta", {}):
        raise SSLBenchError(
            f"{path}: expected keys 'state_dict' and 'meta.arch' (write it with `sslbench ckpt convert`)"
        )
    return payload


def _norm(norm_cfg: dict | None, channels: int) -> nn.Module:
    kind = (norm_cfg or {"type": "BN"}).get("type", "BN")
    if kind in ("SyncBN", "SyncBatchNorm"):
        return nn.SyncBatchNorm(channels)
    if kind in ("BN", "BN2d", "BatchNorm2d"):
        return nn.BatchNorm2d(channels)
    raise SSLBenchError(f"backbone norm_cfg.type: unsupported value {kind!r} (valid: BN, SyncBN)")


def simple_fpn(dim: int, patch_size: int, norm_cfg: dict | None = None) -> nn.ModuleList:
    """The four adapters of the table in the module docstring (strides 4, 8, 16, 32)."""

    def up4() -> nn.Sequential:
        return nn.Sequential(
            nn.ConvTranspose2d(dim, dim, 2, 2), _norm(norm_cfg, dim), nn.GELU(), nn.ConvTranspose2d(dim, dim, 2, 2)
        )

    if patch_size == 16:
        return nn.ModuleList([up4(), nn.ConvTranspose2d(dim, dim, 2, 2), nn.Identity(), nn.MaxPool2d(2, 2)])
    if patch_size == 8:
        return nn.ModuleList(
            [nn.ConvTranspose2d(dim, dim, 2, 2), nn.Identity(), nn.MaxPool2d(2, 2), nn.MaxPool2d(4, 4)]
        )
    raise SSLBenchError(f"simple-FPN adapter: patch size {patch_size} is not supported (valid: 8, 16)")


class SSLViTBackbone(nn.Module):
    """See the module docstring.

    Args:
        arch: a :data:`pretrain.vit.ARCHS` name or a ViTArch dict; used only without ``checkpoint``.
        checkpoint: converted backbone file (``meta.arch`` wins over ``arch``).
        out_indices: tapped blocks; None scales iBOT's (3, 5, 7, 11) to the depth (:func:`default_taps`).
        out_with_norm: apply the ViT's final LayerNorm to every tap (iBOT seg: True, det: False).
        with_fpn: build the 4-level adapter; False returns the stride-p maps as they are.
        drop_path_rate: stochastic depth of the ViT.
        with_cp: activation checkpointing of every block while training.
        frozen: freeze the ViT (the "linear" segmentation variant).
        pos_interp: override the checkpoint's resampling rule.
        norm_cfg: BN of the stride-4 adapter (``{"type": "SyncBN"}`` in the papers, ``BN`` on one process).
    """

    def __init__(
        self,
        arch: str | dict = "vit_small",
        checkpoint: str | None = None,
        out_indices: list[int] | tuple[int, ...] | None = None,
        out_with_norm: bool = False,
        with_fpn: bool = True,
        drop_path_rate: float = 0.0,
        with_cp: bool = False,
        frozen: bool = False,
        pos_interp: str | None = None,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__()
        state = None
        if checkpoint:
            payload = read_converted(checkpoint)
            vit_arch = ViTArch.from_dict(payload["meta"]["arch"])
            pos_interp = pos_interp or payload["meta"].get("pos_interp", "dino")
            state = payload["state_dict"]
        elif isinstance(arch, str):
            if arch not in ARCHS:
                raise SSLBenchError(f"backbone arch: unknown value {arch!r} (valid: {', '.join(ARCHS)})")
            vit_arch = ARCHS[arch]
        else:
            vit_arch = ViTArch.from_dict(dict(arch))
        self.vit = SSLViT(vit_arch, pos_interp=pos_interp or "dino", drop_path_rate=drop_path_rate)
        if state is not None:
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
            result = self.vit.load_state_dict(state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise SSLBenchError(
                    f"{checkpoint}: backbone weights do not match meta.arch (missing: {result.missing_keys[:5]}, "
                    f"unexpected: {result.unexpected_keys[:5]})"
                )
            logger.info("loaded %d ViT tensors from %s (arch %s)", len(state), checkpoint, vit_arch)
        depth = vit_arch.depth
        self.out_indices = list(out_indices) if out_indices is not None else default_taps(depth)
        bad = [i for i in self.out_indices if not 0 <= i < depth]
        if bad:
            raise SSLBenchError(f"backbone out_indices: {bad} outside 0..{depth - 1}")
        self.out_with_norm = out_with_norm
        self.with_cp = with_cp
        self.frozen = frozen
        self.patch_size = vit_arch.patch_size
        self.fpn = simple_fpn(vit_arch.embed_dim, vit_arch.patch_size, norm_cfg) if with_fpn else None
        if self.fpn is not None and len(self.out_indices) != 4:
            raise SSLBenchError(f"backbone out_indices: the simple-FPN adapter needs 4 taps, got {self.out_indices}")
        if frozen:
            self.vit.requires_grad_(False)

    def init_weights(self) -> None:
        """Re-initialise the adapters with PyTorch's defaults (as iBOT leaves them); never touch the loaded ViT."""
        if self.fpn is None:
            return
        for module in self.fpn.modules():
            if isinstance(module, (nn.ConvTranspose2d, nn.BatchNorm2d, nn.SyncBatchNorm)):
                module.reset_parameters()

    def train(self, mode: bool = True) -> SSLViTBackbone:
        super().train(mode)
        if self.frozen:
            self.vit.eval()
        return self

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        p = self.patch_size
        images = pad_to_patch(images, p)
        batch, _, height, width = images.shape
        gh, gw = height // p, width // p
        self.vit.grad_checkpointing = self.with_cp and self.training  # forward_tokens checkpoints each block
        feats = self.vit.forward_tokens(images, taps=self.out_indices, tap_norm=self.out_with_norm).taps
        outs = []
        for level, i in enumerate(self.out_indices):
            fmap = feats[i % len(self.vit.blocks)][:, self.vit.num_prefix_tokens :]
            fmap = fmap.transpose(1, 2).reshape(batch, -1, gh, gw)
            outs.append(self.fpn[level](fmap) if self.fpn is not None else fmap)
        return tuple(outs)
