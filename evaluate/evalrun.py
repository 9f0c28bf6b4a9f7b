"""What every frozen-feature protocol's ``run(cfg)`` shares: backbone and data sections, loading, outputs, the CLI.

Each protocol config (a dataclass) has a ``backbone`` section (:class:`BackboneConfig`, the arguments of
:func:`evaluate.checkpoints.load_backbone`), a ``data`` section (:class:`DataConfig`: a registry dataset in its
official layout, see :mod:`evaluate.datasets.registry`, or an ImageFolder root with named splits) and a ``features`` section (:class:`evaluate.features.FeatureConfig`). A run writes ``config.yaml`` and
``metrics.json`` into its output directory (default ``runs/eval/<protocol>/<name>-<dataset>-<time>``, or ``runs/eval`` beside ``$SSLBENCH_RESULTS``) and
appends its records to the store.

The command line of every protocol is ``sslbench eval <protocol> CHECKPOINT --data [NAME:]ROOT [--config YAML]
[key=value ...]``, in any order; ``--data food101:/data/food-101`` equals ``data.name=food101 data.root=/data/food-101``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Literal

from evaluate.datasets import (
    DataPlan,
    LabeledImages,
    apply_subset,
    get_spec,
    parse_data_arg,
    plan_data,
    read_subset_file,
    resolve_subset,
)
from evaluate.records import append_records, make_records
from sslcore.config import load_config, save_config, to_dict
from sslcore.errors import SSLBenchError
from sslcore.io import REPO_ROOT, atomic_write_json


@dataclasses.dataclass
class BackboneConfig:
    """Which weights to evaluate (see :func:`evaluate.checkpoints.load_backbone`)."""

    path: str = ""
    format: str | None = None
    which: Literal["teacher", "student"] = "teacher"
    num_heads: int | None = None
    img_size: int | None = None
    pos_interp: Literal["dino", "timm"] | None = None
    trust_pickle: bool = False
    name: str | None = None  # row label in tables (default: the file stem)


@dataclasses.dataclass
class DataConfig:
    """The dataset: ``name`` from the registry (food101, cifar10, ..., imagenet, inat2018; docs/datasets.md) is read
    in its official layout with its own splits and metric; any other name labels an ImageFolder tree
    ``<root>/<split>/<class>/<image>``. Unset splits take the dataset's roles (ImageFolder: train / val)."""

    root: str = ""
    name: str = "shapesworld"
    layout: Literal["auto", "official", "imagefolder"] = "auto"  # auto: official for registry names
    train: str | None = None
    val: str | None = None  # the selection split; None: the dataset's official one (ImageFolder: none)
    test: str | None = None
    subset: str | None = None  # SimCLR-style list (path, or name in <root>/subsets/) restricting the train split
    check_counts: bool = True  # class and image counts of registry datasets against the official release


