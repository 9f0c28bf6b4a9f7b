"""Linear probing on frozen features, ``sslbench eval linear``: the DINO v1 protocol and a DINOv2-style grid.

**Feature bank.** One frozen forward gives a bank of tapped tokens per image, (B, F). Each head reads a contiguous
slice of it (:class:`HeadGrid`), so any number of heads trains on the same forward pass.

* ``variant="dino"`` (DINO v1 ``eval_linear.py``): one head; taps by architecture (``taps="auto"``): width < 768
  (ViT-S and smaller) -> CLS of the last 4 blocks; width >= 768 (ViT-B and up) -> last CLS + mean patch token
  (concatenated; ``features.interleave`` gives DINO's interleaved order). SGD momentum 0.9, weight decay 0,
  lr = ``lr`` x batch / 256 (DINO default base 0.001), cosine to 0 stepped per epoch, 100 epochs, heads ~ N(0, 0.01^2),
  bias 0, cross-entropy. Training crops: RandomResizedCrop (bilinear, DINO v1) + flip; evaluation: Resize + CenterCrop.
* ``variant="grid"`` (DINOv2 ``eval/linear.py``): the bank is cat(CLS_{L-3..L}, mean patch_L); heads for every
  lr in ``lrs`` (13 values, 1e-5 .. 0.1, each x batch / 256) x blocks in {1, 4} x {without, with} the mean patch
  (52 heads). The loss is the sum of the heads' cross-entropies; cosine stepped per iteration; RandomResizedCrop is
  bicubic. Heads of one group are stacked into one (L, C, F) tensor and run by one fused (B, F) x (F, L*C) product.

**Per-head optimiser state.** The heads are trained by one ``torch.optim.SGD`` (momentum mu, lr = cosine factor s_t)
on gradients pre-multiplied by each head's own learning rate lr_h. With dampening 0, no Nesterov and the weight decay
added to the gradient before the scaling, the momentum buffer is linear in the gradient, so this is exactly per-head
SGD with lr_h * s_t and its own momentum buffer (tested against separately trained heads).

**Selection, labelled.** ``top1`` is the paper convention: the best (head, epoch) by top-1 on the evaluation split
(DINO v1 and iBOT take the best epoch; DINOv2 takes the best head at the last evaluation, ``select_epoch="last"``).
That selects on the reported split. ``top1_heldout`` is the honest number: the (head, epoch) with the best top-1 on a
seeded held-out fraction of train (``heldout_fraction``, excluded from training), scored on the evaluation split.
Both come from the same training run; with ``heldout_fraction=0`` only ``top1`` is reported and training uses all of
train, as the papers do. On datasets whose metric is mean per-class accuracy (Aircraft, Pets, Flowers, Caltech-101)
that metric replaces top-1 in selection and records (``mean_per_class``, ``mean_per_class_heldout``); the train split
is the dataset's train + val where it has an official val split.

**Modes.** ``mode="cached"`` (default; quick runs and the demo) trains on cached centre-crop features without
augmentation; ``mode="augmented"`` runs the frozen backbone on augmented crops every step, as the papers do.

Layouts: bank (B, F); stacked head weights (L, C, F_g), biases (L, C); logits (L, B, C); accuracy tables
(epochs, heads).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evaluate import evalrun
from evaluate.features import (
    FeatureConfig,
    autocast_context,
    get_features,
    resolve_device,
    resolve_sizes,
    tap_features,
)
from sslcore.errors import SSLBenchError

logger = logging.getLogger("sslbench")

GRID_LRS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)


@dataclasses.dataclass(frozen=True)
class HeadGroup:
    """Heads that read bank[:, start:stop], one per learning rate."""

    name: str
    start: int
    stop: int


class HeadGrid(nn.Module):
    """Linear heads over slices of a feature bank: group g has stacked weights (L, C, F_g) and biases (L, C)."""

    def __init__(self, groups: Sequence[HeadGroup], lrs: Sequence[float], num_classes: int, seed: int = 0) -> None:
        super().__init__()
        self.groups, self.lrs = list(groups), [float(lr) for lr in lrs]
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(len(lrs), num_classes, g.stop - g.start, generator=gen) * 0.01) for g in groups]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(len(lrs), num_classes)) for _ in groups])

    @property
    def head_names(self) -> list[str]:
        return [f"{g.name}_lr{lr:g}" for g in self.groups for lr in self.lrs]

    def forward(self, bank: Tensor) -> Tensor:
        """Logits (H, B, C) of every head, H = groups x lrs, group-major (a view of :meth:`batch_major`)."""
        return self.batch_major(bank).transpose(0, 1)

    def batch_major(self, bank: Tensor) -> Tensor:
        """Logits (B, H, C), contiguous: per group ONE fused product bank[:, slice] (B, F_g) x (F_g, L*C) + bias,
        so all learning rates share one pass over the batch (and one product for the weight gradient)."""
        out = []
        for g, w, b in zip(self.groups, self.weights, self.biases):
            lrs, classes, width = w.shape
            x = bank[:, g.start : g.stop]
            out.append(torch.addmm(b.reshape(-1), x, w.reshape(lrs * classes, width).T).view(-1, lrs, classes))
        return out[0] if len(out) == 1 else torch.cat(out, dim=1)

    def scale_grads(self, weight_decay: float = 0.0) -> None:
        """grad <- lr_h * (grad + wd * param) for every head h (see the module docstring)."""
        for p in [*self.weights, *self.biases]:
            if p.grad is None:
                continue
            lr = torch.tensor(self.lrs, dtype=p.dtype)
            if weight_decay:
                p.grad.add_(p.detach(), alpha=weight_decay)
            p.grad.mul_(lr.to(p.device).view(-1, *([1] * (p.ndim - 1))))


def grid_groups(dim: int, blocks: Sequence[int], avgpool: Sequence[bool], n_bank: int) -> list[HeadGroup]:
    """Groups over a bank cat(CLS_{L-n_bank+1..L}, mean) of block width ``dim``: CLS of the last n [+ mean]."""
    groups = []
    for n in blocks:
        if not 1 <= n <= n_bank:
            raise SSLBenchError(f"grid_blocks: {n} is outside 1..{n_bank}")
        for avg in avgpool:
            stop = (n_bank + 1) * dim if avg else n_bank * dim
            groups.append(HeadGroup(f"blocks{n}{'_avg' if avg else ''}", (n_bank - n) * dim, stop))
    return groups


def cosine(step: int, total: int) -> float:
    """Cosine factor from 1 (step 0) to 0 (step total)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


