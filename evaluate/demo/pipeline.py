"""``sslbench demo``: the whole suite end to end on the embedded ShapesWorld data.

Stages (each reuses its previous output unless ``--fresh``):

1. **data** — ShapesWorld in every official format (``evaluate.shapesworld``).
2. **checkpoints** — every method of :data:`METHODS` pretrained on ShapesWorld classification/train with its
   ``pretrain/configs/<method>_shapes_tiny.yaml`` recipe (resumed if interrupted), and two baselines for them:
   each method's own initialisation (``<method>-step0``: the same recipe's network at step 0, same architecture,
   initialisation, seed and build, exported without training; identical step-0 networks are evaluated once) and the
   raw pixels of the image (the pseudo-checkpoint ``baseline:raw-pixels:16@<input>``, :mod:`evaluate.checkpoints.baselines`).
3. **eval** — one call of ``sslbench eval full`` (:func:`evaluate.orchestration.full.run_full`) with the shipped ``shapesworld``
   suite on all of them: k-NN, linear probing (DINO v1 protocol on cached features), logistic regression on the
   transfer domain and on the 1 %/10 % label subsets, k-means clustering, DAVIS label propagation (not applicable to
   raw pixels: no patch tokens) and the tiny dense protocols (COCO Cascade Mask R-CNN, ADE20K UperNet: the suite's
   opt-ins ``coco``/``ade20k``, run when the ``dense`` extra is installed, else listed as not run with that reason;
   not in ``--quick``). ``--quick`` shortens the suite's schedules through its settings. A job whose records
   with identical settings exist is skipped. The graph lives in ``<out>/eval``, its report (comparison and cost
   tables, the papers' tables, attention maps, the pretraining figures) in ``<report>/full``.
4. **reports** — ``<report>/README.md`` (:mod:`evaluate.demo.report`), from the eval-full records and the
   pretraining logs: the learning check (each method against raw pixels and its own step 0, with its collapse
   diagnostics), every protocol of every checkpoint, the pretraining summaries, the figures, the papers' tables with
   measured rows, and the wall time of each stage.

Everything the demo writes lives under ``--out`` (data, runs, records, caches, the eval graph) and ``--report``.
``--quick`` shrinks data and schedules to a few minutes (the CI smoke test). Fine-tuning stays an opt-in of the suite
(minutes of CPU per model): ``sslbench eval full ... --suite shapesworld --only finetune``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sslcore.errors import SSLBenchError
from sslcore.io import REPO_ROOT

logger = logging.getLogger("sslbench")

# the methods the demo pretrains, in report order; each trains pretrain/configs/<method>_shapes_tiny.yaml
METHODS = ("bam", "dino", "ibot", "adclr", "sere")


# the raw-pixel baseline's images are area-downsampled to this side (768 values): logistic regression on the full
# 64 x 64 x 3 = 12288 values costs minutes per sweep on 2 cores, and the k-NN of both differs by about 2 points
PIXEL_SIDE = 16
SUITE = "shapesworld"  # evaluate/orchestration/suites/shapesworld.yaml


def recipe(method: str) -> Path:
    return REPO_ROOT / "pretrain" / "configs" / f"{method}_shapes_tiny.yaml"


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo flavour (default or ``--quick``)."""

    preset: str
    pretrain_overrides: tuple[str, ...]
    method_overrides: dict[str, tuple[str, ...]]
    # changes to the shapesworld suite's entries ({id or protocol: {key: value}}, evaluate.orchestration.suite.apply_settings)
    suite_settings: dict[str, dict[str, Any]]
    dense: bool = True  # add the suite's tiny dense opt-ins (DENSE_PROTOCOLS) when the dense extra is installed


PLANS = {
    "default": DemoPlan(
        preset="demo",
        # five methods within the 15-minute budget on 2 CPU cores: 12 of the recipes' 20 epochs (180 steps) each,
        # the k-NN monitor every 4 epochs for the curves
        pretrain_overrides=("train.epochs=12", "knn.every_epochs=4"),
        method_overrides={},
        suite_settings={},  # the suite as shipped
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
        suite_settings={
            "linear": {"epochs": 10},
            "logreg": {"num_lambdas": 5},
            "cluster": {"instances": 3},
            "davis": {"short_side": 48},
        },
        dense=False,
    ),
}
DENSE_PROTOCOLS = ("coco", "ade20k")  # the suite's opt-ins the demo adds (tiny configs: about 20 s per network)


