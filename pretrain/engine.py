"""The pretraining engine: one loop for every method (BAM, DINO, iBOT; SERE and ADCLR stand on the same contract).

A *method* (:class:`pretrain.methods.base.SSLMethod`) owns its networks (``student``, a
:class:`~pretrain.networks.MultiCropNet`, and its EMA ``teacher`` or None), its state (centers, ...), a view plan
and ``loss(student, batch, ctx) -> (loss, diagnostics)``, where ``student`` is the (possibly DDP-wrapped) student to
call, ``batch`` a :class:`~pretrain.views.Batch` (views by kind, boxes, flips, masks, indices) and ``ctx`` a
:class:`~pretrain.methods.base.StepContext` with the step, epoch and the collectives. The engine does everything
else:

* per-iteration schedules (``pretrain.schedules``): LR = linear warm-up from 0 to ``lr * global_batch / 256`` then
  cosine to ``min_lr``; weight decay cosine ``weight_decay -> weight_decay_end``; teacher momentum cosine
  ``momentum -> momentum_end``;
* AdamW (``optim.name=lars``: LARS, BAM's ResNet-50 recipe, :mod:`pretrain.optim`) with two groups: decay on
  parameters with ndim > 1, none on biases and other 1-D parameters (norms); frozen parameters
  (``requires_grad=False``, e.g. BAM's patch projection) are not in the optimizer;
* gradient clipping by global norm (``clip_mode="global"``) or DINO's per-parameter rule, optional freezing of a
  last layer for the first epochs;
* precision: ``fp32``, ``bf16`` autocast, or ``fp16`` autocast with a GradScaler; methods compute the loss in fp32;
* DDP (``torchrun``) with a resumable distributed sampler; one process needs no set-up;
* one DataLoader for every epoch up to the next ContrastiveCrop refresh (or the end): its workers start once and
  prefetch across epoch ends and monitor passes (with a loader per epoch, the first batch of every epoch waited
  1.9 s for new workers on 2 cores, 0.5 s now; the demo's BAM recipe: 114 s -> 105 s); items depend on (index,
  epoch) only, so the batches are those of a loader per epoch;
* checkpoints (atomic) at each epoch end and every ``checkpoint_every_steps`` steps, exact resume (the trainer's
  :meth:`Trainer.state_dict` / :meth:`Trainer.load_state_dict`, layout in :mod:`pretrain.checkpoint`; the method's
  state included), the JSONL log of ``docs/records.md``, the exported backbone ``<out>/backbone.pth``;
* a non-finite loss raises :class:`NonFiniteLossError` before the backward pass: no weight is touched and the last
  checkpoint on disk stays the last good one;
* ContrastiveCrop boxes from the teacher's attention, or its class-agnostic activation map for CNN/MetaFormer
  backbones (``ccrop``) and an online k-NN monitor (``knn``), which needs
  a k-NN scoring function handed in (``knn_fn``): training never imports the evaluation harness;
* collapse diagnostics (:mod:`pretrain.diagnostics`): each monitor pass adds the effective rank of the CLS features,
  and every epoch record is checked with the method's last step diagnostics; symptoms are logged as warnings and
  kept in the epoch record (``collapse``), where the reports read them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from pretrain import checkpoint as ckpt
from pretrain import monitor
from pretrain.config import PretrainConfig
from pretrain.data import build_data, make_loader, render_batch
from pretrain.diagnostics import collapse_findings, view_agreement
from pretrain.dist import Distributed
from pretrain.ema import ema_update
from pretrain.methods import build_method, method_class
from pretrain.methods.base import StepContext
from pretrain.optim import build_optimizer
from pretrain.pooled import export_pooled, is_pooled
from pretrain.schedules import cosine_schedule, scaled_lr
from pretrain.syncbn import WorldBatchNorm2d
from pretrain.views import Batch
from pretrain.vit import export_backbone
from sslcore.config import save_config, to_dict
from sslcore.device import parse_device
from sslcore.errors import SSLBenchError
from sslcore.io import atomic_torch_save, git_sha, remove_stale_temporaries

logger = logging.getLogger("sslbench")


class NonFiniteLossError(SSLBenchError):
    """The loss became NaN or infinite; the run stops before the step is applied."""


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """AdamW groups: ``decay`` (ndim > 1) and ``no_decay`` (biases, norms, other 1-D); frozen params left out."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "name": "decay"}, {"params": no_decay, "name": "no_decay", "weight_decay": 0.0}]


