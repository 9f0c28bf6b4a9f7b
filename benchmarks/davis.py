"""DAVIS speed: batched label propagation vs a plain per-frame loop, feature cost vs propagation cost, J&F scoring.

1. One sequence's propagation from precomputed (cached) features: :func:`evaluate.davis.propagation.propagate`
   (target frames batched, weights in one product per chunk) against the straightforward loop DINO's script runs
   (per target frame: re-normalise the queue's features, one affinity product per context frame, stack, top-k,
   normalise, propagate). Both give the same labels (checked here, and in tests/test_davis_propagation.py).
2. What a sweep point costs: extracting the sequence's features with a ViT-S/16 vs propagating from the cache.
3. J&F scoring of a folder of 854x480 masks (synthetic moving discs): frames per second.

Run: ``PYTHONPATH=. python benchmarks/davis.py [--frames 20 --grid 12 20 --device cpu]`` (defaults take well under a
minute on CPU; ``--grid 30 52 --frames 70`` is a real DAVIS 480p sequence at patch 16).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evaluate.davis import propagation as P
from evaluate.davis.data import write_label
from evaluate.davis.score import score_results
from evaluate.palette import voc_palette


def loop_propagation(features, first, grid, n_last_frames=7, topk=5, size=12):
    """The straightforward per-frame loop (DINO's structure), sources x targets layout."""
    mask = P.neighborhood_mask(*grid, size, device=features.device)
    queue, out = [], [first]
    for t in range(1, features.shape[0]):
        ctx_feats = torch.stack([features[0]] + [q[0] for q in queue])
        ctx_labels = torch.cat([first] + [q[1] for q in queue])
        tgt = F.normalize(features[t], dim=1)
        srcs = F.normalize(ctx_feats, dim=2)
        aff = torch.cat([torch.exp(src @ tgt.T / 0.1) * mask for src in srcs])  # one product per context frame
        kth = aff.topk(topk, dim=0).values.min(dim=0).values
        aff[aff < kth] = 0
        aff = aff / aff.sum(0, keepdim=True)
        label = (ctx_labels.T @ aff).T
        out.append(label)
        if len(queue) == n_last_frames:
            queue.pop(0)
        queue.append((features[t], label))
    return torch.stack(out)


def timed(fn, device, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return out, best


def bench_propagation(args, device):
    h, w = args.grid
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(args.frames, h * w, args.dim, generator=gen).to(device)
    first = F.one_hot(torch.randint(0, 4, (h * w,), generator=gen), 4).float().to(device)
    ours, t_ours = timed(lambda: P.propagate(feats, first, (h, w)), device, args.repeat)
    ref, t_loop = timed(lambda: loop_propagation(feats, first, (h, w)), device, args.repeat)
    err = (ours - ref).abs().max().item()
    print(f"propagation, {args.frames} frames, grid {h}x{w}, D={args.dim}, 7+1 context frames, top-5, window 12:")
    print(
        f"  batched (cached features) {t_ours:7.3f} s   per-frame loop {t_loop:7.3f} s   "
        f"ratio {t_loop / t_ours:5.2f}x   max |diff| {err:.1e}"
    )
    return t_ours


def bench_features(args, device, t_prop):
    from pretrain.vit import build_vit

    h, w = args.grid
    model = build_vit("vit_small").eval().to(device)
    frames = torch.randn(args.frames, 3, h * 16, w * 16, device=device)
    with torch.inference_mode():
        _, t_feat = timed(lambda: [model.forward_tokens(frames[i : i + 8]).patch for i in range(0, len(frames), 8)], device)
    print(
        f"sweep point: ViT-S/16 features {t_feat:7.3f} s + propagation {t_prop:7.3f} s without the cache, "
        f"propagation only with it: {(t_feat + t_prop) / t_prop:5.1f}x cheaper"
    )


def bench_scoring(args):
    rng = np.random.default_rng(0)
    height, width, seqs, frames = 480, 854, 2, args.score_frames
    yy, xx = np.mgrid[:height, :width]
    palette = voc_palette()
    with tempfile.TemporaryDirectory() as tmp:
        root, results = Path(tmp) / "davis", Path(tmp) / "results"
        names = []
        for s in range(seqs):
            name = f"bench-{s}"
            names.append(name)
            centres = rng.uniform([100, 100], [height - 100, width - 100], size=(3, 2))
            velocity = rng.uniform(-4, 4, size=(3, 2))
            for t in range(frames):
                gt = np.zeros((height, width), np.uint8)
                pred = np.zeros_like(gt)
                for k, (c, v) in enumerate(zip(centres, velocity), 1):
                    cy, cx = c + t * v
                    gt[(yy - cy) ** 2 + (xx - cx) ** 2 < 60**2] = k
                    pred[(yy - cy - 3) ** 2 + (xx - cx + 2) ** 2 < 58**2] = k
                (root / "JPEGImages" / "480p" / name).mkdir(parents=True, exist_ok=True)
                (root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg").touch()
                write_label(root / "Annotations" / "480p" / name / f"{t:05d}.png", gt, palette)
                write_label(results / name / f"{t:05d}.png", pred, palette)
        (root / "ImageSets" / "2017").mkdir(parents=True)
        (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
        start = time.perf_counter()
        summary, rows = score_results(root, results, "val")
        elapsed = time.perf_counter() - start
    scored = seqs * (frames - 2)
    print(
        f"J&F scoring: {scored} scored 854x480 frames, {len(rows)} objects in {elapsed:.2f} s = "
        f"{scored / elapsed:.1f} frames/s ({len(rows) * scored / seqs / elapsed:.1f} object-frames/s); "
        f"J&F {summary['J&F-Mean']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--grid", type=int, nargs=2, default=(12, 20), metavar=("H", "W"))
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--score-frames", type=int, default=20, help="frames per synthetic sequence to score")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    t_prop = bench_propagation(args, device)
    bench_features(args, device, t_prop)
    bench_scoring(args)


if __name__ == "__main__":
    main()
