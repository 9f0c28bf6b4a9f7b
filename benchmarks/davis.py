"""DAVIS speed: sslbench's label propagation against DINO's, feature cost vs propagation cost, J&F scoring.

1. One sequence's propagation from precomputed (cached) features: :func:`evaluate.protocols.davis.propagation.propagate`
   against DINO's ``label_propagation`` + the queue loop of ``eval_video_tracking_davis`` (facebookresearch/dino
   ``eval_video_segmentation.py`` at commit 7c446df5b9f45747937fb0d72314eb9f7b66930a, transcribed below with the
   feature extraction, the upsampling and the file I/O left out; the neighbourhood mask, which DINO builds once per
   video with Python loops, is given to it precomputed), interleaved over ``--repeat`` rounds. Printed: min / median,
   the ratio, the matmul floor (the affinity products alone, (N, D) x (D, C*N) per target frame, timed in the same
   rounds) and the fraction of it each reaches, and the largest soft-label difference.
2. What a sweep point costs: extracting the sequence's features with a ViT-S/16 vs propagating from the cache.
3. J&F scoring of a folder of 854x480 masks (synthetic moving discs): frames per second.

Run: ``PYTHONPATH=. python benchmarks/davis.py [--frames 50 --grid 30 52 --repeat 3 --device cpu]`` (the defaults are
a 50-frame DAVIS 480p sequence at patch 16; ``--only-propagation`` skips parts 2 and 3).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import interleaved, line  # noqa: E402

from evaluate.datasets.palette import voc_palette  # noqa: E402
from evaluate.protocols.davis import propagation as P  # noqa: E402
from evaluate.protocols.davis.data import write_label  # noqa: E402
from evaluate.protocols.davis.score import score_results  # noqa: E402


def dino_label_propagation(feat_tar, list_frame_feats, list_segs, mask_neighborhood, topk, h, w):
    """DINO eval_video_segmentation.py::label_propagation (7c446df), transcribed from the target's features on.

    feat_tar: (h*w, dim) target features; list_frame_feats: [(dim, h*w)]; list_segs: [(1, K, h, w)].
    """
    return_feat_tar = feat_tar.T
    ncontext = len(list_frame_feats)
    feat_sources = torch.stack(list_frame_feats)
    feat_tar = F.normalize(feat_tar, dim=1, p=2)
    feat_sources = F.normalize(feat_sources, dim=1, p=2)
    feat_tar = feat_tar.unsqueeze(0).repeat(ncontext, 1, 1)
    aff = torch.exp(torch.bmm(feat_tar, feat_sources) / 0.1)
    if mask_neighborhood is not None:
        aff *= mask_neighborhood
    aff = aff.transpose(2, 1).reshape(-1, h * w)
    tk_val, _ = torch.topk(aff, dim=0, k=topk)
    tk_val_min, _ = torch.min(tk_val, dim=0)
    aff[aff < tk_val_min] = 0
    aff = aff / torch.sum(aff, keepdim=True, axis=0)
    segs = torch.cat(list_segs)
    nmb_context, C, h, w = segs.shape
    segs = segs.reshape(nmb_context, C, -1).transpose(2, 1).reshape(-1, C).T
    seg_tar = torch.mm(segs, aff)
    return seg_tar.reshape(1, C, h, w), return_feat_tar


def dino_video(features, first, grid, n_last_frames=7, topk=5, size=12):
    """The queue loop of DINO's eval_video_tracking_davis (7c446df) on precomputed features; soft labels (T, N, K)."""
    h, w = grid
    mask = P.neighborhood_mask(h, w, size, device=features.device)  # = restrict_neighborhood(h, w), precomputed
    mask = None if mask is None else mask.unsqueeze(0)
    first_seg = first.T.reshape(1, -1, h, w)
    frame1_feat = features[0].T
    que, out = [], [first]
    for cnt in range(1, features.shape[0]):
        used_frame_feats = [frame1_feat] + [pair[0] for pair in que]
        used_segs = [first_seg] + [pair[1] for pair in que]
        seg, feat_tar = dino_label_propagation(features[cnt], used_frame_feats, used_segs, mask, topk, h, w)
        if len(que) == n_last_frames:
            que.pop(0)
        que.append([feat_tar, seg.clone()])
        out.append(seg.reshape(seg.shape[1], -1).T)
    return torch.stack(out)


