"""Run a dense protocol end to end: convert the checkpoint, write the final mm config, train + evaluate, record.

Run directory ``<out>``::

    backbone.pth        converted, tensor-only backbone (what mm loads; weights_only-safe)
    config.py           the final mm config (dumped by mmengine), loaded by every rank
    overrides.json      every value changed from the named config (checkpoint, data root, work dir, options...)
    mm/                 mm's work_dir: logs, vis_data/scalars.json, checkpoints (epoch_*.pth / iter_*.pth)
    losses.json         training loss per logged iteration, read from mm's scalars
    metrics.json        the raw mm metrics of the final test (written by rank 0)
    timings.json        wall seconds of the training and of the test pass (rank 0)

Metrics become records in percent: mmdet's COCO metric returns fractions (``coco/bbox_mAP`` = 0.412), recorded as
``bbox_mAP`` = 41.2; mmseg's ``IoUMetric`` already returns percentages (``mIoU``, ``mAcc``, ``aAcc``).

Launch: in this process (``launcher="none"``) or ``torchrun --nproc_per_node N [--nnodes ...]`` running
:mod:`evaluate.protocols.dense.train` on every rank. ``resume=True`` continues from the last mm checkpoint in ``mm/`` (mmengine
resume; the checkpoint is read by :func:`evaluate.protocols.dense.register.safe_load`).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import numbers
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from evaluate.reporting.records import append_records, default_store, make_records
from sslcore.errors import ConfigError, DataError, SSLBenchError
from sslcore.io import (
    REPO_ROOT,
    atomic_torch_save,
    atomic_write_json,
    check_writable,
    current_meter,
    sha256_file,
    start_meter,
)

logger = logging.getLogger("sslbench")

CONFIG_DIR = REPO_ROOT / "downstream_configs"

# task -> default configs by backbone family, the dataset names of records, mm scope
TASKS: dict[str, dict[str, Any]] = {
    "coco": {
        "scope": "mmdet",
        "configs": {
            "vit_small": "coco/cascade_mask_rcnn_vit_small_giou_4conv1f_coco_1x",
            "vit_base": "coco/cascade_mask_rcnn_vit_base_giou_4conv1f_coco_1x",
            "shapesworld": "coco/cascade_mask_rcnn_vit_shapesworld",
        },
        "dataset": "coco2017",
    },
    "ade20k": {
        "scope": "mmseg",
        "configs": {
            "vit_small": "ade20k/upernet_vit_small_512_ade20k_160k",
            "vit_base": "ade20k/upernet_vit_base_512_ade20k_160k",
            "shapesworld": "ade20k/upernet_vit_shapesworld",
        },
        "dataset": "ade20k",
    },
    "voc": {"scope": "mmseg", "configs": {"vit_small": "voc/upernet_vit_small_512_voc12aug_20k"}, "dataset": "voc2012"},
    "imagenet-s": {
        "scope": "mmseg",
        "configs": {"vit_small": "imagenets/fcn_vit_small_224_imagenets919_semi"},
        "dataset": "imagenet-s919",
    },
}
COCO_KEYS = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")


def is_converted(payload: Any) -> bool:
    return isinstance(payload, dict) and set(payload) == {"state_dict", "meta"} and "arch" in payload["meta"]


def convert_checkpoint(path: str | Path, out: str | Path, which: str | None = None) -> dict[str, Any]:
    """Write the converted backbone file ``out`` for ``path`` and return the checkpoint ``info`` of the records.

    An already converted file is copied. Anything else goes through :func:`evaluate.checkpoints.load_backbone`.
    """
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise SSLBenchError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a plain tensor file: the adapter knows the other formats
        payload = None
    if is_converted(payload):
        meta = payload["meta"]
        info = {
            "path": str(path.resolve()),
            "sha256": meta.get("source_sha256") or sha256_file(path),
            "format": meta.get("format", "sslbench-converted"),
            "arch": meta["arch"],
            "pos_interp": meta.get("pos_interp", "dino"),
            "which": meta.get("which"),
        }
        if path.resolve() != out.resolve():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)
    else:
        from evaluate.checkpoints import load_backbone, require_vit
        from evaluate.checkpoints.cli import converted_payload

        loaded = load_backbone(path, **({"which": which} if which else {}))
        require_vit(loaded.model, "dense evaluation (detection/segmentation)", path)
        info = dict(loaded.info)
        state, meta = converted_payload(loaded)
        atomic_torch_save({"state_dict": state, "meta": meta}, out)
    info.setdefault("name", path.stem)
    return info


def resolve_config(task: str, config: str | None, arch: dict[str, Any], data_root: Path) -> Path:
    """The config file: a path, a name under downstream_configs/, or the task's default for the data and arch."""
    if task not in TASKS:
        raise SSLBenchError(f"task: unknown value {task!r} (valid: {', '.join(TASKS)})")
    if config is None:
        choices = TASKS[task]["configs"]
        if (data_root.parent / "shapesworld.json").is_file() and "shapesworld" in choices:
            config = choices["shapesworld"]
        else:
            family = "vit_base" if arch.get("embed_dim", 384) >= 768 else "vit_small"
            config = choices.get(family) or choices["vit_small"]
    path = Path(config)
    if not path.suffix:
        path = CONFIG_DIR / f"{config}.py"
    if not path.is_file():
        raise SSLBenchError(f"--config: {config!r} not found (looked for {path})")
    return path


