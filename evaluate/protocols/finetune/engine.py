"""The fine-tuning loop: timm optimiser/scheduler/mixup/EMA pieces, DDP, AMP, epoch checkpoints and exact resume.

One epoch: reseed from (seed, epoch, rank) (:func:`evaluate.protocols.finetune.data.seed_epoch`), set the learning rate from
timm's cosine scheduler (per epoch for DeiT, per iteration for MAE/BEiT), mixup the batch, forward under autocast,
backward (GradScaler under fp16), optional gradient clipping, optimiser step, EMA update. Every ``eval_every`` epochs
(and after the last) the model (and, if asked, the EMA) is scored on the whole test split: ranks read disjoint
strided shards and their hit counts are summed, so the accuracy is exact for any number of processes.

**Checkpoints.** After each epoch rank 0 writes ``<out>/checkpoint.pth`` atomically (model, optimiser, GradScaler,
EMA, the epoch history and the resume-relevant settings). A run started again on the same ``out`` continues from it;
because every epoch is a function of the state at its start, a run killed at any point (``kill -9``) and resumed
ends with the same weights, bit for bit, as an uninterrupted one (same thread count, same device). Settings that
change the result must match; the first that differs is named.

**Log.** ``<out>/log.jsonl``: a ``meta`` line, ``step`` lines (every ``log_every`` steps: loss, lr, fractional epoch)
and ``epoch`` lines (mean loss, lr, ``top1``/``top5``, images/s); ``sslbench plot curves --log`` reads it. Lines
re-written after a resume supersede the earlier ones when the log is read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from evaluate.protocols.features import autocast_context, resolve_precision
from evaluate.protocols.finetune.config import RESUME_FREE_KEYS, FinetuneConfig
from evaluate.protocols.finetune.data import Split, mixup_and_loss, seed_epoch, test_loader, train_loader
from evaluate.protocols.layer_decay import param_groups
from sslcore.config import to_dict
from sslcore.errors import SSLBenchError
from sslcore.io import atomic_torch_save

logger = logging.getLogger("sslbench")
CHECKPOINT = "checkpoint.pth"


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def effective_lr(cfg: FinetuneConfig, global_batch: int) -> float:
    """``lr * global_batch / lr_batch_ref`` (DeiT/iBOT 512, MAE 256), or ``lr`` when ``lr_batch_ref`` is None."""
    ref = cfg.optim.lr_batch_ref
    return cfg.optim.lr if ref is None else cfg.optim.lr * global_batch / ref


def build_optimizer(model: nn.Module, cfg: FinetuneConfig, lr: float) -> torch.optim.Optimizer:
    """timm ``create_optimizer_v2`` over the groups of :func:`evaluate.protocols.layer_decay.param_groups` (decay 1 = off).

    Groups carry the base ``lr`` and ``lr_scale``; timm's scheduler multiplies the scale in at every update.
    """
    from timm.optim import create_optimizer_v2

    depth = len(model.backbone.blocks)
    decay = cfg.optim.layer_decay if cfg.optim.layer_decay is not None else 1.0

    def groups(module: nn.Module) -> list[dict]:
        return param_groups(module.named_parameters(), lr, cfg.optim.weight_decay, decay, depth, scale_lr=False)

    kwargs: dict[str, Any] = {"eps": cfg.optim.eps} if cfg.optim.opt == "adamw" else {"momentum": cfg.optim.momentum}
    return create_optimizer_v2(
        model, cfg.optim.opt, lr=lr, weight_decay=cfg.optim.weight_decay, param_group_fn=groups, **kwargs
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: FinetuneConfig, steps_per_epoch: int) -> Any:
    """timm cosine with linear warm-up from ``warmup_lr``.

    ``warmup_prefix=False`` (DeiT, timm): lr(e) = min + (lr - min)(1 + cos(pi e / E)) / 2 after the warm-up, the
    cosine counted from epoch 0. ``warmup_prefix=True`` (MAE ``lr_sched.py``, BEiT): the cosine runs over the E - W
    epochs after the warm-up, lr(e) = min + (lr - min)(1 + cos(pi (e - W) / (E - W))) / 2, so timm's cosine length
    is E - W there (timm does not shorten it by itself).
    """
    from timm.scheduler import create_scheduler_v2

    warmup = cfg.optim.warmup_epochs
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=cfg.epochs - warmup if cfg.optim.warmup_prefix else cfg.epochs,
        min_lr=cfg.optim.min_lr,
        warmup_lr=cfg.optim.warmup_lr,
        warmup_epochs=cfg.optim.warmup_epochs,
        warmup_prefix=cfg.optim.warmup_prefix,
        step_on_epochs=cfg.optim.sched_on == "epoch",
        updates_per_epoch=steps_per_epoch,
    )
    return scheduler


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, device: torch.device, precision: str) -> dict[str, float]:
    """Top-1/top-5 (%) and mean cross-entropy over the loader's images, summed over ranks."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # hits@1, hits@5, loss sum, count
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast_context(device, precision):
            logits = model(images)
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == labels[:, None]
        sums += torch.stack(
            [
                hits[:, 0].sum().double(),
                hits.any(dim=1).sum().double(),
                nn.functional.cross_entropy(logits, labels, reduction="sum").double(),
                torch.tensor(float(len(labels)), dtype=torch.float64, device=device),
            ]
        )
    if world()[1] > 1:
        dist.all_reduce(sums)
    count = max(float(sums[3]), 1.0)
    return {
        "top1": 100.0 * float(sums[0]) / count,
        "top5": 100.0 * float(sums[1]) / count,
        "loss": float(sums[2]) / count,
    }