def dense_missing() -> str | None:
    """Why the dense protocols cannot run here (a missing package of the ``dense`` extra), or None."""
    import importlib.util

    for module in ("mmcv", "mmdet", "mmseg", "mmengine"):
        if importlib.util.find_spec(module) is None:
            return f"the dense extra is not installed ({module} is missing; `make setup-dense`)"
    return None


def demo_protocols(plan: DemoPlan) -> tuple[list[str] | None, str | None]:
    """(``only`` for :func:`run_full`, why the dense protocols are left out or None): the suite's default entries plus
    its dense opt-ins when the plan wants them and the extra is installed."""
    from evaluate.orchestration.suite import load_suite

    if not plan.dense:
        return None, None
    missing = dense_missing()
    if missing:
        return None, missing
    default = [p.id for p in load_suite(SUITE).protocols if not p.optional]
    return default + list(DENSE_PROTOCOLS), None


@dataclasses.dataclass
class DemoResult:
    readme: Path
    failed: list[str]  # "<outcome>: <job id> (log: <path>)" of each eval job that failed or was blocked


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
    from evaluate.protocols.knn import knn_accuracy
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
    from evaluate.protocols.knn import knn_accuracy
    from pretrain.engine import Trainer

    path = out / "pretrain" / f"{method}-step0" / "backbone.pth"
    if not path.is_file():
        cfg = pretrain_config(out, data, plan, seed, method, f"{method}-step0")
        Trainer(cfg, iters_per_epoch=1, knn_fn=knn_accuracy).export()
    return path


def distinct_step0s(
    out: Path, data: Path, plan: DemoPlan, seed: int, methods: tuple[str, ...]
) -> tuple[dict[str, Path], dict[str, str]]:
    """({name: backbone} of each distinct step-0 network, {method: the name of its step 0}): :func:`stage_step0` of
    every method, identical weights kept once under the first method's ``<method>-step0`` (e.g. DINO, iBOT and SERE
    build the same network)."""
    from evaluate.checkpoints import load_backbone
    from evaluate.protocols.features import model_sha256

    distinct: dict[str, Path] = {}
    seen: dict[str, str] = {}
    step0_of: dict[str, str] = {}
    for method in methods:
        path = stage_step0(out, data, plan, seed, method)
        digest = model_sha256(load_backbone(path).model)  # the weights, not the file (its config differs)
        if digest not in seen:
            seen[digest] = f"{method}-step0"
            distinct[seen[digest]] = path
        step0_of[method] = seen[digest]
    return distinct, step0_of


def stage_checkpoints(
    out: Path, data: Path, plan: DemoPlan, seed: int, methods: tuple[str, ...], timer: StageTimer
) -> tuple[dict[str, Path | str], dict[str, str]]:
    """({name: backbone file, or the raw-pixel baseline's spec}, {method: name of its step-0 checkpoint}): each
    method, each distinct step-0 network, raw pixels (at the pretraining's input size, downsampled to
    :data:`PIXEL_SIDE`)."""
    from evaluate.checkpoints.baselines import parse_baseline

    checkpoints: dict[str, Path | str] = {}
    for method in methods:
        with timer(f"pretrain {method}"):
            checkpoints[method] = stage_pretrain(out, data, plan, seed, method)
    step0, step0_of = distinct_step0s(out, data, plan, seed, methods)
    checkpoints |= step0
    for method, name in step0_of.items():
        if name != f"{method}-step0":
            timer.notes[f"{method}-step0"] = f"same network as {name}"
    size = pretrain_config(out, data, plan, seed, methods[0], methods[0]).data.global_size
    pixels = parse_baseline(f"baseline:raw-pixels:{PIXEL_SIDE}@{size}")
    checkpoints[pixels.name] = pixels.spec
    return checkpoints, step0_of


def stage_eval(
    checkpoints: dict[str, Path | str],
    data: Path,
    plan: DemoPlan,
    out: Path,
    report: Path,
    logs: dict[str, Path],
    only: list[str] | None = None,
) -> Any:
    """``sslbench eval full`` with the ShapesWorld suite (:func:`evaluate.orchestration.full.run_full`) on every checkpoint: the
    job graph in ``<out>/eval``, its report in ``<report>/full``. A job whose records with identical settings exist
    is skipped, so a rerun runs nothing; a failed job does not stop the others (see ``FullResult.failed``). ``only``:
    the suite entries to run (:func:`demo_protocols`; None: the suite's defaults)."""
    from evaluate.orchestration.full import run_full

    return run_full(
        {name: str(path) for name, path in checkpoints.items()},
        SUITE,
        out / "eval",
        report=report / "full",
        data_root=data,
        only=only,
        settings=plan.suite_settings,
        pretrain_logs=[str(log) for log in logs.values() if log.is_file()],
    )