def init_distributed() -> None:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1): NCCL on CUDA, else gloo."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def load_model(cfg: BackboneConfig, backbone: Any = None) -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, checkpoint info) from ``backbone`` (a LoadedBackbone or a bare SSLViT) or ``cfg.path``.

    Joins the ``torchrun`` process group first (:func:`init_distributed`).
    """
    init_distributed()
    if backbone is not None:
        if hasattr(backbone, "model") and hasattr(backbone, "info"):
            model, info = backbone.model, dict(backbone.info)
        else:
            model = backbone
            arch = getattr(model, "arch", None)
            info = {
                "path": None,
                "name": cfg.name or "in-memory",
                "format": "in-memory",
                "arch": arch.to_dict() if hasattr(arch, "to_dict") else None,
                "which": cfg.which,
                "pos_interp": getattr(model, "pos_interp", None),
            }
    else:
        if not cfg.path:
            raise SSLBenchError("backbone.path: no checkpoint given")
        from evaluate.checkpoints import load_backbone

        loaded = load_backbone(
            cfg.path,
            format=cfg.format,
            which=cfg.which,
            num_heads=cfg.num_heads,
            img_size=cfg.img_size,
            pos_interp=cfg.pos_interp,
            trust_pickle=cfg.trust_pickle,
            name=cfg.name,
        )
        model, info = loaded.model, dict(loaded.info)
    if cfg.name:
        info["name"] = cfg.name
    info.setdefault("name", Path(info.get("path") or "model").stem)
    return model.eval(), info


def data_plan(cfg: DataConfig) -> DataPlan:
    """The resolved dataset: reader, split of each role, metric (:func:`evaluate.datasets.plan_data`)."""
    if not cfg.root:
        raise SSLBenchError("data.root: no dataset directory given")
    return plan_data(
        cfg.name,
        cfg.root,
        layout=cfg.layout,
        train=cfg.train,
        val=cfg.val,
        test=cfg.test,
        check_counts=cfg.check_counts,
    )


def dataset_label(cfg: DataConfig) -> str:
    """The record's dataset name: the registry name (aliases resolved) or ``data.name``, suffixed with the subset
    (``-1pct``, ``-10pct``, ``-<stem>``). A name that already ends with the suffix is kept as is.
    """
    spec = get_spec(cfg.name)
    name = spec.name if spec else cfg.name
    if not cfg.subset:
        return name
    stem = Path(cfg.subset).stem
    suffix = {"1percent": "1pct", "10percent": "10pct"}.get(stem, stem)
    return name if name.endswith(f"-{suffix}") else f"{name}-{suffix}"


def load_splits(
    cfg: DataConfig, *, select: bool = False, val: str | None = None
) -> tuple[DataPlan, LabeledImages, LabeledImages | None, LabeledImages]:
    """(plan, train, val, test); class lists must agree; ``data.subset`` restricts train.

    ``select=False`` (k-NN, linear): train is the fit split (train + val when the dataset has a val split), val None.
    ``select=True`` (logistic regression): train and the selection split ``val`` (default: the dataset's) apart;
    val is None when there is none, and the protocol holds part of train out instead.
    """
    plan = data_plan(cfg)
    val_split = (val or plan.val) if select else None
    train = plan.load(plan.train if select else plan.fit)
    if cfg.subset:
        path = resolve_subset(cfg.root, cfg.subset)
        train = apply_subset(train, read_subset_file(path), str(path))
    val_images = plan.load(val_split) if val_split else None
    test = plan.load(plan.test)
    for other in (val_images, test):
        if other is not None and other.classes != train.classes:
            raise SSLBenchError(
                f"data.root={cfg.root}: the {train.split} and {other.split} splits have different classes"
            )
    return plan, train, val_images, test


def load_train_test(cfg: DataConfig) -> tuple[LabeledImages, LabeledImages]:
    """The fit split (restricted to ``cfg.subset`` if given) and the test split; class lists must agree."""
    _plan, train, _val, test = load_splits(cfg)
    return train, test


def output_dir(out: str | None, protocol: str, info: dict[str, Any], dataset: str) -> Path:
    if out:
        return Path(out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = (
        Path(os.environ["SSLBENCH_RESULTS"]).parent / "runs"
        if os.environ.get("SSLBENCH_RESULTS")
        else REPO_ROOT / "runs"
    )
    return base / "eval" / protocol / f"{info.get('name', 'model')}-{dataset}-{stamp}"


def finish(
    protocol: str,
    dataset: str,
    split: str,
    metrics: dict[str, float],
    *,
    cfg: Any,
    info: dict[str, Any],
    started: float,
    out: Path,
    seed: int | None = None,
    extra_settings: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> list:
    """Append the records of one result, and write ``config.yaml`` + ``metrics.json`` into ``out``.

    Under ``torchrun`` every rank computes the same result; only rank 0 writes.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return []
    settings = {**to_dict(cfg), **(extra_settings or {})}
    records = make_records(
        protocol, dataset, split, metrics, checkpoint=info, settings=settings, seed=seed, started=started
    )
    append_records(records)
    save_config(cfg, out / "config.yaml")
    atomic_write_json(out / "metrics.json", {"metrics": metrics, "settings": settings, **(details or {})})
    return records


class _OptionThenPositionals(argparse.Action):
    """An option whose first value is its own and whose further values are positionals that followed it.

    argparse matches a ``nargs="*"`` positional to one contiguous run of arguments only; this lets the checkpoint and
    the overrides come before, between or after the options.
    """

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values[0])
        namespace.trailing = [*getattr(namespace, "trailing", []), *values[1:]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The common command line of the frozen-feature protocols."""
    parser.usage = "%(prog)s CHECKPOINT --data [NAME:]ROOT [--config YAML] [--out DIR] [key=value ...] (any order)"
    parser.set_defaults(trailing=[])
    for flag, help_text in (
        (
            "--data",
            "NAME:ROOT for a dataset in its official layout (food101, cifar10, cifar100, cars, aircraft, pets, "
            "flowers, dtd, sun397, caltech101, imagenet, inat2018, inat2019), or an ImageFolder ROOT with "
            "<train>/ and <test>/ splits (data.name, data.root)",
        ),
        ("--config", "YAML file with the differences from the defaults"),
        ("--out", "output directory (default: runs/eval/<protocol>/<name>-<dataset>-<time>)"),
    ):
        parser.add_argument(flag, nargs="+", action=_OptionThenPositionals, metavar=flag[2:].upper(), help=help_text)
    parser.add_argument(
        "positional",
        nargs="*",
        metavar="CHECKPOINT | key=value",
        help="the checkpoint file (any supported format) and dotted overrides (e.g. features.crop=64)",
    )


def config_from_args(schema: type, args: argparse.Namespace) -> Any:
    positional = [*args.positional, *getattr(args, "trailing", [])]
    checkpoints = [a for a in positional if "=" not in a or Path(a).is_file()]
    overrides = [a for a in positional if a not in checkpoints]
    if len(checkpoints) > 1:
        raise SSLBenchError(f"one checkpoint expected, got {len(checkpoints)}: {' '.join(checkpoints)}")
    cfg = load_config(schema, args.config, overrides)
    if checkpoints:
        cfg.backbone.path = checkpoints[0]
    if args.data:
        name, cfg.data.root = parse_data_arg(args.data)
        if name:
            cfg.data.name = name
    if getattr(args, "out", None):
        cfg.out = args.out
    return cfg


def run_protocol_cli(schema: type, run: Any, protocol: str, args: argparse.Namespace) -> int:
    """The ``run_cli`` of a protocol whose ``run(cfg)`` returns one flat metrics dict."""
    cfg = config_from_args(schema, args)
    print_metrics(protocol, dataset_label(cfg.data), run(cfg))
    return 0


def print_metrics(protocol: str, dataset: str, metrics: dict[str, float]) -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        return
    body = ", ".join(f"{k}={v:.2f}" for k, v in metrics.items())
    print(f"{protocol} {dataset}: {body}")