def clip_gradients(params: list[nn.Parameter], clip: float, mode: str) -> float:
    """Clip in place; returns the global gradient norm before clipping."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if mode == "global":
        return float(torch.nn.utils.clip_grad_norm_(grads, clip))
    norms = []
    for p in grads:  # DINO utils.clip_gradients: each parameter's gradient norm capped at `clip`
        norm = p.grad.detach().norm(2)
        norms.append(norm)
        coef = clip / (norm + 1e-6)
        if coef < 1:
            p.grad.mul_(coef)
    return float(torch.stack(norms).norm(2))


def world_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers of ``module`` with world-batch statistics: ``SyncBatchNorm`` on CUDA; on other devices the
    ``BatchNorm2d`` layers become :class:`pretrain.syncbn.WorldBatchNorm2d` (same parameters and buffers), so a gloo
    run of a ResNet equals one process. Modules without BatchNorm (ViTs) come back unchanged."""
    if device.type == "cuda":
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
            return nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return module
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            world = WorldBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            world.load_state_dict(child.state_dict())
            world.train(child.training)
            for p_old, p_new in zip(child.parameters(), world.parameters()):
                p_new.requires_grad_(p_old.requires_grad)
            setattr(module, name, world.to(next(child.buffers(), torch.empty(0, device=device)).device))
        else:
            world_batchnorm(child, device)
    return module


def resolve_device(name: str, local_rank: int) -> torch.device:
    """``train.device`` checked (:func:`sslcore.device.parse_device`); CUDA without an index: this rank's GPU."""
    device = parse_device(name, "train.device")
    return torch.device("cuda", local_rank) if device.type == "cuda" and device.index is None else device


