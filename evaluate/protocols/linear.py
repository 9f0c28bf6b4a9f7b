"""Linear probing on frozen features, ``sslbench eval linear``: the DINO v1 protocol and a DINOv2-style grid.

**Feature bank.** One frozen forward gives a bank of tapped tokens per image, (B, F). Each head reads a contiguous
slice of it (:class:`HeadGrid`), so any number of heads trains on the same forward pass.

* ``variant="dino"`` (DINO v1 ``eval_linear.py``): one head; taps by architecture (``taps="auto"``): width < 768
  (ViT-S and smaller) -> CLS of the last 4 blocks; width >= 768 (ViT-B and up) -> last CLS + mean patch token
  (concatenated; ``features.interleave`` gives DINO's interleaved order). SGD momentum 0.9, weight decay 0,
  lr = ``lr`` x batch / 256 (DINO default base 0.001), cosine to 0 stepped per epoch, 100 epochs, heads ~ N(0, 0.01^2),
  bias 0, cross-entropy. Training crops: RandomResizedCrop (bilinear, DINO v1) + flip; evaluation: Resize + CenterCrop.
  BAM's linear protocol (its ``eval_linear.py`` = DINO's plus ``--bn_head``; paper Table 9(b), ``linear.slurm``) is
  ``lr=0.002 bn_head=true``: the same head behind ``BatchNorm1d(affine=False, eps=1e-6)`` (batch statistics while
  training, running ones when evaluating; over the global batch under torchrun, as BAM's SyncBatchNorm), lr 0.002 x
  batch / 256. BAM released only its ViT-B script (CLS + mean patch, as ``taps=auto``); the ViT-S taps follow its
  argparse defaults (last 4 CLS), and the BN head and lr of Table 9(b) are applied to both.
  CNN/MetaFormer backbones (ResNet-50, CAFormer-M36) follow the same ``eval_linear.py`` with its torchvision path:
  one head on the pooled feature (ResNet-50: 2048-d average pool, ``fc`` removed; CAFormer: the pooled, normed 576-d
  output, as BAM's ``eval_linear.py``); BAM Table 9(b) gives SGD, lr 0.3, batch 1024, 100 epochs for ResNet-50 (not
  said whether per 256 images): ``lr=0.3`` (per 256) or ``lr=0.075`` (absolute) with ``batch_size=1024``.
* ``variant="grid"`` (DINOv2 ``eval/linear.py``): the bank is cat(CLS_{L-3..L}, mean patch_L); heads for every
  lr in ``lrs`` (13 values, 1e-5 .. 0.1, each x batch / 256) x blocks in {1, 4} x {without, with} the mean patch
  (52 heads). The loss is the sum of the heads' cross-entropies; cosine stepped per iteration; RandomResizedCrop is
  bicubic. Heads of one group are stacked into one (L, C, F) tensor and run by one fused (B, F) x (F, L*C) product.

**Per-head optimiser state.** The heads are trained by one ``torch.optim.SGD`` (momentum mu, lr = cosine factor s_t)
on gradients pre-multiplied by each head's own learning rate lr_h. With dampening 0, no Nesterov and the weight decay
added to the gradient before the scaling, the momentum buffer is linear in the gradient, so this is exactly per-head
SGD with lr_h * s_t and its own momentum buffer (tested against separately trained heads).

**Selection, labelled.** ``top1`` is the paper convention: heads trained on **all** of train, the best
(head, epoch) by top-1 on the evaluation split (DINO v1 and iBOT take the best epoch; DINOv2 takes the best head at
the last evaluation, ``select_epoch="last"``). That selects on the reported split. ``top1_heldout`` is the honest
number beside it: a copy of every head, trained on the same batches but skipping a seeded held-out fraction of train
(``heldout_fraction``, 0.1; label -100 in the per-head loss), selected on that held-out part and scored on the
evaluation split. Both come from one pass of the backbone; ``heldout_fraction=0`` drops the copy. On datasets whose
metric is mean per-class accuracy (Aircraft, Pets, Flowers, Caltech-101) that metric replaces top-1 in selection and
records (``mean_per_class``, ``mean_per_class_heldout``); the train split is the dataset's train + val where it has an
official val split.

**Modes.** ``mode="augmented"`` (default, the papers' protocol) runs the frozen backbone on RandomResizedCrop + flip
crops every step; under ``torchrun`` it is data-parallel: each rank runs the backbone on its strided share of every
global batch and the shares are gathered, so the heads (identical on every rank) see the global batch while the
backbone work is split. ``mode="cached"`` (the quick variant, used by the demo's short runs) trains on cached
centre-crop features without augmentation.

**Defaults and their sources.** DINO v1 ``eval_linear.py``: 100 epochs, SGD momentum 0.9, weight decay 0, batch
1024 (128 per GPU x 8 GPUs), lr = 0.001 x 1024 / 256, cosine per epoch, all of train, best val epoch. The DINOv2 grid
(``variant=grid``) takes its lr grid, taps and last-evaluation selection from DINOv2 ``eval/linear.py``.

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

from evaluate.protocols import evalrun
from evaluate.protocols.features import (
    FeatureConfig,
    autocast_context,
    get_features,
    resolve_sizes,
    tap_features,
)
from sslcore.config import ALL_POSITIVE, FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_OR_NONE, validate
from sslcore.device import parse_device
from sslcore.errors import SSLBenchError
from sslcore.io import count_images

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

    def __init__(
        self, groups: Sequence[HeadGroup], lrs: Sequence[float], num_classes: int, seed: int = 0, bn: bool = False
    ) -> None:
        super().__init__()
        self.groups, self.lrs, self.bn = list(groups), [float(lr) for lr in lrs], bn
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(len(lrs), num_classes, g.stop - g.start, generator=gen) * 0.01) for g in groups]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(len(lrs), num_classes)) for _ in groups])
        for i, g in enumerate(self.groups if bn else ()):  # BatchNorm1d(affine=False) statistics of each group's slice
            self.register_buffer(f"bn_mean{i}", torch.zeros(g.stop - g.start))
            self.register_buffer(f"bn_var{i}", torch.ones(g.stop - g.start))

    def normalise(self, i: int, x: Tensor) -> Tensor:
        """Group ``i``'s slice through ``BatchNorm1d(affine=False, eps=1e-6)`` (BAM's ``--bn_head``): batch statistics
        in train mode (updating the running ones, momentum 0.1), the running ones in eval mode and for a batch of one
        image (where batch statistics do not exist); the identity without ``bn``."""
        if not self.bn:
            return x
        train = self.training and x.shape[0] > 1
        return F.batch_norm(x, getattr(self, f"bn_mean{i}"), getattr(self, f"bn_var{i}"), None, None, train, 0.1, 1e-6)

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
        for i, (g, w, b) in enumerate(zip(self.groups, self.weights, self.biases)):
            lrs, classes, width = w.shape
            x = self.normalise(i, bank[:, g.start : g.stop])
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
    training = grid.training
    grid.eval()  # BN heads: running statistics
    for start in range(0, len(bank), chunk):
        logits = grid.batch_major(bank[start : start + chunk])  # (b, H, C)
        target = labels[start : start + chunk].to(logits.device)
        correct = (logits.argmax(-1) == target[:, None]).float().T.cpu()  # (H, b)
        hits.index_add_(1, target.cpu(), correct)
    grid.train(training)
    if metric == "top1":
        return 100.0 * hits.sum(1) / max(len(bank), 1)
    counts = torch.bincount(labels.cpu(), minlength=classes).float()
    present = counts > 0
    return 100.0 * (hits[:, present] / counts[present]).mean(1)


def head_losses(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of every head, (H,), from batch-major logits (B, H, C) (:meth:`HeadGrid.batch_major`) and
    labels (B,) shared by the heads or (H, B) per head, where -100 marks an image a head does not train on (its mean
    is over its own images)."""
    batch, heads, classes = logits.shape
    targets = labels[:, None].expand(batch, heads) if labels.dim() == 1 else labels.T  # (B, H)
    per_image = F.cross_entropy(logits.reshape(-1, classes), targets.reshape(-1), reduction="none")
    counts = (targets != -100).sum(0).clamp(min=1)
    return per_image.view(batch, heads).sum(0) / counts


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
    """Train every head of ``grid`` on the batches (bank (B, F), labels (B,) or (H, B), see :func:`head_losses`);
    accuracy tables {set: (epochs, H)}.

    The cosine factor is updated per epoch (DINO v1: CosineAnnealingLR over epochs) or per iteration (DINOv2);
    the tables hold ``metric`` (top-1 or mean per-class accuracy).
    """
    from tqdm.auto import tqdm

    opt = torch.optim.SGD(grid.parameters(), lr=1.0, momentum=momentum)
    history: dict[str, list[Tensor]] = {name: [] for name in eval_sets}
    total = epochs * steps_per_epoch if schedule_step == "iter" else epochs
    step = 0
    for epoch in tqdm(range(epochs), desc="linear heads", disable=not progress, leave=False):
        grid.train()
        for bank, labels in epoch_batches(epoch):
            factor = cosine(step if schedule_step == "iter" else epoch, total)
            for group in opt.param_groups:
                group["lr"] = factor
            loss = head_losses(grid.batch_major(bank), labels).sum()  # one fused product for every head
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
    mode: Literal["augmented", "cached"] = "augmented"  # augmented: the papers' protocol; cached: quick variant
    taps: Literal["auto", "cls", "mean_patch", "cls+mean_patch"] = "auto"  # variant=dino only
    n_last: int | None = None  # variant=dino with explicit taps (default 1)
    lr: float = 0.001  # variant=dino: base lr (x batch / 256)
    bn_head: bool = False  # BatchNorm1d(affine=False) before the heads: BAM's eval_linear --bn_head (its ViT-B script)
    lrs: list[float] = dataclasses.field(default_factory=lambda: list(GRID_LRS))  # variant=grid
    grid_blocks: list[int] = dataclasses.field(default_factory=lambda: [1, 4])
    grid_avgpool: list[bool] = dataclasses.field(default_factory=lambda: [False, True])
    epochs: int = 100
    batch_size: int = 1024  # DINO eval_linear: 128 per GPU x 8 GPUs; lr = lr x batch / 256
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule_step: Literal["auto", "epoch", "iter"] = "auto"  # auto: epoch for dino, iter for grid
    select_epoch: Literal["auto", "best", "last"] = "auto"  # auto: best for dino, last for grid
    rrc_interpolation: Literal["auto", "bilinear", "bicubic"] = "auto"  # auto: bilinear dino, bicubic grid
    heldout_fraction: float = 0.1
    seed: int = 0
    out: str | None = None

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "n_last": POSITIVE_OR_NONE,
                "lr": POSITIVE,
                "lrs": ALL_POSITIVE,
                "grid_blocks": ALL_POSITIVE,
                "grid_avgpool": (lambda v: len(v) > 0, "needs one or more values"),
                "epochs": POSITIVE,
                "batch_size": POSITIVE,
                "momentum": FRACTION,
                "weight_decay": NON_NEGATIVE,
                "heldout_fraction": FRACTION,
                "seed": NON_NEGATIVE,
            },
        )