def load_mm_config(path: str | Path) -> Any:
    """``mmengine.Config.fromfile`` without yapf: mmengine otherwise formats the whole config at every dump and log
    line (7 times per run, about 4 s: more than a tiny ShapesWorld run trains). The dumped files are the same Python,
    unformatted. mmengine 0.10.7 drops ``format_python_code=False`` on its non-lazy path, hence the attribute."""
    from mmengine.config import Config

    try:
        cfg = Config.fromfile(str(path), format_python_code=False)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable mm config ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if getattr(cfg, "_format_python_code", False):
        object.__setattr__(cfg, "_format_python_code", False)
    return cfg


def config_digest(path: str | Path) -> str:
    """sha256 of a config file's text and, recursively, of every ``_base_`` file it names (what the job graph puts in a
    dense job's key, so that editing a config, or a base it inherits, makes its old records stale). Bases inside a
    package (``mmdet::...``) count by name: the package's pinned version fixes their text."""
    import ast
    import hashlib

    digest, todo, seen = hashlib.sha256(), [Path(path)], set()
    while todo:
        file = todo.pop(0).resolve()
        if file in seen:
            continue
        seen.add(file)
        if not file.is_file():
            raise SSLBenchError(f"{path}: config base {file} not found")
        text = file.read_text()
        digest.update(f"{file.name}\n{text}\n".encode())
        for node in ast.parse(text).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_base_" for t in node.targets):
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:  # a computed _base_: its own text (hashed above) is all we can follow
                    continue
                for base in [value] if isinstance(value, str) else value:
                    if "::" in base:  # a package's own config (mmdet::...): pinned by the package version
                        digest.update(f"{base}\n".encode())
                    else:
                        todo.append(file.parent / base)
    return digest.hexdigest()


def _replace_type(node: Any, old: str, new: str) -> int:
    count = 0
    if isinstance(node, dict):
        if node.get("type") == old:
            node["type"] = new
            count += 1
        for value in node.values():
            count += _replace_type(value, old, new)
    elif isinstance(node, list | tuple):
        for value in node:
            count += _replace_type(value, old, new)
    return count


def _leaf_datasets(dataset: dict) -> list[dict]:
    """The datasets that read files, through ConcatDataset / RepeatDataset wrappers."""
    if "datasets" in dataset:
        return [leaf for child in dataset["datasets"] for leaf in _leaf_datasets(child)]
    if "dataset" in dataset:
        return _leaf_datasets(dataset["dataset"])
    return [dataset]


def _set_data_root(dataset: dict, root: str) -> None:
    """Set ``data_root`` on a dataset config, through ConcatDataset / RepeatDataset wrappers (VOC aug)."""
    for leaf in _leaf_datasets(dataset):
        leaf["data_root"] = root


def _check_coco_json(path: Path, parse_below: int = 64 << 20) -> None:
    """A COCO annotation file: parsed (with ``images`` and ``annotations``) when under ``parse_below`` bytes; a larger
    one (COCO's train file is 450 MB) only has to start like a JSON object, and pycocotools reads the rest."""
    if path.stat().st_size >= parse_below:
        with open(path, "rb") as handle:
            if handle.read(4096).lstrip()[:1] != b"{":
                raise DataError(f"{path}: not a JSON annotation file")
        return
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DataError(f"{path}: not a JSON annotation file") from None
    if not isinstance(head, dict) or not {"images", "annotations"} <= set(head):
        raise DataError(f"{path}: a COCO annotation file needs 'images' and 'annotations'")


