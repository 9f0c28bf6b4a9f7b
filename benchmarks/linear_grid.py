"""Linear-probe grid speed: 13 learning rates trained together vs one head, on the same cached features.

All runs use :func:`evaluate.linear.train_heads` on the same synthetic feature bank (N x F, C classes), the same
batches and epochs, with per-epoch evaluation on a held-out bank. Printed side by side:

* one head (the DINO v1 protocol's cost);
* the grid: 13 heads stacked into one (13, C, F) weight and one batched matmul (target <= 1.3x one head);
* 13 heads trained one after another (what the grid replaces).

On cached features the heads are the whole cost, so the grid costs what its 13x larger matmuls cost (a CPU is
compute-bound there); the <= 1.3x target is met when the frozen forward is part of every step, as in the papers'
augmented protocol. With ``--backbone vit_pico`` (or another tiny arch) every step also runs the frozen backbone on a batch of random
images, as the augmented mode does; that cost is shared by all heads of the grid.

    python benchmarks/linear_grid.py
    python benchmarks/linear_grid.py --classes 1000 --dim 1536 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluate.features import tap_features  # noqa: E402
from evaluate.linear import GRID_LRS, HeadGrid, HeadGroup, train_heads  # noqa: E402


def timed_run(lrs, bank, labels, val, args, backbone=None) -> float:
    grid = HeadGrid([HeadGroup("all", 0, bank.shape[1])], lrs, args.classes, seed=0).to(bank.device)
    images = torch.randn(args.batch, 3, args.img, args.img, device=bank.device) if backbone is not None else None

    def batches(epoch):
        order = torch.randperm(len(bank), generator=torch.Generator().manual_seed(epoch)).to(bank.device)
        for s in range(0, len(bank), args.batch):
            idx = order[s : s + args.batch]
            if backbone is not None:
                with torch.no_grad():
                    tap_features(backbone, images[: len(idx)], "cls", 1)
            yield bank[idx], labels[idx]

    steps = -(-len(bank) // args.batch)
    sync = torch.cuda.synchronize if bank.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    train_heads(grid, batches, args.epochs, steps, {"val": val}, schedule_step="iter", progress=False)
    sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192, help="train rows")
    parser.add_argument("--dim", type=int, default=384 * 4)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--backbone", default=None, help="also run this frozen arch per step (e.g. vit_pico)")
    parser.add_argument("--img", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    bank = torch.randn(args.n, args.dim, generator=gen).to(args.device)
    labels = torch.randint(0, args.classes, (args.n,), generator=gen).to(args.device)
    val = (torch.randn(args.n // 10, args.dim, generator=gen).to(args.device), labels[: args.n // 10])
    backbone = None
    if args.backbone:
        from pretrain.vit import build_vit

        backbone = build_vit(args.backbone).eval().to(args.device)

    lrs = [lr * args.batch / 256 for lr in GRID_LRS]
    timed_run(lrs[:1], bank[: args.batch * 2], labels[: args.batch * 2], val, args, backbone)  # warm-up
    one = timed_run(lrs[6:7], bank, labels, val, args, backbone)
    grid = timed_run(lrs, bank, labels, val, args, backbone)
    separate = sum(timed_run([lr], bank, labels, val, args, backbone) for lr in lrs)

    print(
        f"device={args.device} bank={args.n}x{args.dim} classes={args.classes} batch={args.batch} "
        f"epochs={args.epochs} backbone={args.backbone}"
    )
    print(f"one head:                  {one:7.2f} s")
    print(f"grid of {len(lrs)} heads (stacked): {grid:7.2f} s   ratio to one head: {grid / one:.2f}x (target <= 1.3x)")
    print(f"{len(lrs)} heads one by one:       {separate:7.2f} s   grid speed-up over them: {separate / grid:.1f}x")


if __name__ == "__main__":
    main()
