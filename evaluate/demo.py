"""``sslbench demo``: the whole suite end to end on the embedded ShapesWorld data.

Stages (each reuses its previous output unless ``--fresh``):

1. **data** — ShapesWorld in every official format (``evaluate.shapesworld``).
2. **checkpoints** — BAM pretrained on ShapesWorld classification/train (``pretrain/configs/bam_shapes_tiny.yaml``,
   resumed if interrupted) and a random-initialisation baseline of the same architecture.
3. **protocols** — for each checkpoint: k-NN, linear probing (DINO v1 protocol on cached features), logistic
   regression on the transfer domain and on the 1 %/10 % label subsets (semi-supervised), k-means clustering, DAVIS
   label propagation. A protocol already recorded for a checkpoint's sha256 is not run again.
4. **reports** — the papers' tables with the measured rows, the full-protocol table, the entropy / training-curve /
   attention figures, and a one-page ``README.md`` with the numbers and the wall time of each stage.

Everything the demo writes lives under ``--out`` (data, runs, records, caches) and ``--report`` (tables, figures,
README). ``--quick`` shrinks data and schedules to about two minutes (the CI smoke test). The dense protocols (COCO,
ADE20K) need the ``dense`` extra and minutes of CPU per model, so they are not part of the demo; run them with
``sslbench eval coco|ade20k``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sslcore.io import REPO_ROOT

logger = logging.getLogger("sslbench")

RECIPE = REPO_ROOT / "pretrain" / "configs" / "bam_shapes_tiny.yaml"


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo flavour (default or ``--quick``)."""

    preset: str
    pretrain_overrides: tuple[str, ...]
    linear_epochs: int
    num_lambdas: int
    cluster_classes: tuple[int, ...]
    cluster_instances: int
    davis_short_side: int


PLANS = {
    "default": DemoPlan(
        preset="demo",
        pretrain_overrides=(),
        linear_epochs=100,
        num_lambdas=15,
        cluster_classes=(10,),
        cluster_instances=10,
        davis_short_side=96,
    ),
    "quick": DemoPlan(
        preset="tiny",
        pretrain_overrides=(
            "model.arch=vit_femto",
            "data.global_size=32",
            "data.local_size=16",
            "data.local_crops=2",
            "data.num_workers=0",
            "train.epochs=2",
            "train.batch_size=32",
            "optim.warmup_epochs=1",
            "ccrop.enabled=false",
            "knn.every_epochs=1",
            "knn.size=32",
            "bam.proj_hidden=64",
            "bam.proj_out=64",
        ),
        linear_epochs=10,
        num_lambdas=5,
        cluster_classes=(10,),
        cluster_instances=3,
        davis_short_side=48,
    ),
}


