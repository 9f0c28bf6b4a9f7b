"""What every frozen-feature protocol's ``run(cfg)`` shares: backbone and data sections, loading, outputs, the CLI.

Each protocol config (a dataclass) has a ``backbone`` section (:class:`BackboneConfig`, the arguments of
:func:`evaluate.checkpoints.load_backbone`), a ``data`` section (:class:`DataConfig`: a registry dataset in its
official layout, see :mod:`evaluate.datasets.registry`, or an ImageFolder root with named splits) and a ``features`` section (:class:`evaluate.protocols.features.FeatureConfig`). A run writes ``config.yaml`` and
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
from evaluate.reporting.records import append_records, make_records
from sslcore.config import POSITIVE_OR_NONE, load_config, save_config, to_dict, validate
from sslcore.device import parse_device
from sslcore.errors import ConfigError, SSLBenchError
from sslcore.io import REPO_ROOT, atomic_write_json, check_writable, start_meter


@dataclasses.dataclass
class BackboneConfig:
    """Which weights to evaluate (see :func:`evaluate.checkpoints.load_backbone`)."""

    path: str = ""
    format: str | None = None
    which: Literal["teacher", "student"] = "teacher"
    num_heads: int | None = None
    img_size: int | None = None
    pos_interp: Literal["dino", "timm"] | None = None
    trust_pickle: bool = False  # command line only (--trust-pickle); a YAML file may not set it
    name: str | None = None  # row label in tables (default: the file stem)

    def __post_init__(self) -> None:
        validate(self, {"num_heads": POSITIVE_OR_NONE, "img_size": POSITIVE_OR_NONE})


@dataclasses.dataclass
class DataConfig:
    """The dataset: ``name`` from the registry (food101, cifar10, ..., imagenet, inat2018; docs/datasets.md) is read
    in its official layout with its own splits and metric; any other name labels an ImageFolder tree
    ``<root>/<split>/<class>/<image>``. Unset splits take the dataset's roles (ImageFolder: train / val)."""

    root: str = ""
    name: str | None = None  # a registry name selects its reader; None: an ImageFolder named from the root
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

    Starts the run's resource meter (peak memory and images/s in the records are this protocol run's,
    :func:`sslcore.io.start_meter`). It never joins a process group: the command line does that once
    (:func:`config_from_args` calls :func:`init_distributed` under ``torchrun``), and so does the job shell of
    ``sslbench eval full`` on a multi-task Slurm job.
    """
    start_meter()
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


def dataset_name(cfg: DataConfig) -> str:
    """``data.name``, else a name read off the root: ``shapesworld`` (``shapesworld-<part>`` for parts other than
    ``classification``) under a generated ShapesWorld tree (its ``shapesworld.json`` manifest one level up), else the
    root directory's own name in lower case (``/data/imagenet`` -> ``imagenet``), so a real dataset never records as
    ShapesWorld. A name read off the root only labels an ImageFolder tree; the registry's official readers are chosen
    by an explicit ``data.name`` (or ``--data NAME:ROOT``)."""
    if cfg.name:
        return cfg.name
    if not cfg.root:
        raise SSLBenchError("data.root: no dataset directory given")
    root = Path(cfg.root).resolve()
    if (root.parent / "shapesworld.json").is_file():
        return "shapesworld" if root.name == "classification" else f"shapesworld-{root.name}"
    return root.name.lower()


def data_plan(cfg: DataConfig) -> DataPlan:
    """The resolved dataset: reader, split of each role, metric (:func:`evaluate.datasets.plan_data`)."""
    if not cfg.root:
        raise SSLBenchError("data.root: no dataset directory given")
    return plan_data(
        dataset_name(cfg),
        cfg.root,
        layout=cfg.layout if cfg.name else "imagefolder",
        train=cfg.train,
        val=cfg.val,
        test=cfg.test,
        check_counts=cfg.check_counts,
    )


def dataset_label(cfg: DataConfig) -> str:
    """The record's dataset name: the registry name (aliases resolved) or ``data.name``, suffixed with the subset
    (``-1pct``, ``-10pct``, ``-<stem>``). A name that already ends with the suffix is kept as is.
    """
    name = dataset_name(cfg)
    spec = get_spec(name) if cfg.name else None
    name = spec.name if spec else name
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


def check_outputs(cfg: Any, checkpoint: bool = True) -> None:
    """Before any work: the checkpoint file and the dataset root exist, and the results store, the feature cache
    (when enabled) and ``cfg.out`` (when given) are writable (:func:`sslcore.io.check_writable`). ``checkpoint=False``:
    the backbone is not a file (a baseline of ``sslbench eval full``, checked when its graph is planned)."""
    from evaluate.protocols.features import cache_root
    from evaluate.reporting.records import default_store

    path = getattr(getattr(cfg, "backbone", None), "path", None) if checkpoint else None
    if path is not None and not path:
        raise SSLBenchError("no checkpoint given (the CHECKPOINT argument)")
    if path and not Path(path).is_file():
        raise SSLBenchError(f"{path}: checkpoint file not found")
    data = getattr(cfg, "data", None)
    if data is not None and not data.root:
        raise SSLBenchError("data.root: no dataset directory given (--data ROOT)")
    if data is not None and not Path(data.root).is_dir():
        raise SSLBenchError(f"data.root={data.root}: not a directory")
    if data is not None:
        plan = data_plan(data)  # registry readers check their own files and counts when they load
        if plan.imagefolder:
            used = getattr(cfg, "splits_used", None)
            for split in used(plan) if used else [r for r in (plan.train, plan.val, plan.test) if r]:
                if not (Path(data.root) / split).is_dir():
                    raise SSLBenchError(f"data.root={data.root}: split directory {split!r} not found")
        if data.subset:
            resolve_subset(data.root, data.subset)
    if hasattr(cfg, "check"):
        cfg.check()  # the protocol's own cross-section checks
    check_writable(default_store(), "results store")
    features = getattr(cfg, "features", None)
    if features is not None and features.cache:
        check_writable(cache_root(), "feature cache")
    if getattr(cfg, "out", None):
        check_writable(cfg.out, "output directory")


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
    unit: str = "%",
) -> list:
    """Write ``config.yaml`` + ``metrics.json`` into ``out``, then append the records of the result (last, so a
    failed write never leaves records of a run without its outputs).

    Under ``torchrun`` every rank computes the same result; only rank 0 writes.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return []
    settings = {**to_dict(cfg), **(extra_settings or {})}
    records = make_records(
        protocol, dataset, split, metrics, checkpoint=info, settings=settings, seed=seed, started=started, unit=unit
    )
    save_config(cfg, out / "config.yaml")
    atomic_write_json(out / "metrics.json", {"metrics": metrics, "settings": settings, **(details or {})})
    append_records(records)
    return records


