"""One frozen-feature extractor for every protocol: taps, per-protocol transforms, disk cache, multi-process runs.

**Taps** (tokens from :meth:`pretrain.vit.SSLViT.tokens`, every tapped block through the final norm, as DINO, iBOT and
DINOv2 do):

* ``cls``: the CLS tokens of the last ``n_last`` blocks concatenated, oldest first -> (B, n_last * D);
* ``mean_patch``: the mean of the last block's patch tokens -> (B, D);
* ``cls+mean_patch``: ``cat(CLS_{L-n+1}, ..., CLS_L, mean_patch_L)`` -> (B, (n_last + 1) * D), the iBOT/DINOv2 order.

CNN/MetaFormer backbones (:mod:`pretrain.pooled`: ResNet, CAFormer) have one feature, the pooled output (ResNet-50:
the 2048-d global average pool; CAFormer: pool + LayerNorm), which they give as the CLS tap of their only "block":
``taps=cls n_last=1`` is the only valid setting for them.
  ``interleave=True`` gives DINO v1's order instead (it stacks [CLS, mean] on a new last axis and flattens:
  c0, a0, c1, a1, ...); only defined for ``n_last=1`` and only needed to load DINO's released ViT-B linear heads.

**Transforms** (:func:`eval_transform`): Resize(shorter side ``resize``, bicubic) + CenterCrop(``crop``) + ImageNet
normalisation. The crop defaults to the model's training resolution and the resize to ``round(crop * ratio)``:
ratio 256/224 for k-NN, linear probing and clustering (224 -> 256, 64 -> 73), 1.0 for the DINOv2-style and the
transfer logistic regression (short side = crop, bicubic). Both are settable.

**Cache**: ``$SSLBENCH_CACHE/features/<key>.pt``; the key hashes the checkpoint's sha256 (or, for an in-memory model,
the hash of its state dict), the teacher/student choice, the dataset fingerprint, the transform, the taps, the
positional interpolation and the precision. Files are written atomically; a rerun with the same key reads the file.

**Several processes** (``torchrun``): rank r takes images r, r + W, r + 2W, ...; the shards are gathered
(``all_gather``, padded to equal length) and put back in dataset order, so every rank gets the same (N, F) matrix as a
single process. On CUDA the forward runs under bf16 autocast (fp16 where bf16 is unsupported); features are float32.

Layouts: images (B, 3, H, W); features (N, F) float32; labels (N,) int64, in the order of the dataset's samples.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from evaluate.datasets import LabeledImages, fingerprint
from sslcore.config import NON_NEGATIVE, POSITIVE, POSITIVE_OR_NONE, validate
from sslcore.device import parse_device
from sslcore.errors import DataError, SSLBenchError
from sslcore.io import atomic_torch_save, count_images, count_skipped, sha256_json

logger = logging.getLogger("sslbench")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TAPS = ("cls", "mean_patch", "cls+mean_patch")
CLASSIFICATION_RATIO = 256 / 224
CACHE_VERSION = 1


@dataclasses.dataclass
class FeatureConfig:
    """How features are computed (taps, transform) and where (device, batch, workers, precision, cache)."""

    taps: Literal["cls", "mean_patch", "cls+mean_patch"] = "cls"
    n_last: int = 1
    interleave: bool = False
    crop: int | None = None  # None: the model's training resolution (arch.img_size)
    resize: int | None = None  # None: round(crop * resize_ratio)
    resize_ratio: float = CLASSIFICATION_RATIO
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    batch_size: int = 128
    num_workers: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 autocast on CUDA, fp32 on CPU
    cache: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "n_last": POSITIVE,
                "crop": POSITIVE_OR_NONE,
                "resize": POSITIVE_OR_NONE,
                "resize_ratio": POSITIVE,
                "batch_size": POSITIVE,
                "num_workers": NON_NEGATIVE,
            },
        )
        parse_device(self.device, "features.device", available=False)


def resolve_sizes(cfg: FeatureConfig, model: Any) -> tuple[int, int]:
    """(resize, crop) in pixels; see the module docstring for the defaults."""
    crop = cfg.crop or int(getattr(getattr(model, "arch", None), "img_size", 0) or 224)
    resize = cfg.resize or int(round(crop * cfg.resize_ratio))
    if resize < crop:
        raise SSLBenchError(f"features.resize={resize} is smaller than features.crop={crop}")
    return resize, crop


def eval_transform(resize: int, crop: int, interpolation: str = "bicubic") -> Any:
    """Resize(shorter side) + CenterCrop + ToTensor + ImageNet normalisation."""
    from torchvision import transforms as T

    mode = T.InterpolationMode.BICUBIC if interpolation == "bicubic" else T.InterpolationMode.BILINEAR
    return T.Compose(
        [
            T.Resize(resize, interpolation=mode),
            T.CenterCrop(crop),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def check_taps(taps: str, n_last: int, interleave: bool, depth: int | None = None, pooled: bool = False) -> None:
    """Valid taps for a model of ``depth`` blocks; ``pooled``: a CNN/MetaFormer (:mod:`pretrain.pooled`), whose one
    feature is its pooled output (the CLS tap of one block)."""
    if pooled and (taps != "cls" or n_last != 1 or interleave):
        raise SSLBenchError(
            f"features.taps={taps} n_last={n_last}: a CNN/MetaFormer backbone has one pooled feature "
            "(features.taps=cls features.n_last=1)"
        )
    if taps not in TAPS:
        raise SSLBenchError(f"features.taps={taps!r}: expected one of {', '.join(TAPS)}")
    if n_last < 1 or (depth is not None and n_last > depth):
        raise SSLBenchError(f"features.n_last={n_last}: must be in 1..{depth or 'depth'}")
    if interleave and (taps != "cls+mean_patch" or n_last != 1):
        raise SSLBenchError("features.interleave=true needs taps=cls+mean_patch and n_last=1 (DINO v1 ViT-B order)")


def tap_features(model: Any, images: Tensor, taps: str = "cls", n_last: int = 1, interleave: bool = False) -> Tensor:
    """Features (B, F) of a batch of images (B, 3, H, W); see the module docstring for the taps."""
    n = 1 if taps == "mean_patch" else n_last
    out = model.forward_tokens(images, taps=range(-n, 0))
    blocks = [out.taps[i] for i in sorted(out.taps)]
    if taps == "mean_patch":
        return blocks[-1][:, 1:].mean(dim=1)
    cls = [tokens[:, 0] for tokens in blocks]
    if taps == "cls":
        return torch.cat(cls, dim=-1)
    mean = blocks[-1][:, 1:].mean(dim=1)
    if interleave:
        return torch.stack([cls[-1], mean], dim=-1).flatten(1)
    return torch.cat([*cls, mean], dim=-1)


def resolve_precision(device: torch.device, precision: str) -> str:
    """ "auto" -> bf16 on CUDA where supported, else fp16 on CUDA, fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast (see :func:`resolve_precision`); nothing for fp32."""
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def extract_features(model: Any, images: LabeledImages, transform: Any, cfg: FeatureConfig) -> tuple[Tensor, Tensor]:
    """Features (N, F) float32 and labels (N,) of every image, in dataset order, on the CPU.

    Under ``torch.distributed`` each rank computes a strided shard and the result is gathered on every rank.
    """
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    pooled = bool(getattr(model, "pooled_features", False))
    check_taps(cfg.taps, cfg.n_last, cfg.interleave, len(getattr(model, "blocks", [])) or None, pooled)
    device = parse_device(cfg.device, "features.device")
    rank, world = _world()
    indices = list(range(rank, len(images), world))
    loader = DataLoader(
        Subset(images.dataset(transform), indices),
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
    model = model.eval().to(device)
    chunks = []
    label = f"{images.name} {images.split}" if images.name else images.root.name
    bar = tqdm(loader, desc=f"features {label}", disable=not cfg.progress or rank != 0, leave=False)
    count_skipped(images.skipped)
    for batch, _ in _reraise_worker_errors(bar):
        with autocast_context(device, cfg.precision):
            feats = tap_features(model, batch.to(device, non_blocking=True), cfg.taps, cfg.n_last, cfg.interleave)
        chunks.append(feats.float())
        count_images(len(batch))
    dim = chunks[0].shape[1] if chunks else 0
    local = torch.cat(chunks) if chunks else torch.zeros(0, dim, device=device)
    if world > 1:
        local = gather_strided(local, len(images), rank, world)
    labels = torch.tensor(images.labels, dtype=torch.long)
    return local.cpu(), labels


def _reraise_worker_errors(batches: Any) -> Any:
    """Yield from a DataLoader; a DataError raised in a worker process comes back as one line (not the worker's
    traceback text that torch packs into the message)."""
    try:
        yield from batches
    except DataError as exc:
        last = str(exc).strip().splitlines()[-1]
        raise DataError(last.split("DataError: ", 1)[-1]) from None


def gather_strided(local: Tensor, total: int, rank: int, world: int) -> Tensor:
    """Inverse of the strided sharding: rank r holds rows r, r + W, ...; returns all rows in order on every rank."""
    width = torch.tensor([local.shape[1]], device=local.device)
    dist.all_reduce(width, op=dist.ReduceOp.MAX)  # a rank with no rows still learns the feature size
    per_rank = -(-total // world)
    padded = torch.zeros(per_rank, int(width.item()), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    out = torch.empty(total, padded.shape[1], dtype=local.dtype, device=local.device)
    for r, shard in enumerate(gathered):
        count = len(range(r, total, world))
        out[r::world] = shard[:count]
    return out


def model_sha256(model: torch.nn.Module) -> str:
    """A content hash of a model's state dict (keys, shapes, dtypes and values), for models not read from a file."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}|{tuple(tensor.shape)}|{tensor.dtype}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def cache_root() -> Path:
    return Path(os.environ.get("SSLBENCH_CACHE") or Path.home() / ".cache" / "sslbench") / "features"


