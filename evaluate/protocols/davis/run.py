"""The DAVIS-2017 protocol: features -> label propagation -> indexed PNGs -> J&F -> records.

For every sequence of the split, patch features are computed once (cached, :mod:`evaluate.protocols.davis.features`), then
every combination of the swept propagation settings (``n_last_frames`` x ``topk`` x ``size_mask_neighborhood``)
propagates the first frame's labels (:mod:`evaluate.protocols.davis.propagation`) and writes
``<out>/nlast<n>-topk<k>-nbhd<s>/<seq>/<frame>.png``. Each combination's folder is then scored
(:mod:`evaluate.protocols.davis.score`: the two official CSVs) and gives one record per metric.

Frame 0 of every output is the ground truth re-saved (as in DINO's script; it is never scored). The other frames:
soft labels upsampled by the patch size, min-max normalised per channel, argmax, then PIL nearest-resized to the
original frame size. Records hold the metrics in percent (the official CSVs hold fractions): J&F 0.618 is stored as
61.8 with ``unit="%"``, the number DINO's and BAM's tables print.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from evaluate.protocols.davis import propagation as P
from evaluate.protocols.davis.data import (
    Sequence,
    check_sequences,
    first_labels,
    is_shapesworld,
    load_sequence,
    read_split,
    write_label,
)
from evaluate.protocols.davis.features import FeatureFn, sequence_features
from evaluate.protocols.davis.score import score_results
from evaluate.reporting.records import append_records, default_store, make_records
from sslcore.config import save_config, to_dict
from sslcore.device import parse_device
from sslcore.errors import ConfigError
from sslcore.io import check_writable, start_meter

logger = logging.getLogger("sslbench")


@dataclasses.dataclass
class DavisConfig:
    """``sslbench eval davis`` settings; the lists are swept (every combination is run and recorded)."""

    checkpoint: str = ""
    format: str | None = None
    which: Literal["teacher", "student"] = "teacher"
    pos_interp: Literal["dino", "timm"] | None = None  # None: the checkpoint format's own rule (as every protocol)
    num_heads: int | None = None
    img_size: int | None = None
    trust_pickle: bool = False
    name: str | None = None
    davis_root: str = ""
    split: str = "val"
    sequences: list[str] = dataclasses.field(default_factory=list)
    out: str = "results/davis"
    n_last_frames: list[int] = dataclasses.field(default_factory=lambda: [7])
    topk: list[int] = dataclasses.field(default_factory=lambda: [5])
    size_mask_neighborhood: list[int] = dataclasses.field(default_factory=lambda: [12])
    temperature: float = 0.1
    short_side: int = 480
    normalize: Literal["imagenet", "dino"] = "imagenet"
    device: str = "auto"
    batch_size: int = 8
    cache: bool = True
    dataset: str | None = None

    def __post_init__(self) -> None:
        for key in ("n_last_frames", "topk", "size_mask_neighborhood"):
            values = getattr(self, key)
            if not values:
                raise ValueError(f"{key}: needs at least one value")
        if min(self.n_last_frames) < 0 or min(self.topk) < 1:
            raise ValueError("n_last_frames must be >= 0 and topk >= 1")
        if self.short_side < 1 or self.batch_size < 1:
            raise ValueError("short_side and batch_size must be positive")
        parse_device(self.device, available=False)


def combo_tag(n_last_frames: int, topk: int, size_mask_neighborhood: int) -> str:
    return f"nlast{n_last_frames}-topk{topk}-nbhd{size_mask_neighborhood}"


def write_sequence_masks(
    out_dir: Path,
    seq: Sequence,
    soft: torch.Tensor,
    feat: dict[str, Any],
    first_orig: np.ndarray,
    palette: np.ndarray,
    chunk: int = 8,
) -> None:
    """Write frame 0 (the GT) and the argmax masks of frames 1.. (``soft``: (T, N, K)) as indexed PNGs."""
    height, width = feat["orig_size"]
    write_label(out_dir / f"{seq.frames[0].stem}.png", first_orig, palette)
    for start in range(1, soft.shape[0], chunk):
        idx = P.upsample_argmax(soft[start : start + chunk], tuple(feat["grid"]), int(feat["patch"]))
        for offset, labels in enumerate(idx.to(torch.uint8).cpu().numpy()):
            full = np.array(Image.fromarray(labels).resize((width, height), Image.NEAREST))
            write_label(out_dir / f"{seq.frames[start + offset].stem}.png", full, palette)


def propagate_sequence(
    feat: dict[str, Any], first_small: np.ndarray, device: torch.device, **settings: Any
) -> torch.Tensor:
    """Soft labels (T, N, K) of one sequence from its features and first-frame patch labels."""
    first = P.one_hot_labels(torch.from_numpy(first_small.astype(np.int64)).reshape(-1))
    return P.propagate(feat["features"].to(device), first.to(device), tuple(feat["grid"]), **settings)


def model_features(model: torch.nn.Module, cfg: DavisConfig, device: torch.device, info: dict[str, Any]) -> FeatureFn:
    pos_interp = getattr(model, "pos_interp", cfg.pos_interp)
    key = {k: info.get(k) for k in ("sha256", "format", "which", "arch")} | {"pos_interp": pos_interp}

    def fn(seq: Sequence) -> dict[str, Any]:
        return sequence_features(
            model,
            seq,
            short_side=cfg.short_side,
            normalize=cfg.normalize,
            device=device,
            batch_size=cfg.batch_size,
            key_info=key if info.get("sha256") else None,
            use_cache=cfg.cache,
        )

    return fn


def load_model(cfg: DavisConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The evaluated backbone (eval mode) and its checkpoint info, through the checkpoint adapter."""
    from evaluate.protocols.evalrun import BackboneConfig
    from evaluate.protocols.evalrun import load_model as load_backbone_model

    if not cfg.checkpoint:
        raise ConfigError("checkpoint: required (path to a ViT checkpoint)")
    fields = ("format", "which", "num_heads", "img_size", "pos_interp", "trust_pickle", "name")
    return load_backbone_model(BackboneConfig(path=cfg.checkpoint, **{f: getattr(cfg, f) for f in fields}))