def check_options(cfg: Any, options: dict[str, Any] | None, config_path: Path) -> None:
    """Every ``--cfg-options`` key names a place in the config: each part before the last exists (a mapping key or a
    list index), and the first is a config key or an argument of mmengine's Runner (``randomness``, ...); the last may
    be new (a keyword argument the config leaves at its default). mmengine itself adds any key, so a typo such as
    ``optim_wraper.optimizer.lr`` would otherwise train at the config's lr. Raises :class:`ConfigError` naming the
    key, the missing part and the keys there."""
    import inspect

    from mmengine.runner import Runner

    runner_args = set(inspect.signature(Runner.__init__).parameters) - {"self"}
    for key in options or {}:
        parts = key.split(".")
        if parts[0] not in cfg and parts[0] in runner_args:
            continue  # a Runner argument the config does not set: all of it is new
        node: Any = getattr(cfg, "_cfg_dict", cfg)  # an mmengine Config holds a ConfigDict (a dict)
        for depth, part in enumerate(parts[:-1] if len(parts) > 1 else parts):
            where = ".".join(parts[:depth]) or "the top level"
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, (list, tuple)) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
                node = node[int(part)]
            else:
                if isinstance(node, dict):
                    near = difflib.get_close_matches(part, list(map(str, node)), n=3)
                    there = (
                        f"nearest: {', '.join(near)}" if near else f"keys there: {', '.join(sorted(map(str, node)))}"
                    )
                else:
                    there = f"a {type(node).__name__} of {len(node)}" if hasattr(node, "__len__") else "a value"
                raise ConfigError(
                    f"--cfg-options {key}: no {part!r} under {where} of {config_path.name} ({there})"[:300]
                )


def check_data_layout(config_path: Path, data_root: Path, options: dict[str, Any] | None = None) -> None:
    """Before any work: every annotation file and image/label folder the config's loaders read exists under
    ``data_root`` (folders non-empty; COCO-style JSON annotations parse, with ``images`` and ``annotations``).
    A missing or malformed part is one :class:`~sslcore.errors.DataError` naming it, instead of a crash inside
    mmengine or pycocotools after the run directory was written. ``options``: the run's ``--cfg-options``, which may
    point the loaders elsewhere (checked first: :func:`check_options`)."""
    cfg = load_mm_config(config_path)
    check_options(cfg, options, config_path)
    cfg.merge_from_dict(dict(options or {}))
    for split in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(split)
        if loader is None:
            continue
        for dataset in _leaf_datasets(loader["dataset"]):
            ann = dataset.get("ann_file")
            if ann:
                path = data_root / ann
                if not path.is_file():
                    raise DataError(f"{path}: annotation file not found ({split} of {config_path.name})")
                if path.suffix == ".json":
                    _check_coco_json(path)
            for prefix in (dataset.get("data_prefix") or {}).values():
                folder = data_root / prefix
                if not folder.is_dir() or not any(folder.iterdir()):
                    raise DataError(f"{folder}: missing or empty ({split} of {config_path.name})")


# the parts that read the ViT's feature maps; with the simple feature pyramid every level has the ViT's width
WIDTH_KEYS = (("neck", "in_channels"), ("decode_head", "in_channels"), ("auxiliary_head", "in_channels"))


def fit_width(model: Any, width: int) -> dict[str, str]:
    """Give the parts of ``model`` (an mm config dict) that read the backbone's maps the checkpoint's ``width``.

    A config is written for one ViT width (384 for ViT-S, 64 for ShapesWorld's vit_pico); a value that is one uniform
    width (an int, or a list of equal ints) different from ``width`` is replaced in place; returns the changes
    (``{"model.neck.in_channels": "[64, ...] -> [32, ...] ..."}``). Mixed lists (a config for another kind of
    backbone) are left alone."""
    changes = {}
    for part, key in WIDTH_KEYS:
        node = model.get(part)
        if not isinstance(node, dict) or key not in node:
            continue
        value = node[key]
        levels = list(value) if isinstance(value, (list, tuple)) else None
        uniform = value if isinstance(value, int) else (levels[0] if levels and len(set(levels)) == 1 else None)
        if uniform is None or uniform == width:
            continue
        node[key] = width if levels is None else [width] * len(levels)
        changes[f"model.{part}.{key}"] = f"{value} -> {node[key]} (the checkpoint's width)"
    return changes