class StageTimer:
    """Wall time of each named stage, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.notes: dict[str, str] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        logger.info("demo: %s ...", name)
        start = time.time()
        yield
        self.seconds[name] = time.time() - start
        logger.info("demo: %s done in %.1f s", name, self.seconds[name])


def stage_data(out: Path, plan: DemoPlan, seed: int) -> Path:
    from evaluate.shapesworld.generate import PRESETS, generate

    root = out / "data" / "shapesworld"
    generate(root, PRESETS[plan.preset], seed=seed)
    return root


def stage_pretrain(out: Path, data: Path, plan: DemoPlan, seed: int) -> Path:
    """Train (or resume, or reuse) BAM on ShapesWorld; returns the exported backbone."""
    from evaluate.knn import knn_accuracy
    from pretrain.config import PretrainConfig
    from pretrain.engine import Trainer
    from sslcore.config import load_config

    run_dir = out / "pretrain" / "bam"
    overrides = [
        f"data.root={data / 'classification' / 'train'}",
        f"knn.train_root={data / 'classification' / 'train'}",
        f"knn.val_root={data / 'classification' / 'val'}",
        f"train.out={run_dir}",
        f"train.seed={seed}",
        *plan.pretrain_overrides,
    ]
    cfg = load_config(PretrainConfig, RECIPE, overrides)
    return Trainer(cfg, knn_fn=knn_accuracy).fit(resume=True)


def stage_random_init(out: Path, arch: dict[str, Any], seed: int) -> Path:
    import torch

    from pretrain.vit import SSLViT, ViTArch, export_backbone
    from sslcore.io import atomic_torch_save

    path = out / "checkpoints" / "random-init.pth"
    if not path.is_file():
        torch.manual_seed(seed)
        model = SSLViT(ViTArch.from_dict(arch))
        atomic_torch_save(export_backbone(model, {"init": "random", "seed": seed}), path)
    return path


def _recorded(store: Path, sha256: str, protocol: str, dataset: str) -> bool:
    from evaluate.records import read_records

    if not store.exists():
        return False
    return any(
        r.get("checkpoint", {}).get("sha256") == sha256 and r["protocol"] == protocol and r["dataset"] == dataset
        for r in read_records(store)
    )


def protocol_jobs(data: Path, plan: DemoPlan, run_dir: Path) -> list[tuple[str, str, Callable[[Any], Any]]]:
    """(protocol, record dataset, callable(loaded backbone)) for every frozen-feature protocol of the demo."""
    from evaluate import cluster, knn, linear, logreg
    from evaluate.davis.run import DavisConfig
    from evaluate.davis.run import run as run_davis
    from evaluate.features import CLASSIFICATION_RATIO
    from sslcore.config import load_config

    cls_root, transfer_root = data / "classification", data / "transfer"

    def frozen(module: Any, schema: Any, name: str, *overrides: str) -> Callable[[Any], Any]:
        def call(loaded: Any) -> Any:
            out = run_dir / loaded.info["name"] / name
            cfg = load_config(schema, None, [f"out={out}", "features.progress=false", *overrides])
            return module.run(cfg, backbone=loaded)

        return call

    def davis(loaded: Any) -> Any:
        cfg = DavisConfig(
            davis_root=str(data / "davis"),
            out=str(run_dir / loaded.info["name"] / "davis"),
            short_side=plan.davis_short_side,
            pos_interp=loaded.info.get("pos_interp") or "dino",
        )
        return run_davis(cfg, model=loaded.model, checkpoint_info=loaded.info)

    lambdas = f"num_lambdas={plan.num_lambdas}"
    return [
        ("knn", "shapesworld", frozen(knn, knn.KNNConfig, "knn", f"data.root={cls_root}")),
        (
            "linear",
            "shapesworld",
            frozen(linear, linear.LinearConfig, "linear", f"data.root={cls_root}", f"epochs={plan.linear_epochs}"),
        ),
        (
            "logreg",
            "shapesworld-transfer",
            frozen(
                logreg,
                logreg.LogRegConfig,
                "logreg-transfer",
                f"data.root={transfer_root}",
                "data.name=shapesworld-transfer",
                lambdas,
            ),
        ),
        *[
            (
                "logreg",
                f"shapesworld-{tag}",
                frozen(
                    logreg,
                    logreg.LogRegConfig,
                    f"logreg-{tag}",
                    f"data.root={cls_root}",
                    f"data.subset={subset}",
                    f"features.resize_ratio={CLASSIFICATION_RATIO}",
                    "l2_normalize=true",
                    lambdas,
                ),
            )
            for subset, tag in (("1percent", "1pct"), ("10percent", "10pct"))
        ],
        (
            "cluster",
            "shapesworld",
            frozen(
                cluster,
                cluster.ClusterConfig,
                "cluster",
                f"data.root={cls_root}",
                f"num_classes={list(plan.cluster_classes)}",
                f"instances={plan.cluster_instances}",
            ),
        ),
        ("davis", "shapesworld-davis", davis),
    ]


def stage_protocols(
    checkpoints: dict[str, Path], data: Path, plan: DemoPlan, out: Path, store: Path, timer: StageTimer
) -> None:
    from evaluate.checkpoints import load_backbone

    jobs = protocol_jobs(data, plan, out / "eval")
    for name, path in checkpoints.items():
        loaded = load_backbone(path, name=name)
        for protocol, dataset, call in jobs:
            label = f"{protocol} ({dataset}) — {name}"
            if _recorded(store, loaded.info["sha256"], protocol, dataset):
                timer.notes[label] = "reused"
                continue
            with timer(label):
                call(loaded)


def stage_reports(
    checkpoints: dict[str, Path], data: Path, pretrain_dir: Path, store: Path, report: Path
) -> dict[str, Any]:
    from evaluate.checkpoints import load_backbone
    from evaluate.figures import plot_attention, plot_curves, plot_entropy
    from evaluate.results import query
    from evaluate.tables import build_tables

    frame = query(store)
    tables = build_tables(frame, report / "tables", which="all", checkpoints=list(checkpoints))
    figures = report / "figures"
    log = pretrain_dir / "log.jsonl"
    made = {
        "entropy": plot_entropy([log], figures, labels=["BAM (ShapesWorld)"]),
        "curves": plot_curves([log], figures, labels=["BAM (ShapesWorld)"]),
    }
    sample = next(iter(sorted((data / "classification" / "val").rglob("*.png"))))
    for name, path in checkpoints.items():
        loaded = load_backbone(path, name=name)
        size = loaded.model.arch.img_size
        made[f"attention-{name}"] = plot_attention(
            loaded, sample, figures, image_size=size, name=f"attention-{name}", title=f"{name}: ShapesWorld val"
        )
        made[f"attention-photo-{name}"] = plot_attention(
            loaded,
            "sklearn:china.jpg",
            figures,
            image_size=4 * size,
            name=f"attention-photo-{name}",
            title=f"{name}: a photograph (scikit-learn sample)",
        )
    return {"frame": frame, "tables": tables, "figures": made}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="working directory: data, runs, records, caches")
    parser.add_argument("--report", default="reports/demo", help="where the tables, figures and README.md go")
    parser.add_argument("--quick", action="store_true", help="tiny data and short runs (about 2 minutes; for tests)")
    parser.add_argument("--fresh", action="store_true", help="redo every stage instead of reusing earlier output")
    parser.add_argument("--seed", type=int, default=0)


def run_demo(out: Path, report: Path, quick: bool = False, fresh: bool = False, seed: int = 0) -> Path:
    """Run every stage; returns the path of the report's README.md."""
    from evaluate.demo_report import write_report

    plan = PLANS["quick" if quick else "default"]
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(report, ignore_errors=True)
    store, cache = out / "records", out / "cache"
    os.environ["SSLBENCH_RESULTS"] = str(store)  # protocols append here; tables read from here
    os.environ.setdefault("SSLBENCH_CACHE", str(cache))
    timer = StageTimer()
    started = time.time()
    with timer("data"):
        data = stage_data(out, plan, seed)
    with timer("pretrain BAM"):
        bam = stage_pretrain(out, data, plan, seed)
    import torch

    arch = torch.load(bam, map_location="cpu", weights_only=True)["arch"]
    checkpoints = {"bam": bam, "random-init": stage_random_init(out, arch, seed)}
    stage_protocols(checkpoints, data, plan, out, store, timer)
    with timer("reports"):
        made = stage_reports(checkpoints, data, out / "pretrain" / "bam", store, report)
    return write_report(
        report,
        made,
        timer,
        checkpoints,
        plan_name="quick" if quick else "default",
        total=time.time() - started,
        out=out,
    )


def run_cli(args: argparse.Namespace) -> int:
    path = run_demo(Path(args.out), Path(args.report), quick=args.quick, fresh=args.fresh, seed=args.seed)
    print(f"report: {path}")
    return 0