def resume_settings(cfg: FinetuneConfig, world_size: int) -> dict[str, Any]:
    """The settings a resumed run must share with the run that wrote the checkpoint."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in RESUME_FREE_KEYS}
    settings["world_size"] = world_size
    return settings


def _first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if a == b else f"{prefix.rstrip('.')} ({a!r} in the checkpoint, {b!r} now)"


@dataclasses.dataclass
class Loop:
    """Everything one fine-tuning run holds; :meth:`fit` runs the remaining epochs."""

    cfg: FinetuneConfig
    model: nn.Module  # the FinetuneClassifier (unwrapped)
    train: Split
    test: Split
    out: Path
    device: torch.device
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    start_epoch: int = 0

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.rank, self.world_size = world()
        if cfg.batch_size % self.world_size:
            raise SSLBenchError(f"batch_size={cfg.batch_size} is not divisible by the {self.world_size} processes")
        self.batch = cfg.batch_size // self.world_size
        self.precision = resolve_precision(self.device, cfg.precision)
        self.model.to(self.device)
        self.net: nn.Module = self.model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.loader = train_loader(
            self.train, self.batch, self.rank, self.world_size, cfg.aug, cfg.num_workers, cfg.seed, self.device
        )
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise SSLBenchError(
                f"batch_size={cfg.batch_size}: larger than the {len(self.train.labels)} training images "
                f"(per process {self.batch}; the last partial batch is dropped)"
            )
        self.test_loader = test_loader(self.test, self.batch, self.rank, self.world_size, cfg.num_workers, self.device)
        self.lr = effective_lr(cfg, cfg.batch_size)
        self.optimizer = build_optimizer(self.model, cfg, self.lr)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.mixup, self.criterion = mixup_and_loss(cfg.aug, len(self.train.classes))
        self.ema = None
        if cfg.ema.enabled:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=cfg.ema.decay)
        self.settings = resume_settings(cfg, self.world_size)

    # ---------------------------------------------------------------------------------------------- checkpoints
    def save(self, epoch: int) -> None:
        if self.rank != 0:
            return
        state = {
            "format": "sslbench-finetune",
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "history": self.history,
            "settings": self.settings,
        }
        atomic_torch_save(state, self.out / CHECKPOINT)

    def load(self) -> bool:
        """Restore ``<out>/checkpoint.pth`` if present; returns whether it did."""
        path = self.out / CHECKPOINT
        if not (self.cfg.resume and path.is_file()):
            return False
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a checkpoint is renamed into place whole, so this is another file
            raise SSLBenchError(f"{path}: cannot read the fine-tuning checkpoint ({exc})") from None
        if not isinstance(state, dict) or state.get("format") != "sslbench-finetune":
            raise SSLBenchError(f"{path}: not a fine-tuning checkpoint; use another --out or resume=false")
        diff = _first_difference(state["settings"], self.settings)
        if diff:
            raise SSLBenchError(f"{path}: cannot resume, a setting differs: {diff}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"])
        if self.rank == 0:
            logger.info("resuming %s from epoch %d", path, self.start_epoch)
        return True

    # ---------------------------------------------------------------------------------------------- logging
    def log(self, line: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, sort_keys=True) + "\n")

    # ---------------------------------------------------------------------------------------------- training
    def train_epoch(self, epoch: int) -> dict[str, float]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        seed_epoch(cfg.seed, epoch, self.rank)
        self.loader.sampler.set_epoch(epoch)
        self.loader.generator.manual_seed(cfg.seed * 1_000_003 + epoch)
        if cfg.optim.sched_on == "epoch":
            self.scheduler.step(epoch)
        self.net.train()
        losses, started = [], time.time()
        bar = tqdm(self.loader, desc=f"finetune epoch {epoch}", disable=not cfg.progress or self.rank != 0, leave=False)
        for it, (images, labels) in enumerate(bar):
            step = epoch * self.steps_per_epoch + it
            if cfg.optim.sched_on == "step":
                self.scheduler.step_update(step)
            value = self.step(images, labels, step, epoch, it)
            losses.append(value)
            if self.rank == 0 and (it % max(1, self.steps_per_epoch // 20) == 0):
                self.log({"kind": "step", "step": step, "epoch": epoch + it / self.steps_per_epoch,
                          "loss": losses[-1], "lr": self.current_lr()})  # fmt: skip
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        seconds = time.time() - started
        images_seen = self.steps_per_epoch * cfg.batch_size
        return {"loss": sum(losses) / len(losses), "lr": self.current_lr(), "images_per_s": images_seen / seconds}

    def step(self, images: torch.Tensor, labels: torch.Tensor, step: int, epoch: int = 0, it: int = 0) -> float:
        """One optimisation step on a batch (B, 3, H, W) / (B,): mixup, forward, backward, clip, step, EMA; the loss."""
        cfg = self.cfg
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        targets = labels
        if self.mixup is not None:
            images, targets = self.mixup(images, labels)
        with autocast_context(self.device, self.precision):
            loss = self.criterion(self.net(images), targets)
        value = loss.item()
        if not math.isfinite(value):
            raise SSLBenchError(f"non-finite loss {value} at epoch {epoch}, step {it}; lower optim.lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.optim.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, step=step)
        return value

    def current_lr(self) -> float:
        """The learning rate of the head (the group with the largest ``lr_scale``)."""
        return max(g["lr"] for g in self.optimizer.param_groups)

    def fit(self) -> list[dict[str, Any]]:
        """Train the remaining epochs; returns the history (one dict per epoch, with ``top1`` where evaluated)."""
        cfg = self.cfg
        if self.start_epoch == 0 and self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "log.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log
            self.log({"kind": "meta", "protocol": "finetune", "recipe": cfg.recipe, "config": to_dict(cfg),
                      "world_size": self.world_size, "effective_lr": self.lr})  # fmt: skip
        for epoch in range(self.start_epoch, cfg.epochs):
            row: dict[str, Any] = {"kind": "epoch", "epoch": epoch, **self.train_epoch(epoch)}
            if (epoch + 1) % max(cfg.eval_every, 1) == 0 or epoch + 1 == cfg.epochs:
                row.update(evaluate(self.model, self.test_loader, self.device, self.precision))  # no DDP sync
                if self.ema is not None and cfg.ema.evaluate:
                    ema = evaluate(self.ema.module, self.test_loader, self.device, self.precision)
                    row.update({f"ema_{k}": v for k, v in ema.items()})
                if self.rank == 0:
                    logger.info("epoch %d: top1 %.2f top5 %.2f", epoch, row["top1"], row["top5"])
            self.history.append(row)
            self.log(row)
            self.save(epoch + 1)
        return self.history


def summarize(history: list[dict[str, Any]], report: str) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics from the evaluated epochs: ``top1_max``, ``top1_last``, ``top1`` (= the ``report`` one), ``top5`` (at
    the epoch of ``top1``), and the EMA's when evaluated; plus {"best_epoch", "last_epoch"} (1-based)."""
    rows = [r for r in history if "top1" in r]
    if not rows:
        raise SSLBenchError("fine-tuning ran no evaluation (no epochs?)")
    best = max(rows, key=lambda r: r["top1"])  # first maximum
    last = rows[-1]
    chosen = best if report == "max" else last
    metrics = {"top1": chosen["top1"], "top5": chosen["top5"], "top1_max": best["top1"], "top1_last": last["top1"]}
    ema_rows = [r for r in rows if "ema_top1" in r]
    if ema_rows:
        metrics["ema_top1_max"] = max(r["ema_top1"] for r in ema_rows)
        metrics["ema_top1_last"] = ema_rows[-1]["ema_top1"]
    return metrics, {"best_epoch": best["epoch"] + 1, "last_epoch": last["epoch"] + 1}
