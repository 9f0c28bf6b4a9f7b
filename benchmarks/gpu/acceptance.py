"""GPU acceptance: one prepared run that checks and measures every hot path on a GPU (issue #20).

Stages (``--stages`` picks a subset, in this order):

1. ``numerics`` - CUDA against CPU on small fixed inputs: BAM loss and its gradient, k-NN class scores, DAVIS
   propagation soft labels, extracted features (fp32 within 1e-5 of the largest magnitude; bf16 autocast within
   3e-2), and one engine step (BAM, bf16 autocast on the device against fp32 on the CPU: step losses within 3e-2).
   TF32 is off for the fp32 comparisons.
2. ``pretrain`` - the ViT-S/16 recipes of BAM, DINO, iBOT, ADCLR and SERE (``*_vits16.yaml``: 2 x 224 + local
   crops) at 128 images per GPU in bf16 with timm's fused attention: images/s, model TFLOP/s (FLOPs counted by
   ``torch.utils.flop_counter``), MFU against the GPU's dense bf16 peak, peak memory; BAM also with
   ``torch.compile`` (the student and teacher backbones), whose first loss must equal the eager one.
3. ``extract_knn`` - feature extraction images/s of ViT-S/16 and ViT-B/16 at 224 (bf16), and the k-NN classifier
   (k = 20, T = 0.07) on 1,281,167 x 384 synthetic train features with 50,000 queries: seconds, the similarity
   products alone (the matmul floor) and the fraction of the run they are; top-1 on the first 2,000 queries must equal
   DINO's ``knn_classifier`` (transcribed in ``benchmarks/knn.py``).
4. ``davis`` - one 480p 80-frame video (480 x 832 frames, a 30 x 52 patch grid): ViT-S/16 features and
   propagation, seconds per frame; the upsampled masks must equal those of DINO's propagation loop
   (``benchmarks/davis.py``) on at least 99.9 % of the pixels.
5. ``dense`` - 20 iterations of the COCO Cascade Mask R-CNN protocol (ViT-S, batch 2) and of the ADE20K UperNet
   protocol (512 x 512, batch 4) with their real configs (``downstream_configs``) on synthetic data written in the
   official layouts, then a short test pass of each: seconds per iteration, peak memory; the loss must be finite and
   the test metrics present. mmcv's compiled ops must run on CUDA tensors (a CPU-only mmcv fails here).
6. ``linear_finetune`` - one epoch of the 13-learning-rate linear grid on cached features (100,000 x 1,536, 1,000
   classes, batch 1,024) against one head (the ratio of issue #21: target <= 1.3x), and fine-tuning steps of
   ViT-S/16 (DeiT recipe, layer decay, bf16, batch 128).
7. ``learning`` (not in the default list: ``--stages learning``) - every method's ShapesWorld recipe trained for
   ``learning_epochs`` instead of 20, all runs side by side on the GPU, then k-NN and DAVIS against each recipe's
   step 0 and raw pixels, and the dense comparisons issues #12 and #13 name (``benchmarks/gpu/learning.py``).

``--dry-run`` runs every stage on the CPU at toy sizes (tiny ViTs, small banks, the ShapesWorld dense configs for two
iterations): the plumbing of the GPU run, checked where it is cheap. Its "CUDA vs CPU" rows compare the CPU with
itself (fp32 rows must then be exact); the bf16 rows are real (CPU bf16 autocast against fp32).

Every figure is printed as one table row (stage, figure, value, ratio, pass/fail) and appended to the results store
as a record of protocol ``benchmark`` (dataset = stage, metric = figure; ``sslbench results ls --protocol benchmark``);
the device, driver and versions are in the records' settings. Exit status: 0 when every check passed, 1 otherwise,
2 on bad arguments (before any work).

    benchmarks/gpu/acceptance.sh [--dry-run] [--stages numerics,pretrain,...] [--out DIR] [--peak-tflops F]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE.parent))

from common import interleaved  # noqa: E402  (benchmarks/common.py)

STAGES = ("numerics", "pretrain", "extract_knn", "davis", "dense", "linear_finetune", "learning")
DEFAULT_STAGES = STAGES[:-1]  # ``learning`` takes most of a lent device's 10-minute command: asked for by name
FP32_TOL = 1e-5  # max |device - cpu| / max |cpu|
BF16_TOL = 3e-2  # the same for bf16 autocast against fp32 (bf16 keeps 8 bits of mantissa: 2^-8 = 3.9e-3 per op)
# dense bf16 tensor-core peaks (TFLOP/s) of the GPUs this is planned for; others: --peak-tflops
PEAKS = {"H200": 989.5, "H100": 989.5, "A100": 312.0, "B200": 2250.0}


@dataclasses.dataclass
class Sizes:
    numerics_arch: str
    numerics_img: int
    pretrain_batch: int
    pretrain_steps: int
    pretrain_compile: int  # 1: also BAM with torch.compile
    extract_archs: tuple[str, ...]
    extract_img: int
    extract_batch: int
    extract_batches: int
    knn_train: int
    knn_test: int
    knn_classes: int
    knn_check: int
    davis_frames: int
    davis_hw: tuple[int, int]
    davis_arch: str
    dense_iters: int
    dense_tasks: tuple[str, ...]
    linear_n: int
    linear_dim: int
    linear_classes: int
    finetune_arch: str
    finetune_img: int
    finetune_batch: int
    finetune_steps: int
    learning_epochs: int
    learning_deadline_s: int  # pretraining runs still going then are stopped and measured from their last epoch
    learning_runs: tuple[str, ...]


GPU = Sizes(
    numerics_arch="vit_small", numerics_img=224, pretrain_batch=128, pretrain_steps=10, pretrain_compile=1,
    extract_archs=("vit_small", "vit_base"), extract_img=224, extract_batch=256, extract_batches=20,
    knn_train=1_281_167, knn_test=50_000, knn_classes=1000, knn_check=2000,
    davis_frames=80, davis_hw=(480, 832), davis_arch="vit_small", dense_iters=20, dense_tasks=("coco", "ade20k"),
    linear_n=100_000, linear_dim=1536, linear_classes=1000,
    finetune_arch="vit_small", finetune_img=224, finetune_batch=128, finetune_steps=10,
    learning_epochs=150, learning_deadline_s=270,
    learning_runs=("bam", "dino", "ibot", "sere", "sere-a0b0", "adclr", "adclr-bidirectional"),
)  # fmt: skip
DRY = Sizes(
    numerics_arch="vit_pico", numerics_img=32, pretrain_batch=8, pretrain_steps=2, pretrain_compile=1,
    extract_archs=("vit_pico", "vit_femto"), extract_img=32, extract_batch=16, extract_batches=2,
    knn_train=20_000, knn_test=1_000, knn_classes=100, knn_check=200,
    davis_frames=6, davis_hw=(64, 112), davis_arch="vit_pico", dense_iters=2, dense_tasks=("coco", "ade20k"),
    linear_n=2048, linear_dim=192, linear_classes=20,
    finetune_arch="vit_pico", finetune_img=32, finetune_batch=8, finetune_steps=2,
    learning_epochs=1, learning_deadline_s=600,
    learning_runs=("bam", "dino", "ibot", "sere", "sere-a0b0", "adclr", "adclr-bidirectional"),
)  # fmt: skip


@dataclasses.dataclass
class Row:
    stage: str
    figure: str
    value: float
    unit: str = ""
    ratio: str = ""
    passed: bool | None = None  # None: a measurement without a pass criterion
    note: str = ""


@dataclasses.dataclass
class Ctx:
    device: torch.device
    sizes: Sizes
    out: Path
    dry: bool
    peak_tflops: float | None
    rows: list[Row] = dataclasses.field(default_factory=list)

    def add(self, stage: str, figure: str, value: float, unit: str = "", ratio: str = "", passed=None, note=""):
        row = Row(stage, figure, float(value), unit, ratio, passed, note)
        self.rows.append(row)
        print(format_row(row), flush=True)
        # rewritten at every row, so that a run stopped by its time limit still leaves its table
        table = self.out / "acceptance.json"
        table.with_suffix(".tmp").write_text(json.dumps([dataclasses.asdict(r) for r in self.rows], indent=1))
        table.with_suffix(".tmp").replace(table)

    def timed(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        """(output, seconds) of one call, synchronised on a GPU (:func:`common.interleaved` with one round)."""
        times, outputs = interleaved({"fn": fn}, 1, self.device)
        return outputs["fn"], times["fn"][0]

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float:
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else float("nan")


HEADER = f"| {'stage':<15} | {'figure':<44} | {'value':>18} | {'ratio':>16} | pass |"


def format_row(row: Row) -> str:
    verdict = {True: "pass", False: "FAIL", None: "-"}[row.passed]
    value = f"{row.value:.4g} {row.unit}".strip()
    note = f"  ({row.note})" if row.note else ""
    return f"| {row.stage:<15} | {row.figure:<44} | {value:>18} | {row.ratio:>16} | {verdict:<4} |{note}"


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off for fp32 matmuls and convolutions (restored after)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ---------------------------------------------------------------------------------------------- 1. numerics
def stage_numerics(ctx: Ctx) -> None:
    from pretrain_throughput import views_for

    from evaluate.protocols.davis import propagation as P
    from evaluate.protocols.features import autocast_context, tap_features
    from evaluate.protocols.knn import knn_predict
    from pretrain.losses.bam import bam_loss
    from pretrain.vit import build_vit

    dev, cpu, s = ctx.device, torch.device("cpu"), ctx.sizes
    gen = torch.Generator().manual_seed(0)
    with exact_fp32():
        # BAM loss and gradient: 2 global + 4 local crops of 16 samples, 128-d projections
        student, teacher = torch.randn(6 * 16, 128, generator=gen), torch.randn(2 * 16, 128, generator=gen)

        def bam(device: torch.device, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
            x = student.to(device, copy=True).requires_grad_()  # a new leaf per call (.to(cpu) alone aliases)
            with autocast_context(device, "bf16" if bf16 else "fp32"):
                loss, _ = bam_loss(x, teacher.to(device), num_crops=6, diagnostics=False)
            loss.backward()
            return loss.detach().float().clone(), x.grad.float().clone()

        (ref_loss, ref_grad), (loss, grad) = bam(cpu), bam(dev)
        err = max(rel_err(loss, ref_loss), rel_err(grad, ref_grad))
        ctx.add("numerics", "BAM loss + grad, fp32 (rel. err.)", err, passed=err <= FP32_TOL, ratio=f"tol {FP32_TOL:g}")
        loss16, grad16 = bam(dev, bf16=True)  # the loss disables autocast: it must stay fp32-exact
        err = max(rel_err(loss16, ref_loss), rel_err(grad16, ref_grad))
        ctx.add("numerics", "BAM loss + grad in bf16 autocast (fp32 inside)", err, passed=err <= FP32_TOL,
                ratio=f"tol {FP32_TOL:g}")  # fmt: skip

        # k-NN class scores (k = 20, T = 0.07)
        train, test = torch.randn(4000, 64, generator=gen), torch.randn(200, 64, generator=gen)
        labels = torch.randint(0, 10, (4000,), generator=gen)
        ref = knn_predict(train, labels, test, [20], num_classes=10)[20]
        got = knn_predict(train.to(dev), labels.to(dev), test.to(dev), [20], num_classes=10)[20]
        err = rel_err(got, ref)
        ctx.add(
            "numerics", "k-NN class scores, fp32 (rel. err.)", err, passed=err <= FP32_TOL, ratio=f"tol {FP32_TOL:g}"
        )

        # DAVIS propagation soft labels: 8 frames on a 12 x 20 grid, 4 labels
        feats = torch.randn(1, 240, 96, generator=gen) + 0.7 * torch.randn(8, 240, 96, generator=gen)
        first = F.one_hot(torch.randint(0, 4, (240,), generator=gen), 4).float()
        ref = P.propagate(feats, first, (12, 20))
        got = P.propagate(feats.to(dev), first.to(dev), (12, 20))
        err = rel_err(got, ref)
        ctx.add("numerics", "propagation soft labels, fp32 (rel. err.)", err, passed=err <= FP32_TOL,
                ratio=f"tol {FP32_TOL:g}")  # fmt: skip

        # extracted features (the last block's CLS token) of a seeded ViT
        torch.manual_seed(0)
        model = build_vit(s.numerics_arch).eval()
        images = torch.randn(4, 3, s.numerics_img, s.numerics_img, generator=gen)
        with torch.no_grad():
            ref = tap_features(model, images, "cls", 1)
            model.to(dev)
            got = tap_features(model, images.to(dev), "cls", 1)
            with autocast_context(dev, "bf16"):
                got16 = tap_features(model, images.to(dev), "cls", 1)
        err = rel_err(got, ref)
        ctx.add("numerics", f"features {s.numerics_arch}, fp32 (rel. err.)", err, passed=err <= FP32_TOL,
                ratio=f"tol {FP32_TOL:g}")  # fmt: skip
        err = rel_err(got16.float(), ref)
        ctx.add("numerics", f"features {s.numerics_arch}, bf16 (rel. err.)", err, passed=err <= BF16_TOL,
                ratio=f"tol {BF16_TOL:g}")  # fmt: skip

        # one engine step: bf16 autocast on the device against fp32 on the CPU, same init and batch
        losses = {}
        for name, device, precision in (("cpu", "cpu", "fp32"), ("device", dev.type, "bf16")):
            trainer = tiny_trainer(device, precision, batch=8, warmup_epochs=0)  # step 2 sees an update
            batch = views_for(trainer.cfg, 8, "cpu", torch.Generator().manual_seed(1))
            losses[name] = torch.tensor([trainer.train_step(batch)[0] for _ in range(2)])
        err = rel_err(losses["device"], losses["cpu"])
        ctx.add("numerics", "engine: 2 BAM steps, bf16 vs fp32 CPU (losses)", err, passed=err <= BF16_TOL,
                ratio=f"tol {BF16_TOL:g}",
                note=f"losses {losses['device'].tolist()} vs {losses['cpu'].tolist()}")  # fmt: skip


def tiny_trainer(device: str, precision: str, batch: int, warmup_epochs: int):
    from pretrain_throughput import make_trainer, tiny_overrides

    over = {"train.batch_size": batch, "train.device": device, "train.precision": precision}
    return make_trainer({**tiny_overrides("bam"), **over, "optim.warmup_epochs": warmup_epochs})


# ---------------------------------------------------------------------------------------------- 2. pretraining
PRETRAIN_RECIPES = {
    "bam": "bam_vits16.yaml",
    "dino": "dino_vits16.yaml",
    "ibot": "ibot_vits16.yaml",
    "adclr": "adclr_vits16.yaml",
    "sere": "sere_ibot_vits16.yaml",
}


def stage_pretrain(ctx: Ctx) -> None:
    from pretrain_throughput import make_trainer, step_flops, tiny_overrides, views_for

    s = ctx.sizes
    runs = [(m, r, False) for m, r in PRETRAIN_RECIPES.items()]
    if s.pretrain_compile:
        runs.append(("bam", PRETRAIN_RECIPES["bam"], True))
    eager_ips, first_loss = {}, {}
    for method, recipe, compiled in runs:
        over = {"train.batch_size": s.pretrain_batch, "train.precision": "bf16", "train.device": ctx.device.type,
                "train.compile": compiled}  # fmt: skip
        if ctx.dry:
            over = {**tiny_overrides(method), **over}
        trainer = make_trainer(over, None if ctx.dry else recipe)
        views = views_for(trainer.cfg, s.pretrain_batch, ctx.device.type)
        ctx.reset_peak()
        (loss, _), first = ctx.timed(lambda t=trainer, v=views: t.train_step(v))  # a compile happens here
        key = f"{method} {'compiled' if compiled else 'eager'}"
        first_loss[key] = loss
        trainer.train_step(views)
        _, seconds = ctx.timed(lambda t=trainer, v=views: [t.train_step(v) for _ in range(s.pretrain_steps)])
        per_step = seconds / s.pretrain_steps
        ips = s.pretrain_batch / per_step
        flops = step_flops(trainer, views)
        tflops = flops / per_step / 1e12
        d = trainer.cfg.data
        crops = f"{d.global_crops}x{d.global_size}+{d.local_crops}x{d.local_size}"
        fused = {bool(m.fused_attn) for m in trainer.method.student.modules() if hasattr(m, "fused_attn")}
        label = f"{method} {trainer.cfg.model.arch} {crops} b{s.pretrain_batch}" + (" compiled" if compiled else "")
        if compiled:
            same = abs(loss - first_loss[f"{method} eager"]) <= BF16_TOL * abs(first_loss[f"{method} eager"])
            ratio = f"{ips / eager_ips[method]:.2f}x eager"
            note = (
                f"first step {first:.1f} s incl. compile; loss {loss:.4f} vs eager {first_loss[f'{method} eager']:.4f}"
            )
        else:
            same, ratio, note = math.isfinite(loss), "", f"loss {loss:.4f}"
            eager_ips[method] = ips
        note += f"; fused attention {'on' if fused == {True} else 'OFF' if fused else 'n/a'}"
        ctx.add("pretrain", f"{label}: images/s", ips, "img/s", ratio, same, note)
        mfu = f"MFU {tflops / ctx.peak_tflops:.1%}" if ctx.peak_tflops else "no peak"
        ctx.add("pretrain", f"{label}: model TFLOP/s", tflops, "TFLOP/s", mfu)
        if ctx.device.type == "cuda":
            ctx.add("pretrain", f"{label}: peak memory", ctx.peak_gib(), "GiB")


# ---------------------------------------------------------------------------------------------- 3. extraction + k-NN
def stage_extract_knn(ctx: Ctx) -> None:
    from knn import dino_knn_classifier

    from evaluate.protocols.features import autocast_context, tap_features
    from evaluate.protocols.knn import CHUNK_BYTES, knn_accuracy
    from pretrain.vit import build_vit

    s, dev = ctx.sizes, ctx.device
    for arch in s.extract_archs:
        model = build_vit(arch).eval().to(dev)
        images = torch.randn(s.extract_batch, 3, s.extract_img, s.extract_img, device=dev)

        def run(n: int, model=model, images=images) -> torch.Tensor:
            with torch.inference_mode(), autocast_context(dev, "bf16"):
                return torch.stack([tap_features(model, images, "cls", 1).float().sum() for _ in range(n)])

        run(2)
        out, seconds = ctx.timed(lambda: run(s.extract_batches))
        ips = s.extract_batch * s.extract_batches / seconds
        ctx.add("extract_knn", f"features {arch} {s.extract_img}px bf16 b{s.extract_batch}", ips, "img/s",
                passed=bool(torch.isfinite(out).all()))  # fmt: skip

    gen = torch.Generator(device=dev).manual_seed(0)
    n, m, c, dim = s.knn_train, s.knn_test, s.knn_classes, 384
    centers = torch.randn(c, dim, generator=gen, device=dev)
    labels = torch.randint(0, c, (n,), generator=gen, device=dev)
    test_labels = torch.randint(0, c, (m,), generator=gen, device=dev)
    train = F.normalize(centers[labels] + 4.0 * torch.randn(n, dim, generator=gen, device=dev), dim=1)
    test = F.normalize(centers[test_labels] + 4.0 * torch.randn(m, dim, generator=gen, device=dev), dim=1)

    def floor() -> None:
        for start in range(0, m, 1024):
            torch.mm(test[start : start + 1024], train.T)

    with exact_fp32():
        floor()
        acc, seconds = ctx.timed(lambda: knn_accuracy(train, labels, test, test_labels, [20], num_classes=c))
        _, floor_s = ctx.timed(floor)
        # the protocol's default block: 1 GiB of similarities on a GPU (209 queries at a time against 1.28M rows),
        # 64 MiB on a CPU (13 queries); the same run with the CPU's budget says what the GPU's buys
        small = max(1, CHUNK_BYTES // (n * 4))
        acc_small, small_s = ctx.timed(
            lambda: knn_accuracy(train, labels, test, test_labels, [20], num_classes=c, chunk=small)
        )
        k = s.knn_check
        dino_top1, _ = dino_knn_classifier(train, labels, test[:k], test_labels[:k], 20, 0.07, c)
        ours = knn_accuracy(train, labels, test[:k], test_labels[:k], [20], num_classes=c)["top1@k20"]
    tflops = 2.0 * n * m * dim / floor_s / 1e12
    ctx.add("extract_knn", f"k-NN k=20, {n:,} x {dim} train, {m:,} queries", seconds, "s",
            f"floor {floor_s / seconds:.0%}", abs(ours - dino_top1) < 1e-9,
            note=f"top-1 {acc['top1@k20']:.2f}; floor {floor_s:.2f} s at {tflops:.1f} TFLOP/s fp32; first {k} queries "
            f"top-1 {ours:.2f} vs DINO {dino_top1:.2f}")  # fmt: skip
    ctx.add("extract_knn", f"k-NN, same with 64 MiB blocks ({small} queries)", small_s, "s",
            f"{small_s / seconds:.2f}x the default's time", acc_small == acc,
            note="same accuracies required")  # fmt: skip


# ---------------------------------------------------------------------------------------------- 4. DAVIS
def stage_davis(ctx: Ctx) -> None:
    from davis import dino_video

    from evaluate.protocols.davis import propagation as P
    from evaluate.protocols.davis.features import extract, patch_size
    from pretrain.vit import build_vit

    s, dev = ctx.sizes, ctx.device
    (h, w), t = s.davis_hw, s.davis_frames
    model = build_vit(s.davis_arch).eval().to(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    # a drifting smooth texture: frames correlate as video frames do
    base = F.interpolate(torch.rand(1, 3, h // 8, w // 8 + t, generator=gen, device=dev), scale_factor=8.0)
    frames = torch.stack([base[0, :, :, 8 * i : 8 * i + w] for i in range(t)])
    extract(model, frames[:2])
    feats, feat_s = ctx.timed(lambda: extract(model, frames))
    patch = patch_size(model)
    grid = (h // patch, w // patch)
    first = F.one_hot(((torch.arange(grid[0] * grid[1], device=dev) % grid[1]) * 4 // grid[1]), 4).float()
    P.propagate(feats[:3], first, grid)
    soft, prop_s = ctx.timed(lambda: P.propagate(feats, first, grid))
    reference = dino_video(feats, first, grid)
    same = float((P.upsample_argmax(soft, grid, patch) == P.upsample_argmax(reference, grid, patch)).float().mean())
    ctx.add("davis", f"features {s.davis_arch} {h}x{w}, {t} frames", feat_s / t, "s/frame", passed=None)
    ctx.add("davis", f"propagation grid {grid[0]}x{grid[1]}, 7+1 context", prop_s / t, "s/frame",
            f"{100 * same:.3f}% = DINO", same >= 0.999)  # fmt: skip


# ---------------------------------------------------------------------------------------------- 5. dense
def stage_dense(ctx: Ctx) -> None:
    import dense_data

    from evaluate.protocols.dense.runner import run_mm, train_scalars, write_run_config
    from pretrain.vit import build_vit, export_backbone

    s, dev = ctx.sizes, ctx.device
    root = ctx.out / "dense"
    arch = "vit_pico" if ctx.dry else "vit_small"
    export = root / f"{arch}_export.pth"
    export.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(export_backbone(build_vit(arch)), export)
    for task in s.dense_tasks:
        if ctx.dry:
            data = dense_data.write_shapesworld(root / "shapes", task)
        else:
            data = dense_data.write_official(root / f"{task}_data", task)
        run = root / f"{task}_run"
        batch = {"coco": 2, "ade20k": 4}[task]
        options = dense_data.short_run_options(task, s.dense_iters, batch, dev.type, official=not ctx.dry)
        # the protocol's config for this data and width, as `sslbench eval coco|ade20k` writes it
        _, path, _, _ = write_run_config(task, export, data, run, options=options)
        for old in (run / "mm").glob("*/vis_data/scalars.json"):
            old.unlink()  # a rerun's times only
        ctx.reset_peak()
        metrics = run_mm(run / "config.py")
        # every iteration, unsmoothed (logger interval 1, log window 1); "memory" only where CUDA ran
        logged = train_scalars(run / "mm", "loss", "time", *(["memory"] if dev.type == "cuda" else []))
        iters, losses = [r["time"] for r in logged], [r["loss"] for r in logged]
        warm = iters[2:] or iters
        per_iter = sum(warm) / len(warm) if warm else float("nan")
        timings = json.loads((run / "timings.json").read_text())
        ok = len(losses) == s.dense_iters and all(math.isfinite(v) for v in losses)
        label = {"coco": "COCO Cascade Mask R-CNN", "ade20k": "ADE20K UperNet"}[task]
        note = f"{path.stem}; loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else path.stem
        ctx.add("dense", f"{label} {arch} b{batch}: train", per_iter, "s/iter", f"{len(iters)} iters", ok, note)
        keys = sorted(k.split("/")[-1] for k in metrics if k.endswith(("bbox_mAP", "segm_mAP", "mIoU")))
        found = ", ".join(f"{k} {v:.3g}" for k, v in sorted(metrics.items()) if k.split("/")[-1] in keys)
        # an untrained detector may keep no box above the score threshold: mmdet then reports no COCO metric
        ok = bool(keys) or task == "coco"
        n_test = dense_data.COUNTS[task]["val2017" if task == "coco" else "validation"] if not ctx.dry else 2
        ctx.add("dense", f"{label}: test pass ({n_test} images)", timings["test_s"], "s", "", ok,
                found or "no detections above the score threshold")  # fmt: skip
        if dev.type == "cuda":  # mmengine resets torch's peak at every log line: run_mm keeps each reading
            ctx.add("dense", f"{label}: peak memory", timings["peak_cuda_mb"] / 1024, "GiB",
                    note=f"first iteration {logged[0]['memory'] / 1024:.1f} GiB" if logged else "")  # fmt: skip


# ---------------------------------------------------------------------------------------------- 6. linear + finetune
def stage_linear_finetune(ctx: Ctx) -> None:
    from finetune import make_loop, measure
    from linear_grid import run_heads

    from evaluate.protocols.linear import GRID_LRS

    s, dev = ctx.sizes, ctx.device
    gen = torch.Generator(device=dev).manual_seed(0)
    bank = torch.randn(s.linear_n, s.linear_dim, generator=gen, device=dev)
    labels = torch.randint(0, s.linear_classes, (s.linear_n,), generator=gen, device=dev)
    val = (bank[: s.linear_n // 10], labels[: s.linear_n // 10])
    args = argparse.Namespace(classes=s.linear_classes, batch=1024, epochs=1, img=32)
    lrs = [lr * args.batch / 256 for lr in GRID_LRS]
    run_heads(lrs, bank[:2048], labels[:2048], val, args)
    fns = {name: lambda chosen=chosen: run_heads(chosen, bank, labels, val, args)
           for name, chosen in (("one", lrs[6:7]), ("grid", lrs))}  # fmt: skip
    times, _ = interleaved(fns, 2, dev)  # min is the figure
    ratio = min(times["grid"]) / min(times["one"])
    ctx.add("linear_finetune", f"linear grid, 13 lrs, {s.linear_n:,} x {s.linear_dim}, 1 epoch", min(times["grid"]),
            "s", f"{ratio:.2f}x one head", ratio <= 1.3 if dev.type == "cuda" else None,
            note=f"one head {min(times['one']):.3f} s; target <= 1.3x (issue #21)")  # fmt: skip

    precision = "bf16" if dev.type == "cuda" else "fp32"
    loop = make_loop(s.finetune_arch, s.finetune_batch, dev.type, precision, ctx.out / "finetune")
    stats = measure(loop, s.finetune_batch, s.finetune_steps, img=s.finetune_img)
    ctx.add("linear_finetune", f"fine-tune {s.finetune_arch} {s.finetune_img}px b{s.finetune_batch} {precision}",
            stats["images_per_s"], "img/s", passed=math.isfinite(stats["loss"]),
            note=f"loss {stats['loss']:.3f}" + (f"; peak {stats['peak_mem_mb'] / 1024:.1f} GiB"
                                                 if "peak_mem_mb" in stats else ""))  # fmt: skip


# ---------------------------------------------------------------------------------------------- 7. learning
def stage_learning(ctx: Ctx) -> None:
    from learning import run_learning

    s = ctx.sizes
    # the eval's k-NN and DAVIS records go to the store the benchmark records go to (main sets it from --results)
    os.environ.setdefault("SSLBENCH_RESULTS", str(ctx.out / "learning" / "records"))
    os.environ.setdefault("SSLBENCH_CACHE", str(ctx.out / "learning" / "cache"))
    rows = run_learning(ctx.out / "learning", device=ctx.device.type, epochs=s.learning_epochs,
                        deadline_s=s.learning_deadline_s, quick=ctx.dry, names=s.learning_runs)  # fmt: skip
    for figure, value, unit, ratio, note in rows:
        ctx.add("learning", figure, value, unit, ratio, None, note)


# ---------------------------------------------------------------------------------------------- the run
RUNNERS: dict[str, Callable[[Ctx], None]] = {
    "numerics": stage_numerics,
    "pretrain": stage_pretrain,
    "extract_knn": stage_extract_knn,
    "davis": stage_davis,
    "dense": stage_dense,
    "linear_finetune": stage_linear_finetune,
    "learning": stage_learning,
}


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"host_cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20, check=False,
            ).stdout.strip()  # fmt: skip
        info["cuda"] = torch.version.cuda
    with contextlib.suppress(ImportError):
        import mmcv

        info["mmcv"] = mmcv.__version__
    return info


def peak_for(device: torch.device, given: float | None) -> float | None:
    if given is not None or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAKS.items() if key in name), None)


def parse_sets(items: list[str], base: Sizes) -> Sizes:
    """``--set key=value`` overrides of the sizes (ints, names, comma-separated tuples)."""
    fields = {f.name: f for f in dataclasses.fields(Sizes)}
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY in {', '.join(fields)}")
        current = getattr(base, key)
        try:
            if isinstance(current, tuple):
                kind = type(current[0])
                changes[key] = tuple(kind(part) for part in text.split(","))
            else:
                changes[key] = type(current)(text)
        except ValueError:
            raise ValueError(f"--set {item!r}: {text!r} is not a {type(current).__name__}") from None
    sizes = dataclasses.replace(base, **changes)
    from pretrain.vit import ARCHS

    archs = {*sizes.extract_archs, sizes.numerics_arch, sizes.davis_arch, sizes.finetune_arch}
    from learning import RUNS

    bad = sorted(archs - set(ARCHS)) + sorted(set(sizes.dense_tasks) - {"coco", "ade20k"})
    bad += sorted(set(sizes.learning_runs) - set(RUNS))
    if bad:
        raise ValueError(
            f"--set: unknown {bad} (archs: {', '.join(ARCHS)}; dense_tasks: coco, ade20k; "
            f"learning_runs: {', '.join(RUNS)})"
        )
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="every stage on the CPU at toy sizes (--device cpu --size dry)"
    )
    parser.add_argument(
        "--stages", default=",".join(DEFAULT_STAGES), help=f"comma-separated subset of {','.join(STAGES)}"
    )
    parser.add_argument("--device", default=None, help="cuda (default) or cpu (default with --dry-run)")
    parser.add_argument(
        "--size", choices=("gpu", "dry"), default=None, help="the sizes (default: gpu; dry with --dry-run)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override one size, e.g. dense_iters=2"
    )
    parser.add_argument("--out", default=str(REPO / "runs" / "gpu_acceptance"), help="work folder (data, runs)")
    parser.add_argument("--results", default=None, help="results store for the records (default: sslbench's)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU (default by GPU)")
    parser.add_argument("--no-records", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    stages = [x.strip() for x in args.stages.split(",") if x.strip()]
    bad = [x for x in stages if x not in STAGES]
    if bad or not stages:
        parser.exit(2, f"acceptance: --stages {args.stages!r}: unknown {bad} (valid: {', '.join(STAGES)})\n")
    args.stages = stages
    args.device = args.device or ("cpu" if args.dry_run else "cuda")
    if args.device not in ("cpu", "cuda"):
        parser.exit(2, f"acceptance: --device {args.device!r}: must be cuda or cpu\n")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "acceptance: no CUDA device visible; use --dry-run for the CPU rehearsal\n")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.exit(2, f"acceptance: --peak-tflops {args.peak_tflops}: must be > 0\n")
    args.size = args.size or ("dry" if args.dry_run else "gpu")
    try:
        args.sizes = parse_sets(args.set, DRY if args.size == "dry" else GPU)
    except ValueError as exc:
        parser.exit(2, f"acceptance: {exc}\n")
    return args


def write_records(ctx: Ctx, store: str | None, info: dict[str, Any]) -> Path:
    from evaluate.reporting.records import append_records, make_records

    records = []
    for row in ctx.rows:
        settings = {"row": dataclasses.asdict(row), "dry_run": ctx.dry, "device": str(ctx.device), **info}
        records += make_records("benchmark", row.stage, "dry-run" if ctx.dry else "gpu", {row.figure: row.value},
                                settings=settings, unit=row.unit)  # fmt: skip
    return append_records(records, store, name="benchmark")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    ctx = Ctx(device, args.sizes, Path(args.out), args.size == "dry", peak_for(device, args.peak_tflops))
    ctx.out.mkdir(parents=True, exist_ok=True)
    if args.results:
        os.environ["SSLBENCH_RESULTS"] = args.results  # also where the learning stage's eval records go
    info = machine(device)
    print(f"acceptance ({args.size} sizes on {device}): {json.dumps(info)}; torch {torch.__version__}")
    print(HEADER)
    started = time.time()
    for stage in args.stages:
        stage_start = time.time()
        try:
            RUNNERS[stage](ctx)
        except Exception as exc:  # a failed stage is a FAIL row; the others still run
            traceback.print_exc()
            ctx.add(stage, "stage raised", 0.0, passed=False, note=f"{type(exc).__name__}: {exc}"[:300])
        print(f"  [{stage}: {time.time() - stage_start:.1f} s]", flush=True)
    print("\nsummary")
    print(HEADER)
    for row in ctx.rows:
        print(format_row(row))
    failed = [r for r in ctx.rows if r.passed is False]
    print(f"acceptance: {len(ctx.rows)} rows, {sum(r.passed is True for r in ctx.rows)} passed, {len(failed)} failed, "
          f"{time.time() - started:.1f} s")  # fmt: skip
    if not args.no_records:
        print(f"records: {write_records(ctx, args.results, info)}")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