@torch.no_grad()
def head_accuracy(grid: HeadGrid, bank: Tensor, labels: Tensor, chunk: int = 4096, metric: str = "top1") -> Tensor:
    """Accuracy (%) of every head, (H,): top-1, or mean per-class (over the classes present in ``labels``)."""
    heads = len(grid.head_names)
    classes = int(grid.biases[0].shape[1])
    hits = torch.zeros(heads, classes)  # (H, C) correct predictions per true class
    for start in range(0, len(bank), chunk):
        logits = grid.batch_major(bank[start : start + chunk])  # (b, H, C)
        target = labels[start : start + chunk].to(logits.device)
        correct = (logits.argmax(-1) == target[:, None]).float().T.cpu()  # (H, b)
        hits.index_add_(1, target.cpu(), correct)
    if metric == "top1":
        return 100.0 * hits.sum(1) / max(len(bank), 1)
    counts = torch.bincount(labels.cpu(), minlength=classes).float()
    present = counts > 0
    return 100.0 * (hits[:, present] / counts[present]).mean(1)


def train_heads(
    grid: HeadGrid,
    epoch_batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    epochs: int,
    steps_per_epoch: int,
    eval_sets: dict[str, tuple[Tensor, Tensor]],
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule_step: Literal["epoch", "iter"] = "epoch",
    progress: bool = True,
    metric: str = "top1",
) -> dict[str, Tensor]:
    """Train every head of ``grid`` on the batches (bank (B, F), labels (B,)); accuracy tables {set: (epochs, H)}.

    The cosine factor is updated per epoch (DINO v1: CosineAnnealingLR over epochs) or per iteration (DINOv2);
    the tables hold ``metric`` (top-1 or mean per-class accuracy).
    """
    from tqdm.auto import tqdm

    opt = torch.optim.SGD(grid.parameters(), lr=1.0, momentum=momentum)
    history: dict[str, list[Tensor]] = {name: [] for name in eval_sets}
    total = epochs * steps_per_epoch if schedule_step == "iter" else epochs
    step = 0
    for epoch in tqdm(range(epochs), desc="linear heads", disable=not progress, leave=False):
        for bank, labels in epoch_batches(epoch):
            factor = cosine(step if schedule_step == "iter" else epoch, total)
            for group in opt.param_groups:
                group["lr"] = factor
            logits = grid.batch_major(bank)  # (B, H, C)
            batch, heads, classes = logits.shape
            target = labels.repeat_interleave(heads)
            loss = F.cross_entropy(logits.view(-1, classes), target, reduction="sum") / batch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grid.scale_grads(weight_decay)
            opt.step()
            step += 1
        for name, (bank, labels) in eval_sets.items():
            history[name].append(head_accuracy(grid, bank, labels, metric=metric))
    return {name: torch.stack(rows) for name, rows in history.items()}