def build_config(
    config_path: Path,
    backbone: Path,
    data_root: Path,
    work_dir: Path,
    options: dict[str, Any] | None = None,
    distributed: bool = False,
    amp: bool = False,
    width: int | None = None,
):
    """Load ``config_path`` and apply the run's overrides; returns (mmengine Config, overrides dict). ``width``: the
    checkpoint's embedding width (:func:`fit_width`; explicit ``options`` still win)."""
    cfg = load_mm_config(config_path)
    root = str(data_root.resolve()) + "/"
    overrides: dict[str, Any] = {
        "model.backbone.checkpoint": str(backbone.resolve()),
        "model.backbone.arch": None,
        "work_dir": str(work_dir.resolve()),
    }
    loaders = [s for s in ("train_dataloader", "val_dataloader", "test_dataloader") if cfg.get(s) is not None]
    for split in loaders:
        overrides[f"{split}.dataset.data_root"] = root
    for split, loader in (("val_evaluator", "val_dataloader"), ("test_evaluator", "test_dataloader")):
        evaluator = cfg.get(split)
        if isinstance(evaluator, dict) and "ann_file" in evaluator:
            overrides[f"{split}.ann_file"] = root + cfg[loader]["dataset"]["ann_file"]
    if amp:
        overrides["optim_wrapper.type"] = "AmpOptimWrapper"
    fitted = fit_width(cfg.model, width) if width else {}
    overrides.update(options or {})
    cfg.merge_from_dict({k: v for k, v in overrides.items() if v is not None and ".data_root" not in k})
    overrides.update({k: v for k, v in fitted.items() if k not in overrides})  # for overrides.json; options win
    for split in loaders:
        _set_data_root(cfg[split]["dataset"], root)
    cfg.model.backbone.pop("arch", None)
    if not distributed:
        swapped = _replace_type(cfg.model, "SyncBN", "BN")
        if swapped:
            overrides["SyncBN->BN (single process)"] = swapped
    if note := schedule_mismatch(cfg):
        logger.warning("%s: %s", config_path.name, note)
        overrides["schedule mismatch"] = note
    return cfg, overrides


def schedule_mismatch(cfg: Any) -> str | None:
    """A note when an iteration-based run and its iteration-based lr schedule end at different iterations (e.g.
    ``--cfg-options train_cfg.max_iters=N`` alone: the poly decay of a 160k config is then cut short, or ends early
    and trains on at its final lr), else None. Epoch-based runs are not checked."""
    total = (cfg.get("train_cfg") or {}).get("max_iters")
    schedulers = cfg.get("param_scheduler") or []
    schedulers = [schedulers] if isinstance(schedulers, dict) else schedulers
    ends = [s["end"] for s in schedulers if s.get("by_epoch", True) is False and s.get("end") is not None]
    if not total or not ends or max(ends) == total:
        return None
    return (
        f"the lr schedule ends at iteration {max(ends)} but train_cfg.max_iters={total}; set both (param_scheduler's "
        "end with --cfg-options param_scheduler.N.end=...) for a schedule that ends with training"
    )


def train_scalars(work_dir: Path, *keys: str) -> list[dict[str, float]]:
    """The training log rows of an mm work dir (``*/vis_data/scalars.json``) that carry every one of ``keys``, as
    ``{"step": int, key: float, ...}`` in log order (``train_scalars(d, "loss")`` is the loss history)."""
    rows = []
    for scalars in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in scalars.read_text().splitlines():
            entry = json.loads(line)
            if "step" in entry and all(k in entry for k in keys):
                rows.append({"step": int(entry["step"]), **{k: float(entry[k]) for k in keys}})
    return rows


