"""The acceptance run's ``learning`` stage: does each method learn on ShapesWorld when it gets a GPU's budget?

On 2 CPU cores the demo's recipes get 180-300 steps, and the DINO family does not leave its step 0 there; with
1,500 steps of 32-px crops it does (docs/demo.md, eighth round). This stage gives every recipe of
``pretrain/configs/<method>_shapes_tiny.yaml``, at its own 64 px, ``epochs`` epochs instead of 20, its epoch-based
schedules (warm-ups, the teacher-temperature ramp, last-layer freezing, ContrastiveCrop) stretched by the same factor
so that the recipe keeps its shape, and trains all the runs at once on one GPU (vit_pico steps are launch- and loader-bound, so side-by-side processes share the device well). Then
one ``sslbench eval full`` with the ``shapesworld`` suite (k-NN and DAVIS only) measures every run, the step 0 of each
distinct recipe network (the demo's ``<method>-step0``) and raw pixels (``baseline:raw-pixels:16@64``).

Runs (:data:`RUNS`): the five methods and the two controls the issues name: SERE with alpha = beta = 0 (the same
recipe without its relation losses, #12) and ADCLR with bidirectional query attention (#13); ADCLR's comparison with
DINO is the ``dino`` run (same head, crops and budget). A run still going at ``deadline_s`` is stopped and measured
from its last epoch's checkpoint (the teacher), and its row says at which epoch.

Rows: per run, the k-NN top-1 (k = 20) with its gain over its own step 0 and over raw pixels, DAVIS J&F, the
teacher entropy (DINO family) or source entropy (BAM) of its last logged step; then the dense comparisons the issues
name (:data:`DENSE_PAIRS`) and DINO / iBOT against their step 0, as paired DAVIS differences with their standard
error. Both are measured on the demo's data and on a second, larger ShapesWorld (:func:`large_set`; the demo's split
has about 2.5 points of noise per k-NN number and 8 DAVIS objects, which hid the DINO family's gains on the CPU:
docs/demo.md, eighth round). Rows are measurements (no pass/fail). Everything the eval writes goes to the results
store (``$SSLBENCH_RESULTS``), so a lent device sends the k-NN and DAVIS records back with the benchmark ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sslcore.io import REPO_ROOT

# name -> (method, overrides on top of the method's ShapesWorld recipe)
RUNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bam": ("bam", ()),
    "dino": ("dino", ()),
    "ibot": ("ibot", ()),
    "sere": ("sere", ()),
    "sere-a0b0": ("sere", ("sere.alpha=0", "sere.beta=0")),
    "adclr": ("adclr", ()),
    "adclr-bidirectional": ("adclr", ("adclr.attention=bidirectional",)),
}
# (run, control) pairs compared on DAVIS: SERE against its recipe without relations (#12), ADCLR against DINO with
# the same budget (#13), and ADCLR's attention rule against the bidirectional one (#13)
DENSE_PAIRS = (("sere", "sere-a0b0"), ("adclr", "dino"), ("adclr", "adclr-bidirectional"))
KNN = "knn/shapesworld/top1@k20"
DAVIS = "davis/shapesworld-davis/J&F-Mean"
RECIPE_EPOCHS = 20  # what every *_shapes_tiny.yaml trains for
DAVIS_VIDEOS = 32  # validation videos of the larger set: about 60 objects for the paired DAVIS differences
# epoch counts inside a recipe that scale with its length (train.epochs itself and the k-NN monitor are set here)
STRETCHED = {
    "optim": ("warmup_epochs", "freeze_last_layer_epochs"),
    "dino": ("warmup_teacher_temp_epochs",),
    "bam": ("eps_warmup_epochs",),
    "ccrop": ("warmup_epochs", "interval"),
}


@dataclasses.dataclass
class Run:
    name: str
    method: str
    cfg: Any  # PretrainConfig
    process: subprocess.Popen | None = None
    status: str = "not started"  # finished / stopped at epoch N / failed (exit N)


def stretch(cfg: Any, epochs: int) -> Any:
    """``cfg`` trained for ``epochs`` with its epoch-based schedules scaled by ``epochs / RECIPE_EPOCHS``."""
    factor = epochs / RECIPE_EPOCHS
    changes: dict[str, Any] = {}
    for section, keys in STRETCHED.items():
        part = getattr(cfg, section, None)
        if part is None:
            continue
        scaled = {}
        for key in keys:
            value = getattr(part, key)
            scaled[key] = type(value)(round(value * factor)) if isinstance(value, int) else value * factor
        changes[section] = dataclasses.replace(part, **scaled)
    every = max(1, epochs // 5)  # five points of the online k-NN curve
    changes["train"] = dataclasses.replace(cfg.train, epochs=epochs)
    changes["knn"] = dataclasses.replace(cfg.knn, every_epochs=every)
    return dataclasses.replace(cfg, **changes)


def run_configs(
    out: Path, data: Path, *, epochs: int, device: str, quick: bool, seed: int, names: tuple[str, ...]
) -> list[Run]:
    """One :class:`Run` per name: the demo's recipe for the method (its plan's overrides), the run's own overrides,
    stretched to ``epochs``, on ``device``."""
    from evaluate.demo.pipeline import PLANS, pretrain_config
    from evaluate.orchestration.executors import worker_threads

    base = PLANS["quick" if quick else "default"]
    threads = worker_threads(len(names), dict(os.environ))  # side by side: each run its share of the CPU cores
    runs = []
    for name in names:
        method, extra = RUNS[name]
        plan = dataclasses.replace(
            base,
            pretrain_overrides=(*base.pretrain_overrides, *extra, f"train.device={device}", f"train.threads={threads}"),
        )
        cfg = pretrain_config(out, data, plan, seed, method, name)
        runs.append(Run(name, method, stretch(cfg, epochs)))
    return runs


def launch(run: Run, logs: Path) -> None:
    """``sslbench pretrain --config <the run's config>`` in its own process (its own session: stopped as a group)."""
    from sslcore.config import save_config

    out = Path(run.cfg.train.out)
    out.mkdir(parents=True, exist_ok=True)
    config = out.parent / f"{run.name}.yaml"
    save_config(run.cfg, config)
    cmd = [sys.executable, "-m", "sslbench_entry", "pretrain", "-q", "--config", str(config), "--resume"]
    with open(logs / f"pretrain-{run.name}.log", "w") as log:  # the child keeps its own descriptor
        run.process = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    run.status = "running"