def select(table: Tensor, last_only: bool = False) -> tuple[int, int]:
    """(epoch, head) of the highest accuracy in an (epochs, H) table (first maximum in row-major order)."""
    if last_only:
        return table.shape[0] - 1, int(table[-1].argmax())
    flat = int(table.flatten().argmax())
    return divmod(flat, table.shape[1])


def report(
    tables: dict[str, Tensor], names: list[str], lrs: list[float], last_only: bool, metric: str = "top1"
) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics ``<metric>`` (selected on "test") and ``<metric>_heldout`` (selected on "heldout", scored on "test").

    ``metric`` names what the tables hold (``top1`` or ``mean_per_class``).
    Returns (metrics, {"paper"|"heldout": {"head", "epoch" (1-based), "lr", ...}}).
    """
    metrics, chosen = {}, {}
    for label, key, table in (("paper", metric, "test"), ("heldout", f"{metric}_heldout", "heldout")):
        if table not in tables:
            continue
        epoch, head = select(tables[table], last_only)
        metrics[key] = float(tables["test"][epoch, head])
        chosen[label] = {
            "head": names[head],
            "epoch": epoch + 1,
            "lr": lrs[head % len(lrs)],
            f"{table}_{metric}": float(tables[table][epoch, head]),
        }
    return metrics, chosen


@dataclasses.dataclass
class LinearConfig:
    backbone: evalrun.BackboneConfig = dataclasses.field(default_factory=evalrun.BackboneConfig)
    data: evalrun.DataConfig = dataclasses.field(default_factory=evalrun.DataConfig)
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    variant: Literal["dino", "grid"] = "dino"
    mode: Literal["cached", "augmented"] = "cached"
    taps: Literal["auto", "cls", "mean_patch", "cls+mean_patch"] = "auto"  # variant=dino only
    n_last: int | None = None  # variant=dino with explicit taps (default 1)
    lr: float = 0.001  # variant=dino: base lr (x batch / 256)
    lrs: list[float] = dataclasses.field(default_factory=lambda: list(GRID_LRS))  # variant=grid
    grid_blocks: list[int] = dataclasses.field(default_factory=lambda: [1, 4])
    grid_avgpool: list[bool] = dataclasses.field(default_factory=lambda: [False, True])
    epochs: int = 100
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule_step: Literal["auto", "epoch", "iter"] = "auto"  # auto: epoch for dino, iter for grid
    select_epoch: Literal["auto", "best", "last"] = "auto"  # auto: best for dino, last for grid
    rrc_interpolation: Literal["auto", "bilinear", "bicubic"] = "auto"  # auto: bilinear dino, bicubic grid
    heldout_fraction: float = 0.1
    seed: int = 0
    out: str | None = None


def bank_taps(cfg: LinearConfig, dim: int, depth: int) -> tuple[str, int]:
    """(taps, n_last) of the feature bank. Block counts above the model's depth are clamped to it (tiny models)."""
    if cfg.variant == "grid":
        return "cls+mean_patch", min(max(cfg.grid_blocks), depth)
    if cfg.taps == "auto":
        return ("cls+mean_patch", 1) if dim >= 768 else ("cls", min(4, depth))
    return cfg.taps, cfg.n_last or 1