@contextlib.contextmanager
def _keep_cuda_peaks(peaks: list[float]) -> Iterator[None]:
    """mmengine's log processor reads torch's CUDA peak and resets it at every log line (train, val and test; only
    the train lines reach scalars.json), so after a run the counter holds the last interval's peak alone. While this
    is active each reading is appended to ``peaks`` and handed to the run's meter before the reset."""
    from mmengine.runner import log_processor

    original = log_processor.get_max_cuda_memory

    def read_then_reset(device=None):  # mmengine's signature
        mb = original(device)
        peaks.append(float(mb))
        if (meter := current_meter()) is not None:
            meter.note_cuda_peak(mb)
        return mb

    log_processor.get_max_cuda_memory = read_then_reset
    try:
        yield
    finally:
        log_processor.get_max_cuda_memory = original


def run_mm(config_file: str | Path, launcher: str = "none", resume: bool = False) -> dict[str, float]:
    """Train and test with mmengine's Runner on this process (one rank); rank 0 writes metrics.json, losses.json and
    timings.json (wall seconds of the training and of the test pass; ``peak_cuda_mb``: rank 0's CUDA peak over both,
    in MiB, where CUDA ran)."""
    from mmengine.dist import get_rank
    from mmengine.runner import Runner

    cfg = load_mm_config(config_file)
    trusted = os.environ.get("SSLBENCH_DENSE_TRUSTED_DIRS", "")
    if str(Path(cfg.work_dir).resolve()) not in trusted.split(os.pathsep):
        os.environ["SSLBENCH_DENSE_TRUSTED_DIRS"] = os.pathsep.join(
            filter(None, [trusted, str(Path(cfg.work_dir).resolve())])
        )
    cfg.launcher = launcher
    cfg.resume = resume
    runner = Runner.from_cfg(cfg)
    peaks: list[float] = []
    with _keep_cuda_peaks(peaks):
        start = time.perf_counter()
        runner.train()
        trained = time.perf_counter()
        metrics = runner.test()
        tested = time.perf_counter()
    run_dir = Path(config_file).parent
    if get_rank() == 0:
        # mmseg's IoUMetric returns numpy float32 scalars (not ``float``): keep every real number, numpy's included,
        # or metrics.json (what a torchrun launch reads back) would lose mIoU
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}
        atomic_write_json(run_dir / "losses.json", train_scalars(Path(cfg.work_dir), "loss"))
        atomic_write_json(run_dir / "metrics.json", clean)
        timings = {"train_s": trained - start, "test_s": tested - trained}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            timings["peak_cuda_mb"] = max([*peaks, torch.cuda.max_memory_allocated() / 2**20])
        atomic_write_json(run_dir / "timings.json", timings)
    return metrics


def to_percent(task: str, metrics: dict[str, float]) -> dict[str, float]:
    """Record metric names and percent values (see the module docstring)."""
    out: dict[str, float] = {}
    if TASKS[task]["scope"] == "mmdet":
        for kind in ("bbox", "segm"):
            for key in COCO_KEYS:
                value = metrics.get(f"coco/{kind}_{key}")
                if value is not None and value >= 0:
                    out[f"{kind}_{key}"] = round(100.0 * value, 3)
    else:
        for key in ("mIoU", "mAcc", "aAcc"):
            if key in metrics:
                out[key] = float(metrics[key])
    if not out:
        raise SSLBenchError(f"mm evaluation returned no {task} metric (got {sorted(metrics)})")
    return out


def effective_batch(cfg: Any, nproc: int) -> dict[str, Any]:
    """{"effective_batch", "reference_batch", "lr_scaled"}: the batch this run trains with (processes x per-process
    batch) against the protocol's total batch (``auto_scale_lr.base_batch_size``). A mismatch is logged as a warning
    (the lr is the protocol's unless ``auto_scale_lr.enable=True``, which mmengine scales linearly) and recorded."""
    per_process = int(cfg.train_dataloader.get("batch_size", 1))
    scale = cfg.get("auto_scale_lr") or {}
    reference = scale.get("base_batch_size")
    out = {"effective_batch": per_process * nproc, "reference_batch": reference, "lr_scaled": bool(scale.get("enable"))}
    if reference and reference != out["effective_batch"]:
        logger.warning(
            "effective batch %d (%d process(es) x %d) differs from the protocol's %d; the lr is %s "
            "(auto_scale_lr.enable=True scales it linearly); recorded as settings.effective_batch",
            out["effective_batch"],
            nproc,
            per_process,
            reference,
            "scaled linearly" if out["lr_scaled"] else "NOT rescaled",
        )
    return out


