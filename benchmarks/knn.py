"""k-NN speed: the chunked one-pass implementation vs a straightforward per-query loop, side by side.

Synthetic unit features (default 100k x 384 train, 10k test, 1000 classes), k in {10, 20, 100, 200}, T = 0.07. The
per-query reference (one matrix-vector product, one top-k and one weighted bincount per k per query) is timed on
``--ref-queries`` queries and its time is extrapolated linearly to the full test set (it is stated as such); its
predictions on those queries are checked against the chunked ones.

    python benchmarks/knn.py                       # defaults (about a minute on 2 CPU cores)
    python benchmarks/knn.py --n-train 20000 --n-test 2000 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluate.knn import knn_accuracy  # noqa: E402

KS = (10, 20, 100, 200)


def per_query(train: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, C: int, T: float) -> dict[int, list]:
    """The straightforward implementation: every query on its own."""
    train = F.normalize(train, dim=1)
    preds: dict[int, list[int]] = {k: [] for k in KS}
    for q in F.normalize(queries, dim=1):
        sims = train @ q
        vals, idx = sims.topk(max(KS))
        for k in KS:
            scores = torch.bincount(labels[idx[:k]], weights=(vals[:k] / T).exp(), minlength=C)
            preds[k].append(int(scores.argmax()))
    return preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=100_000)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--ref-queries", type=int, default=300, help="queries timed for the per-query reference")
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    train = torch.randn(args.n_train, args.dim, generator=gen).to(args.device)
    labels = torch.randint(0, args.classes, (args.n_train,), generator=gen).to(args.device)
    test = torch.randn(args.n_test, args.dim, generator=gen).to(args.device)
    test_labels = torch.randint(0, args.classes, (args.n_test,), generator=gen)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    knn_accuracy(train, labels, test[:64], test_labels[:64], KS, num_classes=args.classes)  # warm-up
    sync()
    start = time.perf_counter()
    knn_accuracy(train, labels, test, test_labels, KS, num_classes=args.classes, chunk=args.chunk)
    sync()
    fast = time.perf_counter() - start

    n_ref = min(args.ref_queries, args.n_test)
    sync()
    start = time.perf_counter()
    ref = per_query(train, labels, test[:n_ref], args.classes, 0.07)
    sync()
    ref_time = (time.perf_counter() - start) * args.n_test / n_ref

    from evaluate.knn import knn_predict

    check = knn_predict(train, labels, test[:n_ref], KS, num_classes=args.classes, chunk=args.chunk)
    agree = min(float((check[k].argmax(1) == torch.tensor(ref[k])).float().mean()) for k in KS)

    print(f"device={args.device} train={args.n_train}x{args.dim} test={args.n_test} classes={args.classes} ks={KS}")
    print(f"chunked one-pass k-NN:  {fast:8.2f} s")
    print(f"per-query reference:    {ref_time:8.2f} s (measured on {n_ref} queries, scaled to {args.n_test})")
    print(f"speed-up: {ref_time / fast:.1f}x   prediction agreement on the timed queries: {100 * agree:.2f}%")


if __name__ == "__main__":
    main()