@dataclasses.dataclass
class FeatureSet:
    """Features (N, F) float32, labels (N,) int64, the cache key material, and whether they came from the cache."""

    features: Tensor
    labels: Tensor
    key: dict[str, Any]
    from_cache: bool = False


def feature_key(info: dict[str, Any], images: LabeledImages, cfg: FeatureConfig, sizes: tuple[int, int]) -> dict:
    """Everything the features depend on (the cache key material)."""
    return {
        "version": CACHE_VERSION,
        "checkpoint_sha256": info.get("sha256"),
        "which": info.get("which"),
        "pos_interp": info.get("pos_interp"),
        "dataset": fingerprint(images),
        "transform": {"resize": sizes[0], "crop": sizes[1], "interpolation": cfg.interpolation},
        "taps": {"taps": cfg.taps, "n_last": cfg.n_last, "interleave": cfg.interleave},
        "precision": resolve_precision(parse_device(cfg.device, "features.device"), cfg.precision),
    }


def get_features(model: Any, info: dict[str, Any], images: LabeledImages, cfg: FeatureConfig) -> FeatureSet:
    """Features of ``images`` by :func:`extract_features`, read from / written to the disk cache when enabled.

    ``info`` is the checkpoint info (:func:`evaluate.checkpoints.load_backbone`); without a ``sha256`` the model's
    state dict is hashed instead.
    """
    sizes = resolve_sizes(cfg, model)
    if not info.get("sha256"):
        info = {**info, "sha256": model_sha256(model)}
    key = feature_key(info, images, cfg, sizes)
    path = cache_root() / f"{sha256_json(key)}.pt"
    if cfg.cache and path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged cache file is recomputed, never trusted
            logger.warning("feature cache %s unreadable (%s); recomputing", path, type(exc).__name__)
        else:
            if payload.get("key") == key:
                logger.info("features of %s read from cache %s", images.root, path.name)
                return FeatureSet(payload["features"], payload["labels"], key, from_cache=True)
    transform = eval_transform(sizes[0], sizes[1], cfg.interpolation)
    features, labels = extract_features(model, images, transform, cfg)
    if cfg.cache and _world()[0] == 0:
        atomic_torch_save({"key": key, "features": features, "labels": labels}, path)
    return FeatureSet(features, labels, key)