def wait_all(runs: list[Run], deadline_s: float) -> None:
    """Wait for every run; stop (SIGTERM to its group, then SIGKILL) those still going after ``deadline_s``."""
    end = time.time() + deadline_s
    for run in runs:
        assert run.process is not None
        try:
            code = run.process.wait(timeout=max(0.0, end - time.time()))
            run.status = "finished" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(run.process.pid, sig)
                    run.process.wait(timeout=grace)
                    break
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    continue
            run.status = "stopped"


def offline(cfg: Any) -> Any:
    """``cfg`` for an export in this process: on the CPU, no k-NN monitor."""
    train = dataclasses.replace(cfg.train, device="cpu")
    return dataclasses.replace(cfg, train=train, knn=dataclasses.replace(cfg.knn, every_epochs=0))


def backbone_of(run: Run) -> Path | None:
    """The run's exported teacher backbone; for a run stopped at the deadline, exported here from its last checkpoint;
    None for a run that failed (its log says why) or stopped before its first checkpoint."""
    from pretrain.checkpoint import read_training_state
    from pretrain.engine import Trainer

    out = Path(run.cfg.train.out)
    if run.status == "finished":
        return out / "backbone.pth"
    if run.status != "stopped" or not (out / "checkpoint.pth").is_file():
        return None
    trainer = Trainer(offline(run.cfg))
    trainer.load_state_dict(read_training_state(out / "checkpoint.pth"))
    run.status = f"stopped at epoch {trainer.step // trainer.iters_per_epoch} of {run.cfg.train.epochs}"
    return trainer.export()


def last_step(log: Path) -> dict[str, Any]:
    """The last ``kind: step`` record of a pretraining log.jsonl ({} when none)."""
    last: dict[str, Any] = {}
    if log.is_file():
        with log.open() as fh:
            for line in fh:
                record = json.loads(line)
                if record.get("kind") == "step":
                    last = record
    return last


