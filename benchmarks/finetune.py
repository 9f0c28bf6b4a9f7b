"""Fine-tuning step throughput: images/s of full fine-tuning steps (mixup, forward, backward, AdamW with layer decay,
EMA) of ``evaluate.protocols.finetune.engine.Loop.step``, for ViT-S/16 at 224 px.

CPU (always): ViT-S/16, batch ``--cpu-batch`` (default 16), fp32, DeiT recipe (mixup/cutmix, drop-path 0.1, EMA) with
MAE-style layer decay 0.75. GPU (when CUDA is available): the same at ``--gpu-batch`` (default 128) in bf16, with the
peak allocated memory. Inputs are random tensors, so the numbers are the step rate without the data loader.

    python benchmarks/finetune.py [--steps 5] [--cpu-batch 16] [--gpu-batch 128] [--no-gpu] [--arch vit_small]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluate.protocols.finetune.config import FinetuneConfig  # noqa: E402
from evaluate.protocols.finetune.data import Split  # noqa: E402
from evaluate.protocols.finetune.engine import Loop  # noqa: E402
from evaluate.protocols.finetune.model import build_classifier  # noqa: E402
from pretrain.vit import build_vit  # noqa: E402
from sslcore.config import load_config  # noqa: E402

NUM_CLASSES = 1000


def make_loop(arch: str, batch: int, device: str, precision: str, out: Path) -> Loop:
    cfg = load_config(
        FinetuneConfig,
        None,
        [
            f"batch_size={batch}",
            f"device={device}",
            f"precision={precision}",
            "num_workers=0",
            "progress=false",
            "optim.layer_decay=0.75",
            "epochs=1",
        ],  # fmt: skip
    )
    images = torch.zeros(batch, 3, 224, 224)
    labels = torch.arange(batch) % NUM_CLASSES
    dataset = torch.utils.data.TensorDataset(images, labels)
    split = Split(dataset, labels.tolist(), tuple(str(i) for i in range(NUM_CLASSES)))
    model = build_classifier(build_vit(arch), NUM_CLASSES, drop_path=cfg.model.drop_path)
    return Loop(cfg, model, split, split, out, torch.device(device))


def measure(loop: Loop, batch: int, steps: int, warmup: int = 2, img: int = 224) -> dict[str, float]:
    device = loop.device
    images = torch.randn(batch, 3, img, img, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    loop.net.train()
    for i in range(warmup):
        loop.step(images, labels, i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i in range(steps):
        loss = loop.step(images, labels, warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    out = {"batch": batch, "s_per_step": seconds, "images_per_s": batch / seconds, "precision": loop.precision}
    out["loss"] = loss
    if device.type == "cuda":
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--arch", default="vit_small")
    parser.add_argument("--cpu-batch", type=int, default=16)
    parser.add_argument("--gpu-batch", type=int, default=128)
    parser.add_argument("--no-gpu", action="store_true")
    parser.add_argument("--out", default="runs/benchmarks/finetune")
    args = parser.parse_args()
    results = {"arch": args.arch, "torch_threads": torch.get_num_threads()}
    loop = make_loop(args.arch, args.cpu_batch, "cpu", "fp32", Path(args.out))
    results["cpu_fp32"] = measure(loop, args.cpu_batch, args.steps)
    if torch.cuda.is_available() and not args.no_gpu:
        loop = make_loop(args.arch, args.gpu_batch, "cuda", "bf16", Path(args.out))
        results["cuda_bf16"] = measure(loop, args.gpu_batch, max(args.steps, 10))
        results["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