class _OptionThenPositionals(argparse.Action):
    """An option whose first value is its own and whose further values are positionals that followed it.

    argparse matches a ``nargs="*"`` positional to one contiguous run of arguments only; this lets the checkpoint and
    the overrides come before, between or after the options.
    """

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values[0])
        namespace.trailing = [*getattr(namespace, "trailing", []), *values[1:]]


def add_arguments(parser: argparse.ArgumentParser, force: bool = True) -> None:
    """The common command line of the frozen-feature protocols (``force``: with ``--force``, which lets a run replace
    the result a previous run left in ``--out``; fine-tuning resumes in its ``--out`` instead)."""
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
        "--trust-pickle",
        action="store_true",
        help="allow pickled objects outside the safe allow-list in the checkpoint (only for files you trust)",
    )
    if force:
        parser.add_argument("--force", action="store_true", help="replace the result a previous run left in --out")
    parser.add_argument(
        "positional",
        nargs="*",
        metavar="CHECKPOINT | key=value",
        help="the checkpoint file (any supported format) and dotted overrides (e.g. features.crop=64)",
    )


def config_from_args(schema: type, args: argparse.Namespace) -> Any:
    """The protocol config of a command line; joins the ``torchrun`` process group first (:func:`init_distributed`)."""
    init_distributed()
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
    if getattr(args, "force", None) is False and cfg.out and (Path(cfg.out) / "metrics.json").is_file():
        raise SSLBenchError(
            f"--out {cfg.out}: holds a previous result (metrics.json); pass --force to replace it, or another --out"
        )
    if getattr(args, "trust_pickle", False):
        cfg.backbone.trust_pickle = True
    features = getattr(cfg, "features", None)
    if features is not None:  # this machine has the device, before any checkpoint or data is read
        parse_device(features.device, "features.device")
    elif isinstance(getattr(cfg, "device", None), str):
        parse_device(cfg.device)
    return cfg


def cli_backbone(cfg: Any, protocol: str) -> Any:
    """The in-memory backbone of a command line whose CHECKPOINT is a baseline spec (``baseline:raw-pixels:16@64``,
    :mod:`evaluate.checkpoints.baselines`), with ``cfg`` fitted to its one token; None for a checkpoint file. A spec
    the protocol cannot use is one line, before any work. Then checks the outputs (:func:`check_outputs`)."""
    from evaluate.checkpoints.baselines import adapt_config, is_baseline, load_baseline

    path = cfg.backbone.path
    backbone = None
    if path and is_baseline(path):
        backbone = load_baseline(path, name=cfg.backbone.name or None)  # a malformed spec: one line naming it
        reason = adapt_config(protocol, cfg)
        if reason:
            raise ConfigError(f"{path}: {protocol} does not apply: {reason}")
    check_outputs(cfg, checkpoint=backbone is None)
    return backbone


def run_protocol_cli(schema: type, run: Any, protocol: str, args: argparse.Namespace) -> int:
    """The ``run_cli`` of a protocol whose ``run(cfg)`` returns one flat metrics dict."""
    cfg = config_from_args(schema, args)
    backbone = cli_backbone(cfg, protocol)
    print_metrics(protocol, dataset_label(cfg.data), run(cfg, backbone=backbone))
    return 0


def print_metrics(protocol: str, dataset: str, metrics: dict[str, float]) -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        return
    body = ", ".join(f"{k}={v:.2f}" for k, v in metrics.items())
    print(f"{protocol} {dataset}: {body}")