def affinity_floor(features, n_last_frames=7):
    """The affinity matmuls alone: per target frame, (N, D) x (D, C*N) with its C context frames."""
    for t in range(1, features.shape[0]):
        ctx = P.context_slots(t, n_last_frames)
        torch.mm(features[t], features[ctx].reshape(-1, features.shape[-1]).T)


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
    # smooth-ish features: a random field per frame plus a shared component, as real patch features correlate
    base = torch.randn(1, h * w, args.dim, generator=gen)
    feats = (base + 0.7 * torch.randn(args.frames, h * w, args.dim, generator=gen)).to(device)
    first = F.one_hot(torch.randint(0, 4, (h * w,), generator=gen), 4).float().to(device)
    fns = {
        "sslbench propagate": lambda: P.propagate(feats, first, (h, w)),
        "DINO label_propagation loop": lambda: dino_video(feats, first, (h, w)),
        "matmul floor": lambda: affinity_floor(feats),
    }
    short = feats[:3]
    interleaved(
        {"a": lambda: P.propagate(short, first, (h, w)), "b": lambda: dino_video(short, first, (h, w))}, 1, device
    )
    times, out = interleaved(fns, args.repeat, device)
    ours_soft, dino_soft = out["sslbench propagate"], out["DINO label_propagation loop"]
    err = (ours_soft - dino_soft).abs().max().item()
    masks_equal = float(
        (P.upsample_argmax(ours_soft, (h, w), 16) == P.upsample_argmax(dino_soft, (h, w), 16)).float().mean()
    )
    n, ctx = h * w, args.frames - 1
    flop = sum(2.0 * n * args.dim * n * len(P.context_slots(t, 7)) for t in range(1, args.frames))
    fl = min(times["matmul floor"])
    print(
        f"propagation, {args.frames} frames, grid {h}x{w}, D={args.dim}, 7+1 context frames, top-5, window 12, "
        f"device={device}, repeat={args.repeat} (interleaved; min is the figure):"
    )
    for name, secs in times.items():
        print(line(name, secs) + f"   time/floor {min(secs) / fl:5.2f}")
    ours, dino = min(times["sslbench propagate"]), min(times["DINO label_propagation loop"])
    print(
        f"  ratio DINO / sslbench {dino / ours:5.2f}x   sslbench / floor {ours / fl:5.2f}x   "
        f"floor {flop:.2e} FLOP over {ctx} target frames at {flop / fl / 1e9:.0f} GFLOP/s   "
        f"max |soft-label diff| {err:.1e}   identical mask pixels (x16 upsampled argmax) {100 * masks_equal:.4f}%"
    )
    return ours, err


def bench_features(args, device, t_prop):
    from pretrain.vit import build_vit

    h, w = args.grid
    model = build_vit("vit_small").eval().to(device)
    frames = torch.randn(args.frames, 3, h * 16, w * 16, device=device)
    with torch.inference_mode():
        _, t_feat = timed(
            lambda: [model.forward_tokens(frames[i : i + 8]).patch for i in range(0, len(frames), 8)], device
        )
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
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--grid", type=int, nargs=2, default=(30, 52), metavar=("H", "W"))
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only-propagation", action="store_true")
    parser.add_argument("--score-frames", type=int, default=20, help="frames per synthetic sequence to score")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    t_prop, err = bench_propagation(args, device)
    if not args.only_propagation:
        bench_features(args, device, t_prop)
        bench_scoring(args)
    if err > 1e-3:  # float32 near-ties (two logits within rounding) may order differently; more is a bug
        sys.exit(1)


if __name__ == "__main__":
    main()