def bank_taps(cfg: LinearConfig, dim: int, depth: int, pooled: bool = False) -> tuple[str, int]:
    """(taps, n_last) of the feature bank. Block counts above the model's depth are clamped to it (tiny models).
    ``pooled``: a CNN/MetaFormer backbone, whose bank is its pooled feature (``taps=auto`` -> ``cls``, one block)."""
    if pooled:
        if cfg.variant == "grid":
            raise SSLBenchError(
                "variant=grid taps ViT blocks and patch tokens; a CNN/MetaFormer backbone needs variant=dino"
            )
        return ("cls", 1) if cfg.taps == "auto" else (cfg.taps, cfg.n_last or 1)
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
    """Seeded shuffled batches of cached features: (bank (b, F), labels (b,), train-image indices (b,))."""

    def batches(epoch: int) -> Iterable[tuple[Tensor, Tensor, Tensor]]:
        order = torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        for start in range(0, len(bank), batch):
            idx = order[start : start + batch]
            yield bank[idx.to(bank.device)], labels[idx.to(labels.device)], idx

    return batches


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _augmented_batches(model, images, cfg: LinearConfig, fcfg: FeatureConfig, device) -> Callable[[int], Iterable]:
    """Batches of the frozen backbone on augmented crops: (bank (b, F), labels (b,), image indices (b,)).

    Data-parallel under ``torchrun``: every global batch (one seeded permutation, the same on every rank) is split
    strided over the ranks (rank r takes positions r, r + W, ...), each rank runs the backbone on its share only, and
    the shares are gathered back into the global batch in order, so every rank trains identical heads on the same
    global batch (as DDP would) while the backbone work is divided by W.
    """
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    from evaluate.protocols.features import IMAGENET_MEAN, IMAGENET_STD, gather_strided

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
    rank, world = _world()

    def batches(epoch: int) -> Iterable[tuple[Tensor, Tensor, Tensor]]:
        torch.manual_seed(cfg.seed * 100003 + epoch * world + rank)  # this rank's augmentations of this epoch
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
        globals_ = [order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
        shares = [g[rank::world].tolist() for g in globals_]
        loader = DataLoader(dataset, batch_sampler=[s for s in shares if s], num_workers=fcfg.num_workers)
        local = iter(loader)
        for whole, share in zip(globals_, shares):
            if share:
                x, y = next(local)
                with torch.no_grad(), autocast_context(device, fcfg.precision):
                    bank = tap_features(model, x.to(device), fcfg.taps, fcfg.n_last, fcfg.interleave).float()
                count_images(len(x))
                y = y.to(device)
            else:  # a short last batch may leave a rank without images
                bank = torch.zeros(0, 0, device=device)
                y = torch.zeros(0, dtype=torch.long, device=device)
            if world > 1:
                bank = gather_strided(bank, len(whole), rank, world)
                y = gather_strided(y[:, None], len(whole), rank, world)[:, 0]
            yield bank, y, whole

    return batches


def _with_heldout_targets(batches: Callable[[int], Iterable], heads: int, fit_from: int, heldout: Tensor):
    """(bank, labels (H, B)): heads ``fit_from..H-1`` do not train on held-out images (label -100)."""

    def gen(epoch: int) -> Iterable[tuple[Tensor, Tensor]]:
        for bank, labels, idx in batches(epoch):
            targets = labels.expand(heads, len(labels)).clone()
            targets[fit_from:, heldout[idx].to(targets.device)] = -100
            yield bank, targets

    return gen


def run(cfg: LinearConfig, backbone: Any = None) -> dict[str, float]:
    """Train the heads, select (paper convention and held-out), append records; returns the metrics.

    Two sets of the same heads train on the same batches: the paper heads on all of train (``top1``, selected on the
    evaluation split as the papers do) and, when ``heldout_fraction > 0``, a copy that skips the held-out images
    (``top1_heldout``, selected on them). The backbone work is shared.
    """
    started = time.time()
    model, info = evalrun.load_model(cfg.backbone, backbone)
    plan, train_all, _, test = evalrun.load_splits(cfg.data)
    dim = int(model.embed_dim)
    pooled = bool(getattr(model, "pooled_features", False))
    depth = 1 if pooled else len(model.blocks)
    taps, n_last = bank_taps(cfg, dim, depth, pooled)
    fcfg = dataclasses.replace(cfg.features, taps=taps, n_last=n_last)
    device = parse_device(fcfg.device, "features.device")
    _, held_idx = heldout_split(len(train_all), cfg.heldout_fraction, cfg.seed)
    heldout = torch.zeros(len(train_all), dtype=torch.bool)
    heldout[held_idx] = True
    # Cached (centre-crop) features of the full train split: the cached mode's bank and the held-out evaluation set.
    full = get_features(model, info, train_all, fcfg) if cfg.mode == "cached" or held_idx else None
    te = get_features(model, info, test, fcfg)
    eval_sets = {"test": (te.features.to(device), te.labels.to(device))}
    if held_idx:
        eval_sets["heldout"] = (full.features[held_idx].to(device), full.labels[held_idx].to(device))
    width = te.features.shape[1]
    if cfg.variant == "grid":
        blocks = sorted({min(n, depth) for n in cfg.grid_blocks})
        groups = grid_groups(dim, blocks, cfg.grid_avgpool, n_last)
        base_lrs = cfg.lrs
    else:
        groups, base_lrs = [HeadGroup(f"{taps}{n_last}", 0, width)], [cfg.lr]
    if held_idx:
        groups = groups + [HeadGroup(f"{g.name}_fit", g.start, g.stop) for g in groups]
    scale = cfg.batch_size / 256
    grid = HeadGrid(groups, [lr * scale for lr in base_lrs], len(train_all.classes), cfg.seed, cfg.bn_head).to(device)
    if cfg.mode == "cached":
        batches = _cached_batches(full.features.to(device), full.labels.to(device), cfg.batch_size, cfg.seed)
    else:
        batches = _augmented_batches(model.to(device), train_all, cfg, fcfg, device)
    n_paper = len(grid.head_names) // (2 if held_idx else 1)
    steps = math.ceil(len(train_all) / cfg.batch_size)
    schedule = cfg.schedule_step if cfg.schedule_step != "auto" else ("epoch" if cfg.variant == "dino" else "iter")
    tables = train_heads(
        grid,
        _with_heldout_targets(batches, len(grid.head_names), n_paper, heldout),
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
    names = grid.head_names
    metrics, chosen = report({"test": tables["test"][:, :n_paper]}, names[:n_paper], grid.lrs, last, plan.metric)
    if held_idx:
        fit = {name: table[:, n_paper:] for name, table in tables.items()}
        held_metrics, held_chosen = report(fit, names[n_paper:], grid.lrs, last, plan.metric)
        metrics[f"{plan.metric}_heldout"] = held_metrics[f"{plan.metric}_heldout"]
        chosen["heldout"] = held_chosen["heldout"]
    out = evalrun.output_dir(cfg.out, "linear", info, evalrun.dataset_label(cfg.data))
    extra = {
        "taps": {"taps": taps, "n_last": n_last, "interleave": fcfg.interleave},
        "transform": te.key["transform"],
        "selected": chosen,
        "n_train": len(train_all),
        "n_train_heldout_heads": len(train_all) - len(held_idx),
        "n_heldout": len(held_idx),
        "n_test": len(test),
        "lr_scaled": grid.lrs if cfg.variant == "grid" else grid.lrs[0],
        "schedule_step": schedule,
        "dataset_metric": plan.metric,
        "train_split": train_all.split,
        "world_size": _world()[1],
    }
    details = {"heads": names, "test_table": tables["test"].tolist()}
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
