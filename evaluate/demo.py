"""``sslbench demo``: the whole suite end to end on the embedded ShapesWorld data.

Stages (each reuses its previous output unless ``--fresh``):

1. **data** — ShapesWorld in every official format (``evaluate.shapesworld``).
2. **checkpoints** — every method of :data:`METHODS` pretrained on ShapesWorld classification/train with its
   ``pretrain/configs/<method>_shapes_tiny.yaml`` recipe (resumed if interrupted), and two baselines for them:
   each method's own initialisation (``<method>-step0``: the same recipe's network at step 0, same architecture,
   initialisation, seed and build, exported without training; identical step-0 networks are evaluated once) and the
   raw pixels of the image (``raw-pixels``, :mod:`evaluate.baselines`).
3. **protocols** — for each checkpoint: k-NN, linear probing (DINO v1 protocol on cached features), logistic
   regression on the transfer domain and on the 1 %/10 % label subsets (semi-supervised), k-means clustering, DAVIS
   label propagation (not for raw pixels: it needs patch tokens). A protocol already recorded for a checkpoint's
   sha256 is not run again.
4. **reports** — the papers' tables with the measured rows, the full-protocol table, the methods side by side with
   the learning check (each method against raw pixels and its own step 0, with its collapse diagnostics), the
   entropy / k-NN-curve / collapse / attention figures, and a one-page ``README.md`` with the numbers and the wall
   time of each stage.

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

# the methods the demo pretrains, in report order; each trains pretrain/configs/<method>_shapes_tiny.yaml
METHODS = ("bam", "dino", "ibot", "adclr", "sere")


# the raw-pixel baseline's images are area-downsampled to this side (768 values): logistic regression on the full
# 64 x 64 x 3 = 12288 values costs minutes per sweep on 2 cores, and the k-NN of both differs by about 2 points
PIXEL_SIDE = 16


def recipe(method: str) -> Path:
    return REPO_ROOT / "pretrain" / "configs" / f"{method}_shapes_tiny.yaml"


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo flavour (default or ``--quick``)."""

    preset: str
    pretrain_overrides: tuple[str, ...]
    method_overrides: dict[str, tuple[str, ...]]
    linear_epochs: int
    num_lambdas: int
    cluster_classes: tuple[int, ...]
    cluster_instances: int
    davis_short_side: int