def entropy_note(step: dict[str, Any]) -> str:
    if step.get("teacher_num_outputs"):
        return f"teacher entropy {step['teacher_entropy'] / math.log(step['teacher_num_outputs']):.0%} of ln K"
    if step.get("diag/uniform_entropy"):
        return f"source entropy {step['diag/source_entropy'] / step['diag/uniform_entropy']:.0%} of uniform"
    return ""


def large_set(out: Path, *, quick: bool, seed: int, size: int) -> Path:
    """A second ShapesWorld from another seed than the training data, for sharper measurements: the ``large``
    preset's 9,750 train / 3,250 val classification images at the runs' input size, and :data:`DAVIS_VIDEOS` DAVIS
    validation videos of the demo's size (96 x 160, 24 frames); the ``tiny`` preset, 4 videos, for a rehearsal."""
    from evaluate.shapesworld.generate import PRESETS, generate

    demo = PRESETS["demo"]
    videos = {"davis_val": DAVIS_VIDEOS, "davis_train": 1, "davis_frames": demo.davis_frames,
              "davis_height": demo.davis_height, "davis_width": demo.davis_width}  # fmt: skip
    spec = dataclasses.replace(PRESETS["large"], cls_size=size, **videos)
    if quick:
        spec = dataclasses.replace(PRESETS["tiny"], cls_size=size, davis_val=4)
    root = out / "data" / "large"
    workers = max(1, min(8, (os.cpu_count() or 2) // 2))
    generate(root, spec, seed=seed + 1, parts=("classification", "davis"), workers=workers)
    return root


def per_object_jf(run_dir: Path) -> dict[str, float]:
    """{object: (J + F) / 2 in points} from a DAVIS run's ``per-sequence_results-val.csv`` (one row per object)."""
    import csv

    found = sorted(run_dir.rglob("per-sequence_results-val.csv"))
    if not found:
        return {}
    with found[-1].open() as fh:
        return {row["Sequence"]: 50.0 * (float(row["J-Mean"]) + float(row["F-Mean"])) for row in csv.DictReader(fh)}


def paired(a: dict[str, float], b: dict[str, float]) -> tuple[float, float, int, int, int]:
    """Mean of a - b over the objects both have, its standard error, and how many objects are higher / lower / in
    all (nan when fewer than 2)."""
    keys = sorted(set(a) & set(b))
    diffs = [a[k] - b[k] for k in keys]
    if len(diffs) < 2:
        return float("nan"), float("nan"), 0, 0, len(diffs)
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    return mean, sd / math.sqrt(len(diffs)), sum(d > 0 for d in diffs), sum(d < 0 for d in diffs), len(diffs)


def measure(
    checkpoints: dict[str, str], data: Path, out: Path, *, only: list[str], settings: dict, roots: dict | None = None
) -> tuple[Any, list[str]]:
    """``sslbench eval full --suite shapesworld --only ...`` on ``checkpoints``: (table indexed by checkpoint, ids of
    the jobs that failed)."""
    from evaluate.demo.pipeline import SUITE
    from evaluate.orchestration.full import run_full
    from evaluate.orchestration.full_report import run_frame
    from evaluate.reporting.tables import full_protocol_table

    result = run_full(checkpoints, SUITE, out, report=out / "report", data_root=data, roots=roots, only=only,
                      settings=settings, figures=False)  # fmt: skip
    table = full_protocol_table(run_frame(result.graph), list(checkpoints))
    table = table.set_index("checkpoint") if "checkpoint" in table.columns else table
    return table, [j.id for j in result.failed]


def run_learning(
    out: Path,
    *,
    device: str,
    epochs: int,
    deadline_s: float,
    quick: bool = False,
    names: tuple[str, ...] = tuple(RUNS),
    seed: int = 0,
) -> list[tuple[str, float, str, str, str]]:
    """Train, measure, compare; returns rows (figure, value, unit, ratio, note) for the acceptance table.

    The k-NN rows are measured twice: on the demo's own split (975 train / 330 val images, the numbers of the demo's
    report) and on :func:`large_set` (9,750 / 3,250: about 0.8 points of binomial noise instead of 2.5, and a bank
    ten times larger). The row's value is the large set's; the demo split's is in its note. DAVIS likewise (the
    demo's 4 videos, and the larger set's 32); the dense comparisons are paired per object of the larger set
    (:func:`paired`), with their standard error.
    """
    from evaluate.checkpoints.baselines import parse_baseline
    from evaluate.demo.pipeline import PIXEL_SIDE, PLANS, distinct_step0s, stage_data

    plan = PLANS["quick" if quick else "default"]
    started = time.time()
    data = stage_data(out, plan, seed)
    runs = run_configs(out, data, epochs=epochs, device=device, quick=quick, seed=seed, names=names)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for run in runs:
        launch(run, logs)
    size = runs[0].cfg.data.global_size
    large = large_set(out, quick=quick, seed=seed, size=size)  # while the runs train
    wait_all(runs, deadline_s - (time.time() - started))
    train_s = time.time() - started
    backbones = {run.name: backbone_of(run) for run in runs}
    # each recipe's network before its first step, as the demo's; the runs' own overrides do not change it
    step0, step0_of = distinct_step0s(out, data, plan, seed, tuple(dict.fromkeys(r.method for r in runs)))
    pixels = parse_baseline(f"baseline:raw-pixels:{PIXEL_SIDE}@{size}")
    checkpoints = {name: str(path) for name, path in backbones.items() if path is not None}
    checkpoints |= {name: str(path) for name, path in step0.items()}
    checkpoints[pixels.name] = pixels.spec
    settings = {k: v for k, v in plan.suite_settings.items() if k in ("knn", "davis")}
    demo, failed = measure(checkpoints, data, out / "eval", only=["knn", "davis"], settings=settings)
    roots = {"classification": str(large / "classification"), "davis": str(large / "davis")}
    wide, failed_large = measure(checkpoints, data, out / "eval-large", only=["knn", "davis"], settings=settings,
                                 roots=roots)  # fmt: skip
    objects = {name: per_object_jf(out / "eval-large" / "runs" / name / "davis") for name in checkpoints}

    def value(table: Any, name: str, column: str) -> float:
        ok = name in table.index and column in table.columns
        return float(table.loc[name, column]) if ok else float("nan")

    def knn_row(name: str, base: str | None, note: str) -> tuple[str, float, str, str, str]:
        knn, knn_demo = value(wide, name, KNN), value(demo, name, KNN)
        gains = [] if base is None else [f"{knn - value(wide, base, KNN):+.1f} vs step 0"]
        if name != pixels.name:
            gains.append(f"{knn - value(wide, pixels.name, KNN):+.1f} vs pixels")
        demo_gain = "" if base is None else f" ({knn_demo - value(demo, base, KNN):+.1f} vs step 0)"
        note = "; ".join(x for x in (f"demo split {knn_demo:.1f}{demo_gain}", note) if x)
        return f"{name}: k-NN top-1", knn, "%", ", ".join(gains), note

    finished = sum(1 for r in runs if r.status == "finished")
    rows = [("pretraining wall time", train_s, "s", f"{finished}/{len(runs)} finished", f"{epochs} epochs each")]

    def davis_note(name: str) -> str:
        return f"DAVIS J&F {value(wide, name, DAVIS):.1f} ({value(demo, name, DAVIS):.1f} on the demo's videos)"

    for name in step0:
        rows.append(knn_row(name, None, davis_note(name)))
    rows.append(knn_row(pixels.name, None, "no patch tokens: no DAVIS"))
    for run in runs:
        entropy = entropy_note(last_step(Path(run.cfg.train.out) / "log.jsonl"))
        note = "; ".join(x for x in (run.status, davis_note(run.name), entropy) if x)
        rows.append(knn_row(run.name, step0_of[run.method], note))
    pairs = [*DENSE_PAIRS, *((r.name, step0_of[r.method]) for r in runs if r.name in ("dino", "ibot"))]
    for name, control in pairs:
        if name in checkpoints and control in checkpoints:
            mean, se, higher, lower, count = paired(objects[name], objects[control])
            rows.append((f"DAVIS J&F {name} - {control}", mean, "points", f"SE {se:.2f}",
                         f"paired over {count} objects of the larger set: {higher} higher, {lower} lower"))  # fmt: skip
    if failed or failed_large:
        ids = failed + failed_large
        rows.append(("eval jobs failed", float(len(ids)), "", "", ", ".join(ids)[:200]))
    return rows