class Trainer:
    """Builds the method, optimizer, schedules and data from a :class:`PretrainConfig` and runs the loop.

    ``iters_per_epoch`` may be given to use the trainer without a dataset (tests drive :meth:`train_step` directly).
    ``knn_fn`` scores the online k-NN monitor (``evaluate.protocols.knn.knn_accuracy``'s signature); required when
    ``knn.every_epochs`` > 0. ``plugin_dirs``: directories a ``method: module:Class`` may be imported from.
    """

    def __init__(
        self,
        cfg: PretrainConfig,
        dist: Distributed | None = None,
        iters_per_epoch: int | None = None,
        knn_fn: monitor.KnnFn | None = None,
        plugin_dirs: Sequence[str | Path] = (),
    ) -> None:
        if cfg.knn.every_epochs > 0 and knn_fn is None:
            raise SSLBenchError(
                "knn.every_epochs > 0 needs a k-NN scoring function (the CLI passes evaluate.protocols.knn's)"
            )
        self.cfg = cfg
        self.knn_fn = knn_fn
        local_rank = dist.local_rank if dist else int(os.environ.get("LOCAL_RANK", "0"))  # torchrun sets it
        self.device = resolve_device(cfg.train.device, local_rank)
        self.dist = dist or Distributed.from_env(self.device.type)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        ckpt.seed_everything(cfg.train.seed)
        self.method = build_method(cfg, plugin_dirs).to(self.device)
        ckpt.seed_everything(cfg.train.seed + self.dist.rank)
        if cfg.train.compile:  # before DDP wraps the student; Module.compile keeps parameters and state-dict keys
            for net in (self.method.student, self.method.teacher):
                if net is not None:
                    net.compile()
        self.student: nn.Module = self.method.student
        if self.dist.enabled:
            # BatchNorm over the world batch: BN projectors (teacher-free BAM) and CNN backbones (ResNet), student and
            # teacher (the official BAM code converts both); gloo runs use WorldBatchNorm2d for the 2-D layers
            self.method.student = world_batchnorm(self.method.student, self.device)
            if self.method.teacher is not None:
                self.method.teacher = world_batchnorm(self.method.teacher, self.device)
            self.student = nn.parallel.DistributedDataParallel(
                self.method.student, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.params = [p for p in self.method.student.parameters() if p.requires_grad]
        o = cfg.optim
        self.optimizer = build_optimizer(o.name, param_groups(self.method.student), o.betas, o.momentum, o.lars_eta)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.precision == "fp16")
        self.global_batch = cfg.train.batch_size * self.dist.world_size
        self.data = None
        if iters_per_epoch is None:
            self.data = build_data(cfg, self.dist, method_class(cfg.method, plugin_dirs).view_plan(cfg))
            iters_per_epoch = self.data.sampler.iters_per_epoch
        self.iters_per_epoch = iters_per_epoch
        ep, ipe, o = cfg.train.epochs, iters_per_epoch, cfg.optim
        self.lr_schedule = cosine_schedule(scaled_lr(o.lr, self.global_batch), o.min_lr, ep, ipe, o.warmup_epochs)
        self.wd_schedule = cosine_schedule(o.weight_decay, o.weight_decay_end, ep, ipe)
        self.momentum_schedule = cosine_schedule(cfg.ema.momentum, cfg.ema.momentum_end, ep, ipe)
        self.frozen_last = [p for n, p in self.method.student.named_parameters() if o.last_layer and o.last_layer in n]
        if o.freeze_last_layer_epochs > 0 and not self.frozen_last:
            raise SSLBenchError(f"optim.last_layer: no student parameter name contains {o.last_layer!r}")
        self.step = 0
        self.crop_boxes: Tensor | None = None
        self._stream: Iterator[Batch] | None = None  # the live loader's batches, from global step _stream_step on
        self._stream_step = -1
        self.epoch_stats = {"loss_sum": 0.0, "count": 0}
        self.skipped_images = 0
        self.log_lines = 0
        self.last_step_record: dict[str, Any] = {}
        self.out = Path(cfg.train.out)

    # ------------------------------------------------------------------ one step

    def autocast(self) -> contextlib.AbstractContextManager:
        precision = self.cfg.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def context(self, step: int) -> StepContext:
        return StepContext(
            step=step,
            epoch=step // self.iters_per_epoch,
            epochs=self.cfg.train.epochs,
            iters_per_epoch=self.iters_per_epoch,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            all_gather=self.dist.all_gather,
            all_reduce=self.dist.all_reduce,
            teacher_momentum=float(self.momentum_schedule[step]),
        )

    def forward_backward(self, batch: Batch) -> tuple[Tensor, dict[str, Any]]:
        """Loss and gradients for one batch (no optimizer step); raises NonFiniteLossError before the backward."""
        ctx = self.context(self.step)
        self.method.train()
        with self.autocast():
            loss, diag = self.method.loss(self.student, batch, ctx)
        mean_loss = self.dist.all_reduce(loss.detach().float(), "mean")
        if not math.isfinite(float(mean_loss)):
            raise NonFiniteLossError(
                f"non-finite loss ({float(mean_loss)}) at step {self.step} (epoch {ctx.epoch}); stopping. "
                f"Last good checkpoint: {self.out / 'checkpoint.pth'}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        return mean_loss, diag

    def on_device(self, batch: Batch) -> Batch:
        """``batch`` on the training device, its views rendered there when the loader left them (``data.render:
        batch`` on a GPU)."""
        batch = batch.to(self.device)
        if batch.images is not None and self.data is not None:
            batch = render_batch(batch, self.data.dataset.augment, self.data.dataset.plan)
        return batch

    def train_step(self, batch: Batch) -> tuple[float, dict[str, Any]]:
        """One optimizer step at ``self.step`` (schedules, backward, clip, step, EMA); advances ``self.step``."""
        step, o = self.step, self.cfg.optim
        for group in self.optimizer.param_groups:
            group["lr"] = float(self.lr_schedule[step])
            if group["name"] == "decay":
                group["weight_decay"] = float(self.wd_schedule[step])
        loss, diag = self.forward_backward(self.on_device(batch))
        self.scaler.unscale_(self.optimizer)
        if o.clip_grad > 0:
            diag["grad_norm"] = clip_gradients(self.params, o.clip_grad, o.clip_mode)
        if step // self.iters_per_epoch < o.freeze_last_layer_epochs:
            for p in self.frozen_last:
                p.grad = None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.method.teacher is not None:
            ema_update(self.method.teacher, self.method.student, float(self.momentum_schedule[step]))
        self.step += 1
        return float(loss), diag

    # ------------------------------------------------------------------ the loop

    def log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with open(self.out / "log.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        self.log_lines += 1
        if record.get("kind") == "step":
            self.last_step_record = record  # the epoch's last step is always logged before its epoch record

    def fit(self, resume: bool = False, state: dict[str, Any] | None = None) -> Path:
        """Train to ``train.epochs`` (from the checkpoint in ``train.out`` when ``resume``); returns backbone.pth.

        ``state``: that checkpoint, already read by the caller (the CLI reads it to compare configurations).
        """
        cfg, data = self.cfg, self.data
        if data is None:
            raise SSLBenchError("Trainer.fit needs a dataset (data.root)")
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:  # temporaries of writes a SIGKILL interrupted (never another run's finished files)
            remove_stale_temporaries(self.out)
        path = self.out / "checkpoint.pth"
        if resume and (state is not None or path.is_file()):
            self.load_state_dict(state if state is not None else ckpt.read_training_state(path))
            ckpt.truncate_log(self.out / "log.jsonl", self.log_lines)
            logger.info("resumed from %s at step %d (epoch %d)", path, self.step, self.step // self.iters_per_epoch)
        else:
            if resume:
                logger.warning("--resume: no checkpoint at %s, starting from scratch", path)
            if self.dist.is_main:
                (self.out / "log.jsonl").unlink(missing_ok=True)
                save_config(cfg, self.out / "config.yaml")
            self.log({"kind": "meta", "git": git_sha(), "world_size": self.dist.world_size, "config": to_dict(cfg)})
        total = cfg.train.epochs * self.iters_per_epoch
        try:
            while self.step < total:
                self.run_epoch(self.step // self.iters_per_epoch)
        finally:
            self._stream = None  # the loader's workers end with it
        out = self.export()
        self.dist.barrier()
        return out

    def refreshes_crop_boxes(self, done: int) -> bool:
        """Whether the ContrastiveCrop boxes are recomputed after ``done`` epochs (never after the last one)."""
        cc = self.cfg.ccrop
        return (
            cc.enabled
            and cc.warmup_epochs <= done < self.cfg.train.epochs
            and (done - cc.warmup_epochs) % cc.interval == 0
        )

    def _batches(self, epoch: int, start_batch: int) -> Iterator[Batch]:
        """The batches of ``epoch`` from ``start_batch`` on, from the live loader when it stands at this step, else
        from a new one that spans the epochs up to the next crop-box refresh (the dataset changes there)."""
        if self._stream is None or self._stream_step != self.step:
            data = self.data
            data.dataset.crop_boxes = self.crop_boxes
            stop = next(
                (d for d in range(epoch + 1, self.cfg.train.epochs) if self.refreshes_crop_boxes(d)),
                self.cfg.train.epochs,
            )
            data.sampler.set_epoch(epoch, start_batch, stop)
            on_cuda = self.device.type == "cuda"
            self._stream = iter(
                make_loader(data.dataset, data.sampler, self.cfg.data.num_workers, on_cuda, not on_cuda)
            )
            self._stream_step = self.step
        for batch in itertools.islice(self._stream, self.iters_per_epoch - start_batch):
            self._stream_step += 1
            yield batch

    def run_epoch(self, epoch: int) -> None:
        cfg, ipe = self.cfg, self.iters_per_epoch
        start_batch = self.step - epoch * ipe
        if start_batch == 0:
            self.epoch_stats = {"loss_sum": 0.0, "count": 0}
        bar = tqdm(total=ipe, initial=start_batch, desc=f"epoch {epoch}", disable=not self.dist.is_main, leave=False)
        t_last, n_last, t_epoch = time.perf_counter(), 0, time.perf_counter()
        try:
            for batch in self._batches(epoch, start_batch):
                skipped = torch.tensor(float(batch.skipped))
                self.skipped_images += int(self.dist.all_reduce(skipped, "sum"))
                loss, diag = self.train_step(batch)
                self.epoch_stats["loss_sum"] += loss
                self.epoch_stats["count"] += 1
                n_last += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if self.step % cfg.train.log_every == 0 or self.step % ipe == 0:
                    now = time.perf_counter()
                    self.log(self._step_record(loss, diag, n_last * self.global_batch / max(now - t_last, 1e-9)))
                    t_last, n_last = now, 0
                if self.step % ipe == 0:
                    break
                every = cfg.train.checkpoint_every_steps
                if every > 0 and self.step % every == 0:
                    self.save()
        finally:
            bar.close()
        self.end_epoch(epoch, time.perf_counter() - t_epoch)

    def _step_record(self, loss: float, diag: dict[str, Any], imgs_per_s: float) -> dict[str, Any]:
        s = self.step - 1
        rec = {
            "kind": "step",
            "step": s,
            "epoch": s / self.iters_per_epoch,
            "loss": loss,
            "lr": float(self.lr_schedule[s]),
            "wd": float(self.wd_schedule[s]),
            "momentum": float(self.momentum_schedule[s]),
            "imgs_per_s": imgs_per_s,
            "mem_mb": ckpt.memory_mb(self.device),
        }
        rec.update({k: float(v) for k, v in diag.items()})
        return rec

    def end_epoch(self, epoch: int, seconds: float) -> None:
        cfg = self.cfg
        done = epoch + 1
        stats = self.epoch_stats
        rec: dict[str, Any] = {
            "kind": "epoch",
            "epoch": epoch,
            "step": self.step,
            "loss": stats["loss_sum"] / max(stats["count"], 1),
            "lr": float(self.lr_schedule[self.step - 1]),
            "skipped_images": self.skipped_images,
            "seconds": seconds,
        }
        if self.refreshes_crop_boxes(done):
            with self.autocast():
                self.crop_boxes = monitor.crop_boxes(
                    self.eval_backbone(), self.data.dataset.samples, cfg.ccrop, cfg.data, self.dist, self.device
                )
            self._stream = None  # its workers hold the old boxes (it ends here anyway)
            rec["crop_boxes_updated"] = True
        if cfg.knn.every_epochs > 0 and (done % cfg.knn.every_epochs == 0 or done == cfg.train.epochs):
            backbone = self.method.student.backbone if cfg.knn.network == "student" else self.eval_backbone()
            if self.dist.is_main:
                with self.autocast():
                    rec.update(monitor.knn_pass(backbone, cfg.knn, cfg.data, self.device, self.knn_fn))
        findings = collapse_findings([self.last_step_record, rec]) if self.dist.is_main else []
        for line in findings:
            logger.warning("collapse diagnostic after epoch %d: %s", epoch, line)
        if findings:
            rec["collapse"] = "; ".join(findings)
        self.log(rec)
        self.save(epoch_end=done)
        if cfg.train.export_every_epoch:
            self.export()

    # ------------------------------------------------------------------ outputs

    def eval_backbone(self) -> nn.Module:
        """The backbone evaluations and exports use: the teacher's, else the student's (teacher-free runs)."""
        return (self.method.teacher if self.method.teacher is not None else self.method.student).backbone

    @torch.no_grad()
    def probe_views(self, num_batches: int) -> dict[str, float]:
        """:func:`pretrain.diagnostics.view_agreement` of the evaluation backbone's CLS features of the global views
        of the first ``num_batches`` batches of epoch 0 (this process's share), averaged over the batches; the
        network is used as it stands (step 0 before :meth:`fit`, or what :meth:`load_networks` put there) and
        nothing is trained or written."""
        if self.data is None or self.cfg.data.global_crops < 2 or num_batches < 1:
            raise SSLBenchError("probe_views needs the training data, >= 2 global crops and >= 1 batch")
        net = self.eval_backbone()
        was_training = net.training
        net.eval()
        rows: list[dict[str, float]] = []
        try:
            for batch in itertools.islice(self._batches(0, 0), num_batches):
                batch = self.on_device(batch)
                with self.autocast():
                    cls = torch.cat([net.forward_tokens(view).cls.float() for view in batch.globals])
                rows.append(view_agreement(cls, len(batch.globals)))
        finally:
            net.train(was_training)
            self._stream, self._stream_step = None, -1  # the loader stood at epoch 0's batches: start afresh
        if not rows:
            raise SSLBenchError("probe_views: the loader gave no batch")
        return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]} | {"batches": float(len(rows))}

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs (layout in :mod:`pretrain.checkpoint`); a collective under DDP."""
        ipe, method = self.iters_per_epoch, self.method
        return {
            "format": ckpt.TRAIN_FORMAT,
            "version": ckpt.TRAIN_VERSION,
            "method": self.cfg.method,
            "student": method.student.state_dict(),
            "teacher": method.teacher.state_dict() if method.teacher is not None else None,
            "method_state": method.method_state(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.step // ipe,
            "step": self.step,
            "sampler": {
                "epoch": self.step // ipe,
                "batch": self.step % ipe,
                "seed": self.cfg.train.seed,
                "world_size": self.dist.world_size,
            },
            "rng": ckpt.all_rng_states(self.dist),
            "crop_boxes": self.crop_boxes,
            "config": to_dict(self.cfg),
            "epoch_stats": dict(self.epoch_stats),
            "skipped_images": self.skipped_images,
            "log_lines": self.log_lines,
        }

    def load_networks(self, state: dict[str, Any]) -> None:
        """The student's and the teacher's weights from a :meth:`state_dict` (all :meth:`load_state_dict` restores
        besides the optimisation and data state; what a probe of a run needs)."""
        if state.get("method", self.cfg.method) != self.cfg.method:
            raise SSLBenchError(f"checkpoint is a {state['method']!r} run, the config says {self.cfg.method!r}")
        method = self.method
        method.student.load_state_dict(state["student"])
        if method.teacher is not None:
            if state["teacher"] is None:
                raise SSLBenchError("checkpoint has no teacher but ema.enabled is true")
            method.teacher.load_state_dict(state["teacher"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved into this freshly built trainer."""
        world = state["sampler"]["world_size"]
        if world != self.dist.world_size:
            raise SSLBenchError(f"checkpoint saved with world size {world}, resuming with {self.dist.world_size}")
        self.load_networks(state)
        self.method.load_method_state(state.get("method_state", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.crop_boxes = state["crop_boxes"]
        self.epoch_stats = dict(state["epoch_stats"])
        self.skipped_images = int(state["skipped_images"])
        self.log_lines = int(state["log_lines"])
        ckpt.set_rng_state(state["rng"][self.dist.rank])

    def save(self, epoch_end: int | None = None) -> None:
        """Write ``<out>/checkpoint.pth`` atomically (all ranks call it: RNG states are gathered; rank 0 writes)."""
        state = self.state_dict()
        if not self.dist.is_main:
            return
        atomic_torch_save(state, self.out / "checkpoint.pth")
        keep = self.cfg.train.keep_every_epochs
        if epoch_end is not None and keep > 0 and epoch_end % keep == 0:
            atomic_torch_save(state, self.out / f"checkpoint{epoch_end:04d}.pth")

    def export(self) -> Path:
        """Write ``<out>/backbone.pth`` (teacher when there is one) as a ``pretrain.vit.export_backbone`` payload."""
        path = self.out / "backbone.pth"
        if self.dist.is_main:
            meta = {
                "method": self.cfg.method,
                "which": "teacher" if self.method.teacher is not None else "student",
                "step": self.step,
                "epoch": self.step / self.iters_per_epoch,
                "git": git_sha(),
                "config": to_dict(self.cfg),
            }
            backbone = self.eval_backbone()
            export = export_pooled if is_pooled(backbone) else export_backbone
            atomic_torch_save(export(backbone, meta), path)
        return path
