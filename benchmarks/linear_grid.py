"""Linear-probe grid speed: 13 learning rates trained together vs one head, on the same cached features.

All runs use :func:`evaluate.protocols.linear.train_heads` on the same synthetic feature bank (N x F, C classes), the same
batches and epochs, with per-epoch evaluation on a held-out bank, interleaved over ``--repeat`` rounds (min and
median printed):

* one head (the DINO v1 protocol's cost);
* the grid: 13 heads stacked into one (13, C, F) weight, one fused (B, F) x (F, 13*C) product per step;
* the grid's matmul floor: the same products alone (forward logits and weight gradient of all 13 heads, every step;
  no loss, optimiser or data gather), timed in the same rounds;
* with ``--separate``, 13 heads one after another (what the grid replaces).

On cached features a step of the grid is 13 heads' products, 13x the FLOPs of one head's, so on a compute-bound device
(a CPU) the grid's ratio to one head is bounded below by how much of one head's step is product rather than overhead;
the fraction of the floor says how close the grid itself is to its products. With ``--backbone vit_pico`` (or another
tiny arch) every step also runs the frozen backbone on a batch of random images, as the augmented mode does; that cost
is shared by all heads of the grid.

    python benchmarks/linear_grid.py [--repeat 3]
    python benchmarks/linear_grid.py --classes 1000 --dim 1536 --device cuda
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import interleaved, line  # noqa: E402

from evaluate.protocols.features import tap_features  # noqa: E402
from evaluate.protocols.linear import GRID_LRS, HeadGrid, HeadGroup, train_heads  # noqa: E402


def run_heads(lrs, bank, labels, val, args, backbone=None) -> torch.Tensor:
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
    return train_heads(grid, batches, args.epochs, steps, {"val": val}, schedule_step="iter", progress=False)["val"]


def products(heads, bank, args) -> None:
    """The grid's matmuls alone: per step, logits (B, F) x (F, H*C) and the weight gradient (H*C, B) x (B, F)."""
    weight = torch.randn(heads * args.classes, bank.shape[1], device=bank.device)
    for _ in range(args.epochs):
        for s in range(0, len(bank), args.batch):
            x = bank[s : s + args.batch]
            logits = x @ weight.T
            logits.T @ x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192, help="train rows")
    parser.add_argument("--dim", type=int, default=384 * 4)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--separate", action="store_true", help="also train the 13 heads one by one")
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
    run_heads(lrs, bank[: args.batch * 2], labels[: args.batch * 2], val, args, backbone)  # warm-up
    fns = {
        "one head": lambda: run_heads(lrs[6:7], bank, labels, val, args, backbone),
        f"grid of {len(lrs)} heads": lambda: run_heads(lrs, bank, labels, val, args, backbone),
        f"matmul floor of {len(lrs)} heads": lambda: products(len(lrs), bank, args),
    }
    if args.separate:
        fns[f"{len(lrs)} heads one by one"] = lambda: [run_heads([lr], bank, labels, val, args, backbone) for lr in lrs]
    times, _ = interleaved(fns, args.repeat, args.device)
    one, grid = min(times["one head"]), min(times[f"grid of {len(lrs)} heads"])
    floor = min(times[f"matmul floor of {len(lrs)} heads"])
    print(
        f"device={args.device} bank={args.n}x{args.dim} classes={args.classes} batch={args.batch} "
        f"epochs={args.epochs} backbone={args.backbone} repeat={args.repeat} (interleaved; min is the figure)"
    )
    for name, secs in times.items():
        print(line(name, secs))
    print(f"  grid / one head {grid / one:.2f}x (target <= 1.3x)   grid / its matmul floor {grid / floor:.2f}x")
    if args.separate:
        print(f"  grid speed-up over one by one: {min(times[f'{len(lrs)} heads one by one']) / grid:.1f}x")
    # that every head of the grid trains exactly as a lone head is tested: tests/test_linear.py::test_grid_equals_*


if __name__ == "__main__":
    main()
