"""``sslbench eval finetune CHECKPOINT --recipe NAME|YAML --data ROOT [key=value ...]``: load, fine-tune, record.

A recipe is a YAML file of differences from :class:`evaluate.protocols.finetune.config.FinetuneConfig`, by name from
``evaluate/protocols/finetune/recipes/`` or by path; ``key=value`` overrides follow it. Launch several processes with
``torchrun --nproc_per_node N -m sslbench_entry eval finetune ...`` (``batch_size`` stays the global batch).

Records (protocol ``finetune``): ``top1`` is the paper's convention (``report``: ``max`` over the evaluated epochs
for DeiT/iBOT, ``last`` for MAE/BEiT), with ``top1_max``, ``top1_last`` and ``top5`` beside it; the dataset label is
``data.name`` plus the subset suffix (``imagenet-1pct``), which is what the paper-table columns look up. For a
SimCLR subset the list's sha256 is recorded and compared with the published 1 %/10 % files.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from evaluate.protocols import evalrun
from evaluate.protocols.finetune.config import FinetuneConfig
from sslcore.device import parse_device
from sslcore.errors import SSLBenchError
from sslcore.io import sha256_file

logger = logging.getLogger("sslbench")
RECIPES = Path(__file__).resolve().parent / "recipes"

# sha256 of google-research/simclr imagenet_subsets (protocols.md §3.1)
SIMCLR_SUBSETS = {
    "71e82a48ba78252683ae334c4d019ebd5c6e855b9599c1389fbe83eb9549cf17": "simclr-1percent",
    "6d09de11e7bdaf5b1f3b1f249b6183695f97310cdd20f0c03e7235b6b9392091": "simclr-10percent",
}


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def resolve_recipe(recipe: str) -> Path:
    """A recipe given as a YAML path, or as a name in ``evaluate/protocols/finetune/recipes/``."""
    path = Path(recipe)
    if path.is_file():
        return path
    candidate = RECIPES / f"{recipe}.yaml"
    if candidate.is_file():
        return candidate
    raise SSLBenchError(f"--recipe {recipe!r}: neither a file nor a known recipe ({', '.join(recipe_names())})")


def subset_info(cfg: FinetuneConfig) -> dict[str, Any]:
    """sha256 of the subset list and which published list it is (``None`` when it is none of them)."""
    if not cfg.data.subset:
        return {}
    from evaluate.datasets import resolve_subset

    digest = sha256_file(resolve_subset(cfg.data.root, cfg.data.subset))
    official = SIMCLR_SUBSETS.get(digest)
    if official is None and cfg.data.name == "imagenet":
        logger.warning("subset %s is not a published SimCLR list (sha256 %s)", cfg.data.subset, digest[:12])
    return {"subset_sha256": digest, "subset_official": official}


def check_dataset_label(cfg: FinetuneConfig) -> None:
    """Refuse to label a ShapesWorld tree with a real dataset's name (recipes set ``data.name``: imagenet, cifar10...).

    Raises:
        SSLBenchError: ``data.root`` (or its parent) holds a ShapesWorld manifest and ``data.name`` does not start
            with ``shapesworld``.
    """
    from evaluate.shapesworld.generate import MANIFEST

    root = Path(cfg.data.root)
    name = cfg.data.name or ""  # unset: named from the root (evalrun.dataset_name), shapesworld for such a tree
    if any((d / MANIFEST).is_file() for d in (root, root.parent)) and name and not name.startswith("shapesworld"):
        raise SSLBenchError(
            f"data.name={cfg.data.name!r}: {cfg.data.root} is a ShapesWorld tree; pass data.name=shapesworld "
            "(or shapesworld-<part>) so its records are not filed under the real dataset"
        )


def _threads(cfg: FinetuneConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)


def run(cfg: FinetuneConfig, backbone: Any = None) -> dict[str, float]:
    """Fine-tune ``cfg.backbone`` on ``cfg.data`` with the recipe in ``cfg``; append records; returns the metrics."""
    from evaluate.protocols.finetune.data import build_datasets, transforms
    from evaluate.protocols.finetune.engine import Loop, summarize
    from evaluate.protocols.finetune.model import build_classifier

    started = time.time()
    _threads(cfg)
    if cfg.epochs < 1:
        raise SSLBenchError(f"epochs={cfg.epochs}: must be >= 1")
    bcfg = cfg.backbone
    if bcfg.img_size is None and backbone is None:
        bcfg = dataclasses.replace(bcfg, img_size=cfg.aug.input_size)  # positions resampled once, at load (MAE/DeiT)
    check_dataset_label(cfg)
    train_tf, test_tf = transforms(cfg.aug)
    train, test = build_datasets(cfg.data, train_tf, test_tf)  # data errors before the model is loaded
    extra = subset_info(cfg)
    model, info = evalrun.load_model(bcfg, backbone)
    from evaluate.checkpoints import require_vit

    require_vit(model, "fine-tuning (ViT layer-wise decay)", bcfg.path)
    head_layer = None
    if cfg.model.head == "proj_layer":
        head_layer = _head_layer(cfg, info)
        extra["head_layer_key"] = head_layer.key
    classifier = build_classifier(
        model,
        len(train.classes),
        head=cfg.model.head,
        pool=cfg.model.pool,
        drop_path=cfg.model.drop_path,
        head_init_std=cfg.model.head_init_std,
        head_init_scale=cfg.model.head_init_scale,
        freeze_sincos=cfg.model.freeze_sincos,
        head_layer=None if head_layer is None else (head_layer.weight, head_layer.bias),
        seed=cfg.seed,
    )
    dataset = evalrun.dataset_label(cfg.data)
    out = evalrun.output_dir(cfg.out, "finetune", info, dataset)
    device = parse_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    loop = Loop(cfg, classifier, train, test, out, device)
    loop.load()
    history = loop.fit()
    metrics, chosen = summarize(history, cfg.report)
    rates = [r["images_per_s"] for r in history if "images_per_s" in r]
    extra.update(
        world_size=loop.world_size,
        global_batch=cfg.batch_size,
        effective_lr=loop.lr,
        precision=loop.precision,
        device=str(device),
        train_images_per_s=sum(rates) / len(rates) if rates else None,
        train_split=train.split,
        n_train=len(train.labels),
        n_test=len(test.labels),
        **chosen,
    )
    evalrun.finish(
        "finetune",
        dataset,
        test.split or cfg.data.test or "test",
        metrics,
        cfg=cfg,
        info=info,
        started=started,
        out=out,
        seed=cfg.seed,
        extra_settings=extra,
        details={"history": history},
    )
    return metrics


def _head_layer(cfg: FinetuneConfig, info: dict[str, Any]):
    from evaluate.checkpoints.heads import load_head_layer

    if not cfg.backbone.path:
        raise SSLBenchError("model.head=proj_layer: needs a checkpoint file that stores the pretraining head")
    return load_head_layer(
        cfg.backbone.path, format=info.get("format"), which=cfg.backbone.which, trust_pickle=cfg.backbone.trust_pickle
    )


# ---------------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    evalrun.add_arguments(parser, force=False)  # a fine-tune resumes in its --out
    parser.usage = "%(prog)s CHECKPOINT --recipe NAME|YAML --data ROOT [--out DIR] [key=value ...] (any order)"
    parser.add_argument(
        "--recipe",
        nargs="+",
        action=evalrun._OptionThenPositionals,
        metavar="RECIPE",
        help=f"recipe name ({', '.join(recipe_names())}) or YAML file",
    )


def run_cli(args: argparse.Namespace) -> int:
    if args.recipe and args.config:
        raise SSLBenchError("give --recipe or --config, not both")
    if args.recipe:
        args.config = str(resolve_recipe(args.recipe))
    cfg = evalrun.config_from_args(FinetuneConfig, args)
    evalrun.print_metrics("finetune", evalrun.dataset_label(cfg.data), run(cfg))
    return 0