def run(
    cfg: DavisConfig,
    *,
    model: torch.nn.Module | None = None,
    checkpoint_info: dict[str, Any] | None = None,
    features_fn: FeatureFn | None = None,
    store: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Run the protocol for every swept combination; returns ``[{"tag", "settings", "metrics" (%), "dir"}]``.

    ``model``/``checkpoint_info`` bypass the checkpoint adapter; ``features_fn`` (sequence -> the dict of
    :func:`~evaluate.protocols.davis.features.sequence_features`) replaces the backbone entirely (used by the oracle test).
    """
    started = time.time()
    start_meter()
    if not cfg.davis_root:
        raise ConfigError("davis_root: required (the DAVIS-2017 root, with JPEGImages/ Annotations/ ImageSets/)")
    from evaluate.datasets.palette import davis_palette

    device = parse_device(cfg.device)
    names = cfg.sequences or read_split(cfg.davis_root, cfg.split)
    for warning in check_sequences(cfg.davis_root, names):  # before any mask is written
        logger.warning("%s", warning)
    check_writable(store or default_store(), "results store")
    check_writable(cfg.out, "output directory")
    info = dict(checkpoint_info or {})
    if features_fn is None:
        if model is None:
            model, info = load_model(cfg)
        from evaluate.checkpoints import require_vit

        require_vit(model, "DAVIS label propagation", cfg.checkpoint)
        model = model.eval().to(device)
        features_fn = model_features(model, cfg, device, info)
    palette = davis_palette()
    out = Path(cfg.out)
    combos = list(itertools.product(cfg.n_last_frames, cfg.topk, cfg.size_mask_neighborhood))
    save_config(cfg, out / "config.yaml")
    for name in tqdm(names, desc="DAVIS propagation", unit="seq"):
        seq = load_sequence(cfg.davis_root, name, annotations="first")
        feat = features_fn(seq)
        first_orig, first_small = first_labels(seq.annotations[0], tuple(feat["grid"]))
        for n_last, topk, nbhd in combos:
            soft = propagate_sequence(
                feat,
                first_small,
                device,
                n_last_frames=n_last,
                topk=topk,
                size_mask_neighborhood=nbhd,
                temperature=cfg.temperature,
            )
            write_sequence_masks(out / combo_tag(n_last, topk, nbhd) / name, seq, soft, feat, first_orig, palette)
    dataset = cfg.dataset or ("shapesworld-davis" if is_shapesworld(cfg.davis_root) else "davis2017")
    results = []
    for n_last, topk, nbhd in combos:
        folder = out / combo_tag(n_last, topk, nbhd)
        summary, _ = score_results(cfg.davis_root, folder, cfg.split, sequences=names)
        metrics = {key: 100.0 * value for key, value in summary.items()}
        settings = to_dict(cfg) | {"n_last_frames": n_last, "topk": topk, "size_mask_neighborhood": nbhd}
        settings["device"] = str(device)
        records = make_records(
            "davis", dataset, cfg.split, metrics, checkpoint=info, settings=settings, started=started, unit="%"
        )
        append_records(records, store)
        logger.info(
            "%s: J&F-Mean %.1f (J %.1f, F %.1f)", folder, metrics["J&F-Mean"], metrics["J-Mean"], metrics["F-Mean"]
        )
        results.append({"tag": folder.name, "settings": settings, "metrics": metrics, "dir": str(folder)})
    return results