def write_run_config(
    task: str,
    checkpoint: str | Path,
    data_root: Path,
    out: Path,
    config: str | None = None,
    options: dict[str, Any] | None = None,
    distributed: bool = False,
    amp: bool = False,
    which: str | None = None,
) -> tuple[dict[str, Any], Path, Any, dict[str, Any]]:
    """A run's set-up: convert the checkpoint to ``<out>/backbone.pth``, resolve the config for its width and the
    data, apply the run's overrides and write ``<out>/config.py`` and ``<out>/overrides.json``.

    Returns:
        (checkpoint info, the config file resolved, the mm Config written, the overrides applied).
    """
    out.mkdir(parents=True, exist_ok=True)
    backbone = out / "backbone.pth"
    info = convert_checkpoint(checkpoint, backbone, which)
    config_path = resolve_config(task, config, info["arch"], data_root)
    width = info["arch"].get("embed_dim")
    cfg, overrides = build_config(config_path, backbone, data_root, out / "mm", options, distributed, amp, width)
    cfg.dump(str(out / "config.py"))
    atomic_write_json(out / "overrides.json", {"config": str(config_path), "overrides": overrides})
    return info, config_path, cfg, overrides


def run_eval(
    task: str,
    checkpoint: str | Path,
    data_root: str | Path,
    out: str | Path,
    config: str | None = None,
    options: dict[str, Any] | None = None,
    nproc: int = 1,
    torchrun_args: list[str] | None = None,
    resume: bool = False,
    amp: bool = False,
    which: str | None = None,
    name: str | None = None,
) -> list:
    """The whole protocol (see the module docstring); returns the appended records."""
    started = time.time()
    start_meter()  # peak memory of this run (mm's training runs in this process)
    out, data_root = Path(out), Path(data_root)
    if not data_root.is_dir():
        raise SSLBenchError(f"--data-root: {data_root} is not a directory")
    if not Path(checkpoint).is_file():
        raise SSLBenchError(f"{checkpoint}: checkpoint not found")
    if nproc < 1:
        raise SSLBenchError(f"--nproc {nproc}: must be >= 1")
    check_writable(out, "--out")
    check_writable(default_store(), "results store")
    distributed = nproc > 1 or bool(torchrun_args)
    check_data_layout(resolve_config(task, config, {}, data_root), data_root, options)  # same data at any width
    if distributed and not torch.cuda.is_available():
        raise SSLBenchError(
            f"--nproc {nproc}: multi-process runs need GPUs (mmengine 0.10.7's pytorch launcher binds every rank to a "
            "CUDA device); use --nproc 1 on CPU"
        )
    info, config_path, cfg, overrides = write_run_config(
        task, checkpoint, data_root, out, config, options, distributed, amp, which
    )
    if name:
        info["name"] = name
    batch = effective_batch(cfg, nproc)
    final = out / "config.py"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    if distributed:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *(torchrun_args or [])]
        cmd += ["-m", "evaluate.protocols.dense.train", str(final), "--launcher", "pytorch"] + (
            ["--resume"] if resume else []
        )
        logger.info("launching %s", " ".join(cmd))
        if subprocess.run(cmd, env=env, check=False).returncode:
            raise SSLBenchError(f"{final}: distributed mm run failed (logs under {out / 'mm'})")
        metrics = json.loads((out / "metrics.json").read_text())
        peak = json.loads((out / "timings.json").read_text()).get("peak_cuda_mb")
        if peak is not None and (meter := current_meter()) is not None:
            meter.note_cuda_peak(peak)  # rank 0's, measured in its process
    else:
        metrics = run_mm(final, "none", resume)
    values = to_percent(task, metrics)
    shapes = (data_root.parent / "shapesworld.json").is_file()
    settings = {
        "config": config_path.stem,
        "config_file": str(config_path),
        "final_config": str(final),
        "overrides": overrides,
        "nproc": nproc,
        "amp": amp,
        **batch,
    }
    records = make_records(
        task,
        f"shapesworld-{task}" if shapes else TASKS[task]["dataset"],
        "val",
        values,
        checkpoint=info,
        settings=settings,
        seed=cfg.get("randomness", {}).get("seed"),
        started=started,
    )
    append_records(records, name=task)
    return records