def stage_reports(result: Any, logs: dict[str, Path], report: Path) -> dict[str, Any]:
    """The eval-full run's records as a table frame, and the figures of the page: the pretraining figures and
    attention maps of the eval-full report, plus the attention of the trained networks (and the first step 0) on a
    photograph."""
    from evaluate.checkpoints.baselines import is_baseline
    from evaluate.orchestration.full_report import run_frame
    from evaluate.orchestration.jobshell import load_checkpoint
    from evaluate.reporting.figures import plot_attention

    graph = result.graph
    full_figures = report / "full" / "figures"
    networks = [c for c in graph.checkpoints if not is_baseline(c.path)]
    shown = [c for c in networks if c.name in logs] + [c for c in networks if c.name not in logs][:1]
    figures: dict[str, Path] = {}
    for key in ("entropy", "curves", "collapse", *[f"attention-{c.name}" for c in networks]):
        if (full_figures / f"{key}.png").is_file():
            figures[key] = full_figures / f"{key}.png"
    for ckpt in shown:
        loaded = load_checkpoint(vars(ckpt))
        size = loaded.model.arch.img_size
        key = f"attention-photo-{ckpt.name}"
        made = plot_attention(
            loaded,
            "sklearn:china.jpg",
            report / "figures",
            image_size=4 * size,
            name=key,
            title=f"{ckpt.name}: a photograph (scikit-learn sample)",
        )
        figures[key] = next(p for p in made if p.suffix == ".png")
    return {"frame": run_frame(graph), "figures": figures}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="runs/demo", help="working directory: data, runs, records, caches, the eval graph"
    )
    parser.add_argument(
        "--report",
        default="reports/demo",
        help="the demo's README.md and figures (the eval-full report: <report>/full)",
    )
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
) -> DemoResult:
    """Run every stage; returns the report's README.md and the eval jobs that failed."""
    from evaluate.demo.report import write_report
    from sslcore.io import check_writable

    if seed < 0:
        raise SSLBenchError(f"--seed {seed}: must be >= 0")
    for path, what in ((out, "--out"), (report, "--report")):  # before any stage runs
        check_writable(path, what)
    plan = PLANS["quick" if quick else "default"]
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(report, ignore_errors=True)
    store, cache = out / "records", out / "cache"
    os.environ["SSLBENCH_RESULTS"] = str(store)  # the eval jobs append here; the reports read from here
    os.environ.setdefault("SSLBENCH_CACHE", str(cache))
    timer = StageTimer()
    started = time.time()
    with timer("data"):
        data = stage_data(out, plan, seed)
    checkpoints, step0_of = stage_checkpoints(out, data, plan, seed, methods, timer)
    logs = {m: out / "pretrain" / m / "log.jsonl" for m in methods}
    only, dense_skipped = demo_protocols(plan)
    if dense_skipped:
        logger.warning("dense protocols (%s) not run: %s", ", ".join(DENSE_PROTOCOLS), dense_skipped)
        timer.notes["dense protocols"] = f"not run: {dense_skipped}"
    with timer(f"eval (sslbench eval full, suite {SUITE})"):
        result = stage_eval(checkpoints, data, plan, out, report, logs, only)
    counts = {k: sum(1 for v in result.outcome.values() if v == k) for k in ("ran", "skipped", "failed", "blocked")}
    timer.notes["eval jobs"] = (
        f"{counts['ran']} ran, {counts['skipped']} reused, {counts['failed'] + counts['blocked']} failed or blocked "
        "(each job's wall time, memory and images/s: [full/tables/cost.md](full/tables/cost.md))"
    )
    with timer("reports"):
        made = stage_reports(result, logs, report)
    readme = write_report(
        report,
        made,
        timer,
        result,
        logs,
        step0_of,
        plan_name="quick" if quick else "default",
        total=time.time() - started,
        out=out,
    )
    return DemoResult(readme, [f"{result.outcome[j.id]}: {j.id} (log: {j.log})" for j in result.failed])


def run_cli(args: argparse.Namespace) -> int:
    methods = parse_methods(args.methods)
    result = run_demo(
        Path(args.out), Path(args.report), quick=args.quick, fresh=args.fresh, seed=args.seed, methods=methods
    )
    print(f"report: {result.readme}")
    for line in result.failed:
        print(line)
    return 1 if result.failed else 0