def heldout_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices): a seeded random ``fraction`` of range(n) is held out."""
    if not 0.0 <= fraction < 1.0:
        raise SSLBenchError(f"heldout_fraction={fraction}: must be in [0, 1)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    count = max(1, round(fraction * n)) if fraction > 0 else 0
    return sorted(perm[count:]), sorted(perm[:count])


def _cached_batches(bank: Tensor, labels: Tensor, batch: int, seed: int) -> Callable[[int], Iterable]:
    def batches(epoch: int) -> Iterable[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        for start in range(0, len(bank), batch):
            idx = order[start : start + batch].to(bank.device)
            yield bank[idx], labels[idx]

    return batches


def _augmented_batches(model, images, cfg: LinearConfig, fcfg: FeatureConfig, device) -> Callable[[int], Iterable]:
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    from evaluate.features import IMAGENET_MEAN, IMAGENET_STD

    _, crop = resolve_sizes(fcfg, model)
    interp = (
        cfg.rrc_interpolation
        if cfg.rrc_interpolation != "auto"
        else ("bilinear" if cfg.variant == "dino" else "bicubic")
    )
    mode = T.InterpolationMode.BICUBIC if interp == "bicubic" else T.InterpolationMode.BILINEAR
    transform = T.Compose(
        [
            T.RandomResizedCrop(crop, interpolation=mode),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = images.dataset(transform)

    def batches(epoch: int) -> Iterable[tuple[Tensor, Tensor]]:
        torch.manual_seed(cfg.seed * 100003 + epoch)  # the augmentations of this epoch
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        loader = DataLoader(
            dataset, batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=fcfg.num_workers
        )
        for x, y in loader:
            with torch.no_grad(), autocast_context(device, fcfg.precision):
                bank = tap_features(model, x.to(device), fcfg.taps, fcfg.n_last, fcfg.interleave)
            yield bank.float(), y.to(device)

    return batches


def run(cfg: LinearConfig, backbone: Any = None) -> dict[str, float]:
    """Train the heads, select (paper convention and held-out), append records; returns the metrics."""
    started = time.time()
    model, info = evalrun.load_model(cfg.backbone, backbone)
    plan, train_all, _, test = evalrun.load_splits(cfg.data)
    dim = int(model.embed_dim)
    depth = len(model.blocks)
    taps, n_last = bank_taps(cfg, dim, depth)
    fcfg = dataclasses.replace(cfg.features, taps=taps, n_last=n_last)
    device = resolve_device(fcfg.device)
    train_idx, held_idx = heldout_split(len(train_all), cfg.heldout_fraction, cfg.seed)
    train = train_all.select(train_idx)
    # Cached features of the full train split are sliced, so the cache is shared with other protocols and fractions.
    full = get_features(model, info, train_all, fcfg)
    te = get_features(model, info, test, fcfg)
    eval_sets = {"test": (te.features.to(device), te.labels.to(device))}
    if held_idx:
        eval_sets["heldout"] = (full.features[held_idx].to(device), full.labels[held_idx].to(device))
    if cfg.variant == "grid":
        blocks = sorted({min(n, depth) for n in cfg.grid_blocks})
        groups = grid_groups(dim, blocks, cfg.grid_avgpool, n_last)
        base_lrs = cfg.lrs
    else:
        groups, base_lrs = [HeadGroup(f"{taps}{n_last}", 0, full.features.shape[1])], [cfg.lr]
    scale = cfg.batch_size / 256
    grid = HeadGrid(groups, [lr * scale for lr in base_lrs], len(train_all.classes), cfg.seed).to(device)
    if cfg.mode == "cached":
        bank, labels = full.features[train_idx].to(device), full.labels[train_idx].to(device)
        batches = _cached_batches(bank, labels, cfg.batch_size, cfg.seed)
    else:
        batches = _augmented_batches(model.to(device), train, cfg, fcfg, device)
    steps = math.ceil(len(train) / cfg.batch_size)
    schedule = cfg.schedule_step if cfg.schedule_step != "auto" else ("epoch" if cfg.variant == "dino" else "iter")
    tables = train_heads(
        grid,
        batches,
        cfg.epochs,
        steps,
        eval_sets,
        cfg.momentum,
        cfg.weight_decay,
        schedule,
        fcfg.progress,
        plan.metric,
    )
    last = (cfg.select_epoch if cfg.select_epoch != "auto" else ("best" if cfg.variant == "dino" else "last")) == "last"
    metrics, chosen = report(tables, grid.head_names, grid.lrs, last, plan.metric)
    out = evalrun.output_dir(cfg.out, "linear", info, evalrun.dataset_label(cfg.data))
    extra = {
        "taps": {"taps": taps, "n_last": n_last, "interleave": fcfg.interleave},
        "transform": full.key["transform"],
        "selected": chosen,
        "n_train": len(train),
        "n_heldout": len(held_idx),
        "n_test": len(test),
        "lr_scaled": grid.lrs if cfg.variant == "grid" else grid.lrs[0],
        "schedule_step": schedule,
        "dataset_metric": plan.metric,
        "train_split": train_all.split,
    }
    details = {"heads": grid.head_names, "test_table": tables["test"].tolist()}
    evalrun.finish(
        "linear",
        evalrun.dataset_label(cfg.data),
        plan.test,
        metrics,
        cfg=cfg,
        info=info,
        started=started,
        out=out,
        seed=cfg.seed,
        extra_settings=extra,
        details=details,
    )
    return metrics


add_arguments = evalrun.add_arguments


def run_cli(args: argparse.Namespace) -> int:
    return evalrun.run_protocol_cli(LinearConfig, run, "linear", args)
