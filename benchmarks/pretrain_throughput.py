"""Pretraining step throughput: steps/s and images/s of full training steps (forward, backward, clip, AdamW, EMA).

CPU (always, about 30 s): a tiny BAM (vit_femto, 2x32 + 2x16 crops, batch 32, projector 256) in fp32 and bf16 side by
side, the multi-crop data pipeline alone (images/s of ``MultiCropAugment`` on 64x64 images), and the same step for
DINO and iBOT (K = 1024). GPU (when CUDA is available): the ViT-S/16 recipe of each method (``bam_vits16``,
``dino_vits16``, ``ibot_vits16``: their crops, heads and K) at ``--gpu-batch`` images per GPU in bf16, side by side:
steps/s, images/s, peak memory, and the model FLOPs of one step counted by ``torch.utils.flop_counter`` so that
MFU = FLOPs x steps/s / peak FLOP/s can be read (``--peak-tflops``, default 989 = H100 SXM dense bf16).

    python benchmarks/pretrain_throughput.py [--steps 10] [--gpu-batch 64] [--no-gpu]

Inputs are random tensors (the loader is measured separately), so the numbers are the engine's step rate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pretrain.config import PretrainConfig  # noqa: E402
from pretrain.engine import Trainer  # noqa: E402
from pretrain.methods import method_class  # noqa: E402
from pretrain.views import Batch, random_batch  # noqa: E402
from sslcore.config import load_config  # noqa: E402

RECIPES = Path(__file__).resolve().parent.parent / "pretrain" / "configs"


def make_trainer(overrides: dict, recipe: str | None = None) -> Trainer:
    path = RECIPES / recipe if recipe else None
    cfg = load_config(PretrainConfig, path, [f"{k}={v}" for k, v in overrides.items()])
    return Trainer(cfg, iters_per_epoch=10_000)


def views_for(cfg: PretrainConfig, batch: int, device: str, generator: torch.Generator | None = None) -> Batch:
    """A noise batch laid out as the method's view plan asks (masks included for iBOT); ``generator`` (on the CPU,
    with ``device="cpu"``) makes it the same batch on every call."""
    d = cfg.data
    plan = method_class(cfg.method).view_plan(cfg)
    return random_batch(plan, batch, d.global_size, d.local_size, generator=generator, device=device)


def time_steps(trainer: Trainer, views: Batch, steps: int, warmup: int = 2) -> float:
    """Seconds per step (after warm-up)."""
    for _ in range(warmup):
        trainer.train_step(views)
    if views.globals[0].is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(views)
    if views.globals[0].is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def step_flops(trainer: Trainer, views: Batch) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.train_step(views)
    return counter.get_total_flops()


TINY_DINO_HEADS = {"model.init": "dino", "dino.out_dim": 1024, "dino.hidden_dim": 256, "dino.bottleneck_dim": 64}
TINY_METHOD = {  # what each method adds to the tiny model and crops (K = 1024 for DINO/iBOT)
    "bam": {
        "model.pos_embed": "sincos",
        "model.freeze_patch_embed": True,
        "model.init": "moco",
        "bam.proj_hidden": 256,
        "bam.proj_out": 256,
    },
    "dino": TINY_DINO_HEADS,
    "ibot": {**TINY_DINO_HEADS, "ibot.patch_out_dim": 1024},
    "adclr": {**TINY_DINO_HEADS, "adclr.query_crops": 4},
    "sere": {**TINY_DINO_HEADS, "ibot.patch_out_dim": 1024, "sere.global_grid": 3, "sere.local_grid": 2},
}


def tiny_overrides(method: str) -> dict:
    """The CPU-sized recipe of ``method``: vit_femto, 2 x 32 + 2 x 16 crops, small heads (also the acceptance dry run's,
    benchmarks/gpu/acceptance.py)."""
    tiny = {"model.arch": "vit_femto", "data.global_size": 32, "data.local_size": 16, "data.local_crops": 2}
    return {**tiny, **TINY_METHOD[method], "method": method}


def cpu_bench(steps: int) -> None:
    base = {**tiny_overrides("bam"), "train.batch_size": 32, "train.device": "cpu"}
    rows, flops = [], 0
    for precision in ("fp32", "bf16"):
        trainer = make_trainer({**base, "train.precision": precision})
        views = views_for(trainer.cfg, 32, "cpu")
        sec = time_steps(trainer, views, steps)
        rows.append((precision, 1 / sec, 32 / sec))
        flops = flops or step_flops(trainer, views)
    print(f"CPU tiny BAM (vit_femto, 2x32+2x16, batch 32, {torch.get_num_threads()} threads)")
    print(f"  model FLOPs per step {flops / 1e9:.3f} GFLOP -> {flops * rows[0][1] / 1e9:.1f} GFLOP/s in fp32")
    for precision, sps, ips in rows:
        print(f"  {precision:5s} {sps:7.2f} steps/s {ips:8.1f} images/s   ratio to fp32 {sps / rows[0][1]:.2f}")

    import numpy as np
    from PIL import Image

    from pretrain.config import DataConfig
    from pretrain.crops import MultiCropAugment

    aug = MultiCropAugment(DataConfig(global_size=32, local_size=16, local_crops=2))
    imgs = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)) for i in range(64)]
    start = time.perf_counter()
    for img in imgs:
        aug(img)
    ips = len(imgs) / (time.perf_counter() - start)
    print(f"  data  multi-crop augmentation, one process: {ips:8.1f} images/s ({ips / rows[0][2]:.2f}x the fp32 step)")
    for method in ("dino", "ibot"):
        over = {**tiny_overrides(method), "train.batch_size": 32, "train.device": "cpu", "train.precision": "fp32"}
        trainer = make_trainer(over)
        views = views_for(trainer.cfg, 32, "cpu")
        sec = time_steps(trainer, views, steps)
        print(f"  {method:5s} fp32 {1 / sec:7.2f} steps/s {32 / sec:8.1f} images/s   (K = 1024, same crops)")


GPU_RUNS = {  # the paper-size ViT-S/16 step of each method, from its recipe (crops, heads, K, clipping)
    "bam": "bam_vits16.yaml",
    "dino": "dino_vits16.yaml",
    "ibot": "ibot_vits16.yaml",
}


def gpu_bench(steps: int, batch: int, peak_tflops: float) -> None:
    """Images/s, peak memory and MFU of one bf16 training step per method on random data, side by side."""
    for method, recipe in GPU_RUNS.items():
        trainer = make_trainer({"train.batch_size": batch, "train.precision": "bf16", "train.device": "cuda"}, recipe)
        views = views_for(trainer.cfg, batch, "cuda")
        torch.cuda.reset_peak_memory_stats()
        sec = time_steps(trainer, views, steps)
        peak_gb = torch.cuda.max_memory_allocated() / 2**30
        flops = step_flops(trainer, views)
        achieved = flops / sec / 1e12
        d = trainer.cfg.data
        print(
            f"GPU {torch.cuda.get_device_name()}: {method} ViT-S/16 ({recipe}), {d.global_crops}x{d.global_size}+"
            f"{d.local_crops}x{d.local_size}, batch {batch}/GPU, bf16: {1 / sec:.3f} steps/s  {batch / sec:.1f} "
            f"images/s  peak memory {peak_gb:.1f} GiB  {flops / 1e12:.2f} TFLOP/step -> {achieved:.1f} TFLOP/s, "
            f"MFU {achieved / peak_tflops:.1%}"
        )
        del trainer, views
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--gpu-batch", type=int, default=64, help="images per GPU for every method (DINO/iBOT: 64)")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--no-gpu", action="store_true")
    args = parser.parse_args()
    cpu_bench(args.steps)
    if torch.cuda.is_available() and not args.no_gpu:
        gpu_bench(args.steps, args.gpu_batch, args.peak_tflops)


if __name__ == "__main__":
    main()
