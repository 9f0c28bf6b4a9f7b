"""Per-frame patch features of a video, computed once and cached on disk.

Features are the last block's patch tokens through the final norm (``SSLViT.forward_tokens(x).patch``, the
CLS token dropped), as DINO's ``get_intermediate_layers(n=1)``; the positional embedding is resampled to the frame's
grid by the model's own rule (``pos_interp="dino"`` reproduces DINO's ``interpolate_pos_encoding``). They are stored
un-normalised, float32, (T, N, D) with N = h * w row-major; the propagation normalises them.

Cache: ``$SSLBENCH_CACHE/davis_features/<key>.pt`` (default ``~/.cache/sslbench``), written atomically. The key
hashes everything that changes the numbers: the checkpoint's sha256 and role (teacher/student), the positional
rule, the sequence name and the sha256 of its frame files, the resize rule and the normalisation. Sweeping the
propagation settings (context frames, top-k, neighbourhood) therefore never recomputes features.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from evaluate.protocols.davis.data import Sequence, read_frame
from sslcore.errors import DataError
from sslcore.io import atomic_torch_save, count_images, sha256_json

logger = logging.getLogger("sslbench")
CACHE_VERSION = 1


def cache_root() -> Path:
    return Path(os.environ.get("SSLBENCH_CACHE") or Path.home() / ".cache" / "sslbench") / "davis_features"


def frames_digest(seq: Sequence) -> str:
    """sha256 over the names and bytes of a sequence's frame files."""
    digest = hashlib.sha256()
    for path in seq.frames:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def patch_size(model: torch.nn.Module) -> int:
    size = model.patch_embed.patch_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


@torch.inference_mode()
def extract(model: torch.nn.Module, frames: Tensor, batch_size: int = 8) -> Tensor:
    """Patch tokens of frames (T, 3, H, W) -> float32 (T, N, D) on the frames' device."""
    outs = [model.forward_tokens(frames[i : i + batch_size]).patch.float() for i in range(0, len(frames), batch_size)]
    count_images(len(frames))
    return torch.cat(outs)


def sequence_features(
    model: torch.nn.Module,
    seq: Sequence,
    *,
    short_side: int,
    normalize: str,
    device: torch.device | str,
    batch_size: int = 8,
    key_info: dict[str, Any] | None = None,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Features of one sequence, from the cache when possible.

    Returns:
        ``{"features": float32 (T, N, D) CPU tensor, "grid": (h, w), "patch": p, "size": (H', W') resized frame,
        "orig_size": (H, W)}``.
    """
    key = None
    if use_cache and key_info is not None:
        key = sha256_json(
            dict(
                key_info,
                version=CACHE_VERSION,
                sequence=seq.name,
                frames=frames_digest(seq),
                short_side=short_side,
                normalize=normalize,
            )
        )
        path = cache_root() / f"{key}.pt"
        if path.is_file():
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 (a corrupt cache file is recomputed, never fatal)
                logger.warning("ignoring unreadable feature cache %s (%s)", path, exc)
    p = patch_size(model)
    chunks, size, orig = [], None, None
    for start in range(0, len(seq.frames), batch_size):  # read and encode batch by batch (bounded memory)
        images, sizes = zip(*(read_frame(f, short_side, normalize) for f in seq.frames[start : start + batch_size]))
        size, orig = size or tuple(images[0].shape[-2:]), orig or sizes[0]
        if any(tuple(im.shape[-2:]) != size for im in images) or any(s != orig for s in sizes):
            raise DataError(f"{seq.name}: frames differ in size (frame {start}.. vs frame 0: {orig})")
        chunks.append(extract(model, torch.stack(images).to(device), batch_size).cpu())
    feats = torch.cat(chunks)
    grid = (size[0] // p, size[1] // p)
    if feats.shape[1] != grid[0] * grid[1]:
        raise DataError(f"{seq.name}: model returned {feats.shape[1]} patch tokens, expected {grid[0]}x{grid[1]}")
    out = {"features": feats, "grid": grid, "patch": p, "size": size, "orig_size": orig}
    if key is not None:
        atomic_torch_save(out, cache_root() / f"{key}.pt")
    return out


FeatureFn = Callable[[Sequence], dict[str, Any]]