PLANS = {
    "default": DemoPlan(
        preset="demo",
        # five methods within the 15-minute budget on 2 CPU cores: 12 of the recipes' 20 epochs (180 steps) each,
        # the k-NN monitor every 4 epochs for the curves
        pretrain_overrides=("train.epochs=12", "knn.every_epochs=4"),
        method_overrides={},
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
        ),
        method_overrides={  # small heads for the femto model
            "bam": ("bam.proj_hidden=64", "bam.proj_out=64"),
            "dino": ("dino.out_dim=128", "dino.hidden_dim=64", "dino.bottleneck_dim=32"),
            "ibot": ("dino.out_dim=128", "dino.hidden_dim=64", "dino.bottleneck_dim=32", "ibot.patch_out_dim=128"),
            "adclr": ("dino.out_dim=128", "dino.hidden_dim=64", "dino.bottleneck_dim=32", "adclr.query_crops=4"),
            "sere": ("dino.out_dim=128", "dino.hidden_dim=64", "dino.bottleneck_dim=32", "ibot.patch_out_dim=128"),
        },
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


# what the demo derives from its data: stale once the data are regenerated with other settings
DERIVED = ("pretrain", "eval", "records", "cache")


def stage_data(out: Path, plan: DemoPlan, seed: int) -> Path:
    """Generate (or reuse) the demo's ShapesWorld. Data the demo wrote earlier with other settings (an older
    generator, another preset or seed) are replaced, and every result derived from them is removed first."""
    from evaluate.shapesworld.generate import PRESETS, generate, read_manifest
    from sslcore.errors import DataError

    root = out / "data" / "shapesworld"
    spec = PRESETS[plan.preset]
    existing = read_manifest(root)
    try:
        generate(root, spec, seed=seed)
        return root
    except DataError:
        if existing is None:
            raise  # not a ShapesWorld tree: never delete what the demo did not write
    logger.warning("demo: %s was generated with other settings; regenerating it and dropping derived results", root)
    for name in DERIVED:
        shutil.rmtree(out / name, ignore_errors=True)
    generate(root, spec, seed=seed, force=True)
    return root


def pretrain_config(out: Path, data: Path, plan: DemoPlan, seed: int, method: str, run_name: str) -> Any:
    """``method``'s demo recipe (+ the plan's overrides), writing into ``<out>/pretrain/<run_name>``."""
    from pretrain.config import PretrainConfig
    from sslcore.config import load_config

    overrides = [
        f"data.root={data / 'classification' / 'train'}",
        f"knn.train_root={data / 'classification' / 'train'}",
        f"knn.val_root={data / 'classification' / 'val'}",
        f"train.out={out / 'pretrain' / run_name}",
        f"train.seed={seed}",
        *plan.pretrain_overrides,
        *plan.method_overrides.get(method, ()),
    ]
    return load_config(PretrainConfig, recipe(method), overrides)


def stage_pretrain(out: Path, data: Path, plan: DemoPlan, seed: int, method: str) -> Path:
    """Train (or resume, or reuse) ``method`` on ShapesWorld; returns the exported backbone."""
    from evaluate.knn import knn_accuracy
    from pretrain.checkpoint import read_training_state
    from pretrain.cli import check_resume_config
    from pretrain.engine import Trainer
    from sslcore.config import to_dict
    from sslcore.errors import ConfigError

    cfg = pretrain_config(out, data, plan, seed, method, method)
    ckpt = Path(cfg.train.out) / "checkpoint.pth"
    state = None
    if ckpt.is_file():  # a run of another recipe or plan (e.g. an older demo) is not resumed: it is redone
        state = read_training_state(ckpt)  # read once: compared here, resumed from by fit
        try:
            check_resume_config(to_dict(cfg), state.get("config", {}), ckpt)
        except ConfigError as exc:
            logger.warning("demo: %s; training %s again", exc, method)
            shutil.rmtree(cfg.train.out)
            state = None
    return Trainer(cfg, knn_fn=knn_accuracy).fit(resume=True, state=state)


def stage_step0(out: Path, data: Path, plan: DemoPlan, seed: int, method: str) -> Path:
    """The method's own baseline: its recipe's network at step 0 (same recipe, seed and build, so the same
    architecture, initialisation, positions and frozen parts as the method before its first step), exported without
    training. Gains over it are what training added, not a difference of initialisation."""
    from evaluate.knn import knn_accuracy
    from pretrain.engine import Trainer

    path = out / "pretrain" / f"{method}-step0" / "backbone.pth"
    if not path.is_file():
        cfg = pretrain_config(out, data, plan, seed, method, f"{method}-step0")
        Trainer(cfg, iters_per_epoch=1, knn_fn=knn_accuracy).export()
    return path


def stage_checkpoints(
    out: Path, data: Path, plan: DemoPlan, seed: int, methods: tuple[str, ...], timer: StageTimer
) -> tuple[dict[str, Any], dict[str, str]]:
    """({name: backbone file, or a loaded baseline}, {method: name of its step-0 checkpoint}): each method, each
    distinct step-0 network, raw pixels."""
    from evaluate.baselines import raw_pixels
    from evaluate.checkpoints import load_backbone
    from evaluate.features import model_sha256

    checkpoints: dict[str, Any] = {}
    for method in methods:
        with timer(f"pretrain {method}"):
            checkpoints[method] = stage_pretrain(out, data, plan, seed, method)
    seen: dict[str, str] = {}
    step0_of: dict[str, str] = {}
    for method in methods:
        path = stage_step0(out, data, plan, seed, method)
        digest = model_sha256(load_backbone(path).model)  # the weights, not the file (its config differs)
        if digest in seen:  # e.g. DINO and iBOT build the same network at step 0
            timer.notes[f"{method}-step0"] = f"same network as {seen[digest]}"
        else:
            seen[digest] = f"{method}-step0"
            checkpoints[f"{method}-step0"] = path
        step0_of[method] = seen[digest]
    size = pretrain_config(out, data, plan, seed, methods[0], methods[0]).data.global_size
    pixels = raw_pixels(size, PIXEL_SIDE)
    checkpoints[pixels.info["name"]] = pixels
    return checkpoints, step0_of


def _recorded(store: Path, sha256: str, protocol: str, dataset: str) -> bool:
    from evaluate.records import read_records

    if not store.exists():
        return False
    return any(
        r.get("checkpoint", {}).get("sha256") == sha256 and r["protocol"] == protocol and r["dataset"] == dataset
        for r in read_records(store)
    )


def protocol_jobs(
    data: Path, plan: DemoPlan, run_dir: Path, pixels: bool = False
) -> list[tuple[str, str, Callable[[Any], Any]]]:
    """(protocol, record dataset, callable(loaded backbone)) for every frozen-feature protocol of the demo.

    ``pixels``: the jobs for the raw-pixel baseline (one token, no patches: the linear bank is its CLS tap, no DAVIS).
    """
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
            frozen(
                linear,
                linear.LinearConfig,
                "linear",
                f"data.root={cls_root}",
                f"epochs={plan.linear_epochs}",
                "mode=cached",  # the quick variant, by name: the demo's budget
                *(("taps=cls", "n_last=1") if pixels else ()),
            ),
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
        *([] if pixels else [("davis", "shapesworld-davis", davis)]),
    ]


