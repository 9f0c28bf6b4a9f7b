"""The ViT every part of sslbench uses: a timm ``VisionTransformer`` plus the two things SSL code needs.

1. **Positional-embedding resampling by rule.** The DINO-family code (DINO, iBOT, SERE, BAM, and their DAVIS /
   dense evaluations) resamples at run time with ``F.interpolate(mode="bicubic", scale_factor=((h + 0.1) / sqrt(N),
   (w + 0.1) / sqrt(N)))`` and no antialiasing; timm resamples by target size with antialiasing. The two give
   numerically different features, so :class:`SSLViT` offers both (``pos_interp="dino"`` or ``"timm"``); every
   result records which one was used.
2. **One token path** (:meth:`SSLViT.forward_tokens` -> :class:`TokenOutput`) that training and every evaluation
   use: normalised CLS and patch tokens, the last block's patch tokens before the final norm (SERE), a learned mask
   token for masked crops (iBOT), appended tokens that attend to the image but are never attended to (ADCLR's
   unidirectional cross-attention, :func:`query_block`), taps of chosen blocks (k-NN/linear features, dense FPN
   inputs) and the last block's attention (ContrastiveCrop, figures). :meth:`SSLViT.forward_crops`
   runs a list of crops of several sizes (DINOv2's ``forward_features_list``).

The model's ``state_dict`` keys are timm's (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.{i}.*``,
``norm.*``), so any timm tool loads it. :class:`ViTArch` describes an architecture and travels with every exported
backbone (:func:`export_backbone`).

Tensor layouts: images (B, 3, H, W); tokens (B, 1 + h*w, D) with the CLS token first; patch tokens (B, h*w, D) in
row-major order (index y * w + x); masks (B, h, w) bool; attention (B, heads, 1 + h*w, 1 + h*w); h = H // patch,
w = W // patch. The mask token exists only on models built with ``mask_token=True`` and is never exported.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

PosInterp = Literal["dino", "timm"]
ExtraAttn = Literal["oneway", "raw", "patches", "all", "bidirectional"]
EXTRA_ATTN_RULES: tuple[str, ...] = ("oneway", "raw", "patches", "all", "bidirectional")
EXPORT_FORMAT = "sslbench-backbone"
EXPORT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ViTArch:
    """Architecture of a plain ViT with a CLS token and an absolute positional embedding.

    ``img_size`` is the training resolution: it fixes the stored positional grid (img_size / patch_size)^2.
    ``pos_embed="sincos"`` marks a fixed 2-D sin-cos table (BAM, MoCo v3); it is stored in the state dict either way.
    """

    patch_size: int = 16
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    img_size: int = 224
    pos_embed: Literal["learned", "sincos"] = "learned"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTArch:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown ViT architecture key {unknown[0]!r} (valid: {', '.join(sorted(names))})")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ARCHS: dict[str, ViTArch] = {
    "vit_tiny": ViTArch(embed_dim=192, num_heads=3),
    "vit_small": ViTArch(embed_dim=384, num_heads=6),
    "vit_small_12h": ViTArch(embed_dim=384, num_heads=12),  # BAM's ViT-S/16 uses 12 heads of width 32
    "vit_base": ViTArch(embed_dim=768, num_heads=12),
    "vit_large": ViTArch(embed_dim=1024, depth=24, num_heads=16),
    # tiny models for CPU runs (demo and tests)
    "vit_pico": ViTArch(patch_size=8, embed_dim=64, depth=4, num_heads=4, img_size=64),
    "vit_femto": ViTArch(patch_size=8, embed_dim=32, depth=2, num_heads=2, img_size=32),
}


@dataclasses.dataclass
class TokenOutput:
    """What one pass of :meth:`SSLViT.forward_tokens` gives, for B images on an (h, w) patch grid.

    cls (B, D) and patch (B, h*w, D): last block through the final norm; prenorm_patch (B, h*w, D): last block
    before the final norm; extra (B, Q, D) normed appended tokens or None; taps {block index: (B, 1 + h*w, D)};
    attn (B, heads, 1 + h*w, 1 + h*w) of the last block or None; extra_attn (B, heads, Q, 1 + h*w + Q): the last
    block's attention of the appended tokens over [image tokens, appended tokens] (zero where the rule forbids), or
    None.
    """

    cls: Tensor
    patch: Tensor
    prenorm_patch: Tensor
    extra: Tensor | None
    grid: tuple[int, int]
    taps: dict[int, Tensor] = dataclasses.field(default_factory=dict)
    attn: Tensor | None = None
    extra_attn: Tensor | None = None

    def patch_map(self, prenorm: bool = False) -> Tensor:
        """Patch tokens as a (B, D, h, w) map."""
        tokens = self.prenorm_patch if prenorm else self.patch
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *self.grid)

    def split(self, parts: int) -> list[TokenOutput]:
        """Cut the batch into ``parts`` equal chunks (one per crop of a grouped call)."""

        def cut(t: Tensor | None) -> list[Tensor | None]:
            return [None] * parts if t is None else list(t.chunk(parts))

        fields = [
            cut(self.cls),
            cut(self.patch),
            cut(self.prenorm_patch),
            cut(self.extra),
            cut(self.attn),
            cut(self.extra_attn),
        ]
        taps = {i: cut(t) for i, t in self.taps.items()}
        return [
            TokenOutput(c, p, q, e, self.grid, {i: t[j] for i, t in taps.items()}, a, ea)
            for j, (c, p, q, e, a, ea) in enumerate(zip(*fields))
        ]


def dino_resample(pos_embed: Tensor, grid: tuple[int, int], num_prefix: int = 1) -> Tensor:
    """Resample a (1, prefix + N, D) table to a (gh, gw) grid the way DINO's ``interpolate_pos_encoding`` does.

    The stored grid must be square (N = n^2). Bicubic, ``align_corners=False``, no antialias, scale factors
    ((gh + 0.1) / n, (gw + 0.1) / n) so that flooring the output size gives exactly (gh, gw).
    """
    prefix, patch = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    n = int(math.isqrt(patch.shape[1]))
    if n * n != patch.shape[1]:
        raise ValueError(f"DINO-style resampling needs a square positional grid, got {patch.shape[1]} positions")
    gh, gw = grid
    if (gh, gw) == (n, n):
        return pos_embed
    dim = patch.shape[-1]
    table = patch.reshape(1, n, n, dim).permute(0, 3, 1, 2)
    table = F.interpolate(
        table.float(), scale_factor=((gh + 0.1) / n, (gw + 0.1) / n), mode="bicubic", align_corners=False
    ).to(pos_embed.dtype)
    if table.shape[-2:] != (gh, gw):
        raise RuntimeError(f"DINO resampling produced {tuple(table.shape[-2:])}, expected {(gh, gw)}")
    return torch.cat([prefix, table.permute(0, 2, 3, 1).reshape(1, gh * gw, dim)], dim=1)


class SSLViT(VisionTransformer):
    """timm ViT with rule-selectable positional resampling and SSL taps (see the module docstring)."""

    def __init__(
        self, arch: ViTArch, pos_interp: PosInterp = "dino", drop_path_rate: float = 0.0, mask_token: bool = False
    ) -> None:
        super().__init__(
            img_size=arch.img_size,
            patch_size=arch.patch_size,
            embed_dim=arch.embed_dim,
            depth=arch.depth,
            num_heads=arch.num_heads,
            mlp_ratio=arch.mlp_ratio,
            qkv_bias=arch.qkv_bias,
            norm_layer=functools.partial(torch.nn.LayerNorm, eps=arch.norm_eps),
            num_classes=0,
            global_pool="token",
            dynamic_img_size=True,
            drop_path_rate=drop_path_rate,
        )
        if pos_interp not in ("dino", "timm"):
            raise ValueError(f"pos_interp must be 'dino' or 'timm', got {pos_interp!r}")
        self.arch = arch
        self.pos_interp: PosInterp = pos_interp
        # iBOT's masked_embed: zeros, one (1, D) vector (a 2-D parameter, so AdamW decays it as iBOT does)
        self.mask_token = nn.Parameter(torch.zeros(1, arch.embed_dim)) if mask_token else None

    def _pos_embed(self, x: Tensor) -> Tensor:
        # x: (B, gh, gw, D) because dynamic_img_size=True
        batch, gh, gw, dim = x.shape
        if self.pos_interp == "dino":
            pos = dino_resample(self.pos_embed, (gh, gw), self.num_prefix_tokens)
        else:
            pos = resample_abs_pos_embed(
                self.pos_embed,
                new_size=(gh, gw),
                old_size=self.patch_embed.grid_size,
                num_prefix_tokens=self.num_prefix_tokens,
            )
        x = torch.cat([self.cls_token.expand(batch, -1, -1), x.reshape(batch, gh * gw, dim)], dim=1)
        return self.pos_drop(x + pos)

    def embed(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Patch embedding, mask token, CLS and positions: (B, 3, H, W) -> (B, 1 + h*w, D).

        ``mask`` (B, h, w) bool replaces the masked patch embeddings by the learned ``mask_token`` *before* the
        positions are added (iBOT's ``masked_embed``; BEiT and DINOv2 do the same).
        """
        x = self.patch_embed(x)  # (B, h, w, D): dynamic_img_size keeps the grid
        if mask is not None:
            if self.mask_token is None:
                raise ValueError("this SSLViT has no mask token (build it with mask_token=True)")
            if mask.shape != x.shape[:3]:
                raise ValueError(f"mask {tuple(mask.shape)} does not match the patch grid {tuple(x.shape[:3])}")
            x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        return self.norm_pre(self.patch_drop(self._pos_embed(x)))

    def embed_queries(self, crops: Tensor) -> Tensor:
        """ADCLR's query tokens: (B, Q, 3, P, P) crops, each one patch, -> (B, Q, D) through the shared patch
        embedding, with no positional embedding and no CLS (paper §3.2, Eq. 3)."""
        if crops.ndim != 5 or tuple(crops.shape[-2:]) != tuple(self.patch_embed.patch_size):
            raise ValueError(
                f"query crops must be (B, Q, 3, {self.patch_embed.patch_size[0]}, {self.patch_embed.patch_size[1]}), "
                f"got {tuple(crops.shape)}"
            )
        batch, q = crops.shape[:2]
        tokens = self.patch_embed(crops.flatten(0, 1))  # (B * Q, 1, 1, D)
        return self.norm_pre(tokens.reshape(batch, q, -1))

    def forward_tokens(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        extra: Tensor | None = None,
        extra_attn: ExtraAttn = "oneway",
        taps: Sequence[int] = (),
        tap_norm: bool = True,
        attn: bool = False,
    ) -> TokenOutput:
        """The one token path of the model, used by pretraining and by every evaluation (see :class:`TokenOutput`).

        Args:
            x: images (B, 3, H, W), H and W multiples of the patch size.
            mask: (B, h, w) bool, True = replace that patch by the mask token (iBOT).
            extra: (B, Q, D) tokens appended after the positions are added (they get no position). ``extra_attn``
                picks the rule of :func:`extra_attention_mask`. Except under ``"bidirectional"`` no image token
                attends to an extra token and the image tokens run through exactly the operations of the model
                without extras (:func:`query_block`), so CLS and patch outputs are bit-identical to it.
            taps: block indices (negative counts from the end) whose outputs are returned in ``TokenOutput.taps``,
                each (B, 1 + h*w, D), through the final norm when ``tap_norm`` (as DINO's
                ``get_intermediate_layers``), image tokens only.
            attn: also return the last block's softmax attention over the image tokens, (B, heads, 1+h*w, 1+h*w),
                and with ``extra`` that of the extra tokens (``TokenOutput.extra_attn``).
        """
        depth = len(self.blocks)
        wanted = {t % depth for t in taps}
        if any(not -depth <= t < depth for t in taps):
            raise ValueError(f"taps {list(taps)} out of range for {depth} blocks")
        grid = (x.shape[-2] // self.patch_embed.patch_size[0], x.shape[-1] // self.patch_embed.patch_size[1])
        tokens = self.embed(x, mask)
        n_img = tokens.shape[1]
        allowed = None
        queries = None
        if extra is not None:
            if extra.ndim != 3 or extra.shape[0] != tokens.shape[0] or extra.shape[2] != tokens.shape[2]:
                raise ValueError(f"extra tokens must be (B, Q, {tokens.shape[2]}), got {tuple(extra.shape)}")
            allowed = extra_attention_mask(n_img, extra.shape[1], extra_attn, tokens.device)
            if extra_attn == "bidirectional":  # one joint sequence, no mask (the paper's Fig. 2(c) ablation)
                tokens = torch.cat([tokens, extra.to(tokens.dtype)], dim=1)
            else:
                queries = extra.to(tokens.dtype)
        checkpointing = self.grad_checkpointing and not torch.jit.is_scripting()
        tapped: dict[int, Tensor] = {}
        last_attn = last_extra_attn = None
        for i, block in enumerate(self.blocks):
            if attn and i == depth - 1:
                if extra is None:
                    last_attn = _block_attention(block, tokens)
                else:
                    joint = tokens if queries is None else torch.cat([tokens, queries], dim=1)
                    full = _block_attention(block, joint, allowed)
                    # image rows: over image keys (under "bidirectional" the rest of their mass is on the queries)
                    last_attn, last_extra_attn = full[:, :, :n_img, :n_img], full[:, :, n_img:]
            if queries is not None:
                if checkpointing and (tokens.requires_grad or queries.requires_grad):
                    tokens, queries = torch.utils.checkpoint.checkpoint(
                        query_block, block, tokens, queries, allowed[n_img:], use_reentrant=False
                    )
                else:
                    tokens, queries = query_block(block, tokens, queries, allowed[n_img:])
            elif checkpointing and tokens.requires_grad:
                tokens = torch.utils.checkpoint.checkpoint(block, tokens, use_reentrant=False)
            else:
                tokens = block(tokens)
            if i in wanted:
                tapped[i] = self.norm(tokens[:, :n_img]) if tap_norm else tokens[:, :n_img]
        prenorm = tokens[:, :n_img]
        normed = self.norm(prenorm)
        extra_out = None
        if extra is not None:
            extra_out = self.norm(queries) if queries is not None else self.norm(tokens[:, n_img:])
        return TokenOutput(
            cls=normed[:, 0],
            patch=normed[:, self.num_prefix_tokens :],
            prenorm_patch=prenorm[:, self.num_prefix_tokens :],
            extra=extra_out,
            grid=grid,
            taps=tapped,
            attn=last_attn,
            extra_attn=last_extra_attn,
        )

    def forward_crops(
        self,
        crops: Sequence[Tensor],
        masks: Sequence[Tensor | None] | None = None,
        extras: Sequence[Tensor | None] | None = None,
        extra_attn: ExtraAttn = "oneway",
    ) -> list[TokenOutput]:
        """:meth:`forward_tokens` of several crops, one :class:`TokenOutput` per crop, in order.

        Consecutive crops of the same size (and the same kind of mask/extra) run as one batch, as DINO's
        ``MultiCropWrapper`` and DINOv2's ``forward_features_list`` do: the two 224 px views in one call, the ten
        96 px views in another. Batch statistics never enter a ViT, so grouping changes no number.
        """
        n = len(crops)
        masks = list(masks) if masks is not None else [None] * n
        extras = list(extras) if extras is not None else [None] * n
        if len(masks) != n or len(extras) != n:
            raise ValueError(f"{n} crops but {len(masks)} masks and {len(extras)} extras")

        def key(i: int) -> tuple:
            return (tuple(crops[i].shape[1:]), masks[i] is None, None if extras[i] is None else extras[i].shape[1])

        outs: list[TokenOutput] = []
        start = 0
        while start < n:
            end = start + 1
            while end < n and key(end) == key(start):
                end += 1
            group = range(start, end)
            out = self.forward_tokens(
                torch.cat([crops[i] for i in group]),
                mask=None if masks[start] is None else torch.cat([masks[i] for i in group]),
                extra=None if extras[start] is None else torch.cat([extras[i] for i in group]),
                extra_attn=extra_attn,
            )
            outs.extend(out.split(end - start))
            start = end
        return outs


def extra_attention_mask(n_img: int, n_extra: int, rule: ExtraAttn, device: torch.device | None = None) -> Tensor:
    """(N, N) bool, True = query row may attend to key column, N = n_img + n_extra (image tokens first, CLS at 0).

    Image rows see image tokens only (all rules but ``"bidirectional"``). Extra token i sees:

    * ``"oneway"``: every image token and itself: {RP, QP_i} -> QP_i, QP_i -/-> QP_j (ADCLR paper §1 and the rule
      stated after Eq. 5; the default);
    * ``"raw"``: the image tokens (CLS and patches) only, not itself (ADCLR Eq. 5 read literally);
    * ``"patches"``: the patch tokens only, not CLS nor itself (ADCLR's appendix pseudo-code);
    * ``"all"``: every image token and every extra token (the released PQCL code);
    * ``"bidirectional"``: everything, and image tokens see the extra tokens too (plain self-attention over the
      joint sequence: the paper's Fig. 2(c) ablation, which it reports as harmful).
    """
    if rule not in EXTRA_ATTN_RULES:
        raise ValueError(f"extra_attn must be one of {', '.join(EXTRA_ATTN_RULES)}, got {rule!r}")
    n = n_img + n_extra
    allowed = torch.zeros(n, n, dtype=torch.bool, device=device)
    allowed[:, :n_img] = True
    if rule == "patches":
        allowed[n_img:, 0] = False
    if rule in ("all", "bidirectional"):
        allowed[n_img:, n_img:] = True
    if rule == "bidirectional":
        allowed[:n_img, n_img:] = True
    if rule == "oneway":
        idx = torch.arange(n_img, n, device=device)
        allowed[idx, idx] = True
    return allowed


def _heads(attn: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """timm ``Attention``'s q, k, v of tokens ``x`` (B, N, D): each (B, heads, N, head_dim)."""
    batch, n, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def _attend(attn: nn.Module, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """timm ``Attention.forward`` from q/k/v on: softmax(q k^T) v (fused or not, as the module), merge heads, norm,
    proj, dropout: (B, heads, M, hd) -> (B, M, D)."""
    if attn.fused_attn:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=attn.attn_drop.p if attn.training else 0.0
        )
    else:
        scores = (q * attn.scale) @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        out = attn.attn_drop(scores.softmax(dim=-1)) @ v
    batch, _, m, _ = q.shape
    out = attn.norm(out.transpose(1, 2).reshape(batch, m, attn.attn_dim))
    return attn.proj_drop(attn.proj(out))


def query_block(block: nn.Module, x: Tensor, queries: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
    """One timm ``Block`` on image tokens ``x`` (B, N, D) and appended tokens ``queries`` (B, Q, D) that read from
    the image but are never read by it (the unidirectional cross-attention of ADCLR, its appendix code's two-stream
    form). ``allowed`` (Q, N + Q) bool: which of [image, queries] each query sees (rows of
    :func:`extra_attention_mask`).

    The image stream goes through exactly the operations (same modules, same tensor shapes) of ``block(x)``, so its
    output is bit-identical to the model without queries; the query stream shares every weight. Stochastic depth
    draws one keep/drop per image for both streams (the joint-sequence semantics), with the same random numbers
    ``block(x)`` would draw.
    """
    if getattr(block.attn, "gate", None) is not None:
        raise ValueError("query tokens need a timm Attention without a gate")
    n = x.shape[1]
    attn = block.attn
    q_i, k_i, v_i = _heads(attn, block.norm1(x))
    q_q, k_q, v_q = _heads(attn, block.norm1(queries))
    out_i = _attend(attn, q_i, k_i, v_i, None)
    out_q = _attend(attn, q_q, torch.cat([k_i, k_q], dim=2), torch.cat([v_i, v_q], dim=2), allowed)
    delta = block.drop_path1(block.ls1(torch.cat([out_i, out_q], dim=1)))
    x, queries = x + delta[:, :n], queries + delta[:, n:]
    delta = block.drop_path2(block.ls2(torch.cat([block.mlp(block.norm2(x)), block.mlp(block.norm2(queries))], dim=1)))
    return x + delta[:, :n], queries + delta[:, n:]


def _block_attention(block: nn.Module, x: Tensor, allowed: Tensor | None = None) -> Tensor:
    """Softmax attention probabilities of a timm ``Block`` on tokens ``x`` (B, N, D): (B, heads, N, N); ``allowed``
    (N, N) bool restricts each row (forbidden entries get probability 0)."""
    q, k, _ = _heads(block.attn, block.norm1(x))
    scores = (q * block.attn.scale) @ k.transpose(-2, -1)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1)


def build_vit(arch: ViTArch | str, pos_interp: PosInterp = "dino", drop_path_rate: float = 0.0) -> SSLViT:
    """Build an :class:`SSLViT` from a :class:`ViTArch` or a name in :data:`ARCHS`."""
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r} (valid: {', '.join(ARCHS)})")
        arch = ARCHS[arch]
    return SSLViT(arch, pos_interp=pos_interp, drop_path_rate=drop_path_rate)


def export_backbone(model: SSLViT, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The exported-backbone payload: tensors and plain values only (loads with ``torch.load(weights_only=True)``).

    Layout: ``{"format": "sslbench-backbone", "version": 1, "arch": ViTArch dict, "pos_interp": str,
    "state_dict": timm keys -> tensors, "meta": {...}}``.
    """
    state = {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if not k.startswith("head.") and k != "mask_token"
    }
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "arch": model.arch.to_dict(),
        "pos_interp": model.pos_interp,
        "state_dict": state,
        "meta": dict(meta or {}),
    }