def stage_protocols(
    checkpoints: dict[str, Any], data: Path, plan: DemoPlan, out: Path, store: Path, timer: StageTimer
) -> set[str]:
    """Run (or reuse) every protocol on every checkpoint; returns the checkpoints' sha256 (what the report shows:
    records of earlier demo runs under the same names stay in the store but not in the report)."""
    from evaluate.checkpoints import load_backbone

    shas = set()
    for name, path in checkpoints.items():
        loaded = load_backbone(path, name=name) if isinstance(path, Path) else path
        shas.add(loaded.info["sha256"])
        pixels = loaded.info.get("format") == "raw-pixels"
        for protocol, dataset, call in protocol_jobs(data, plan, out / "eval", pixels):
            label = f"{protocol} ({dataset}) — {name}"
            if _recorded(store, loaded.info["sha256"], protocol, dataset):
                timer.notes[label] = "reused"
                continue
            with timer(label):
                call(loaded)
    return shas


def stage_reports(
    checkpoints: dict[str, Any], data: Path, logs: dict[str, Path], store: Path, report: Path, shas: set[str]
) -> dict[str, Any]:
    """Tables from the records; figures from the pretraining logs ``{method: log.jsonl}`` and the networks."""
    from evaluate.checkpoints import load_backbone
    from evaluate.figures import ENTROPY_KEYS, plot_attention, plot_collapse, plot_curves, plot_entropy, read_log
    from evaluate.results import query
    from evaluate.tables import build_tables

    frame = query(store)
    frame = frame[(frame["source"] != "measured") | frame["checkpoint_sha256"].isin(shas)]  # this run's networks
    tables = build_tables(frame, report / "tables", which="all", checkpoints=list(checkpoints))
    figures = report / "figures"
    paths, labels = list(logs.values()), [f"{m} (ShapesWorld)" for m in logs]
    made: dict[str, list[Path]] = {}
    with_entropy = [m for m, log in logs.items() if ENTROPY_KEYS[0] in read_log(log)[1].columns]
    if with_entropy:
        made["entropy"] = plot_entropy([logs[m] for m in with_entropy], figures, labels=with_entropy)
    made["curves"] = plot_curves(paths, figures, labels=labels)
    made["collapse"] = plot_collapse(paths, figures, labels=labels)
    sample = next(iter(sorted((data / "classification" / "val").rglob("*.png"))))
    networks = {n: p for n, p in checkpoints.items() if isinstance(p, Path)}
    shown = [n for n in networks if n in logs] + [n for n in networks if n not in logs][:1]
    for name in shown:
        loaded = load_backbone(networks[name], name=name)
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
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated methods to pretrain and compare (default: {','.join(METHODS)})",
    )


def parse_methods(text: str) -> tuple[str, ...]:
    """``"bam,dino"`` -> ("bam", "dino"); an unknown or recipe-less method is one line, before any work."""
    from sslcore.errors import ConfigError

    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    if not methods:
        raise ConfigError("--methods: no method given")
    for method in methods:
        if not recipe(method).is_file():
            known = sorted(
                p.name.removesuffix("_shapes_tiny.yaml") for p in recipe("x").parent.glob("*_shapes_tiny.yaml")
            )
            raise ConfigError(f"--methods: no ShapesWorld recipe for {method!r} (known: {', '.join(known)})")
    return methods


def run_demo(
    out: Path,
    report: Path,
    quick: bool = False,
    fresh: bool = False,
    seed: int = 0,
    methods: tuple[str, ...] = METHODS,
) -> Path:
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
    checkpoints, step0_of = stage_checkpoints(out, data, plan, seed, methods, timer)
    shas = stage_protocols(checkpoints, data, plan, out, store, timer)
    logs = {m: out / "pretrain" / m / "log.jsonl" for m in methods}
    with timer("reports"):
        made = stage_reports(checkpoints, data, logs, store, report, shas)
    return write_report(
        report,
        made,
        timer,
        checkpoints,
        logs,
        step0_of,
        plan_name="quick" if quick else "default",
        total=time.time() - started,
        out=out,
    )


def run_cli(args: argparse.Namespace) -> int:
    methods = parse_methods(args.methods)
    path = run_demo(
        Path(args.out), Path(args.report), quick=args.quick, fresh=args.fresh, seed=args.seed, methods=methods
    )
    print(f"report: {path}")
    return 0
