"""k-NN speed and memory: ``evaluate.protocols.knn.knn_accuracy`` against DINO's ``knn_classifier``, interleaved, same inputs.

Reference: facebookresearch/dino ``eval_knn.py::knn_classifier`` at commit 7c446df5b9f45747937fb0d72314eb9f7b66930a,
transcribed below (``dino_knn_classifier``: only the formatting differs). DINO calls it once per k, so "four k" is four
calls; sslbench does all k from one top-k. Synthetic unit features (default 50,000 x 384 train, 10,000 queries, 1,000
classes), T = 0.07. Printed: min / median time over ``--repeat`` interleaved rounds, the ratio, the matmul floor (the
(M, D) x (D, N) similarity products alone, timed in the same rounds) and the fraction of it each run reaches, and the
peak memory each call adds above the data (CPU: peak resident memory; CUDA: allocator peak), measured before the timed rounds. The
accuracies must be equal (both rank classes by a stable descending sort).

    python benchmarks/knn.py [--repeat 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cuda_peak_extra_mib, interleaved, line, peak_extra_mib  # noqa: E402

from evaluate.protocols.knn import knn_accuracy  # noqa: E402


@torch.no_grad()
def dino_knn_classifier(train_features, train_labels, test_features, test_labels, k, T, num_classes=1000):
    """DINO eval_knn.py::knn_classifier (7c446df), transcribed; features are L2-normalised by the caller."""
    top1, top5, total = 0.0, 0.0, 0
    train_features = train_features.t()
    num_test_images, num_chunks = test_labels.shape[0], 100
    imgs_per_chunk = num_test_images // num_chunks
    retrieval_one_hot = torch.zeros(k, num_classes).to(train_features.device)
    for idx in range(0, num_test_images, imgs_per_chunk):
        features = test_features[idx : min((idx + imgs_per_chunk), num_test_images), :]
        targets = test_labels[idx : min((idx + imgs_per_chunk), num_test_images)]
        batch_size = targets.shape[0]
        similarity = torch.mm(features, train_features)
        distances, indices = similarity.topk(k, largest=True, sorted=True)
        candidates = train_labels.view(1, -1).expand(batch_size, -1)
        retrieved_neighbors = torch.gather(candidates, 1, indices)
        retrieval_one_hot.resize_(batch_size * k, num_classes).zero_()
        retrieval_one_hot.scatter_(1, retrieved_neighbors.view(-1, 1), 1)
        distances_transform = distances.clone().div_(T).exp_()
        probs = torch.sum(
            torch.mul(retrieval_one_hot.view(batch_size, -1, num_classes), distances_transform.view(batch_size, -1, 1)),
            1,
        )
        _, predictions = probs.sort(1, True)
        correct = predictions.eq(targets.data.view(-1, 1))
        top1 = top1 + correct.narrow(1, 0, 1).sum().item()
        top5 = top5 + correct.narrow(1, 0, min(5, k)).sum().item()
        total += targets.size(0)
    return top1 * 100.0 / total, top5 * 100.0 / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(args.classes, args.dim, generator=gen)
    labels = torch.randint(0, args.classes, (args.n_train,), generator=gen)
    test_labels = torch.randint(0, args.classes, (args.n_test,), generator=gen)
    # clustered features (about half of the queries' nearest neighbour share their class): realistic ties and votes
    train = F.normalize(centers[labels] + 4.0 * torch.randn(args.n_train, args.dim, generator=gen), dim=1)
    test = F.normalize(centers[test_labels] + 4.0 * torch.randn(args.n_test, args.dim, generator=gen), dim=1)
    train, labels, test, test_labels = (t.to(args.device) for t in (train, labels, test, test_labels))
    ks = (10, 20, 100, 200)

    def floor() -> None:
        for start in range(0, args.n_test, 1000):
            torch.mm(test[start : start + 1000], train.T)

    fns = {
        "sslbench k=20": lambda: knn_accuracy(train, labels, test, test_labels, [20], num_classes=args.classes),
        "DINO k=20": lambda: dino_knn_classifier(train, labels, test, test_labels, 20, 0.07, args.classes),
        "sslbench k=10,20,100,200": lambda: knn_accuracy(
            train, labels, test, test_labels, ks, num_classes=args.classes
        ),
        "DINO k=10,20,100,200 (4 calls)": lambda: [
            dino_knn_classifier(train, labels, test, test_labels, k, 0.07, args.classes) for k in ks
        ],
        "matmul floor": floor,
    }
    interleaved(
        {
            "warm-up": lambda: knn_accuracy(train, labels, test[:200], test_labels[:200], [20]),
            "warm-up DINO": lambda: dino_knn_classifier(
                train, labels, test[:200], test_labels[:200], 20, 0.07, args.classes
            ),
        },
        1,
        args.device,
    )
    mem_line = ""
    if not args.no_memory:
        peak = cuda_peak_extra_mib if args.device.startswith("cuda") else peak_extra_mib
        mem = {
            "sslbench four k": peak(
                lambda: knn_accuracy(train, labels, test, test_labels, ks, num_classes=args.classes)
            ),
            "DINO four k": peak(
                lambda: [dino_knn_classifier(train, labels, test, test_labels, k, 0.07, args.classes) for k in ks]
            ),
        }
        data = sum(t.numel() * t.element_size() for t in (train, labels, test, test_labels)) / 2**20
        mem_line = f"  peak memory above the data ({data:.0f} MiB): " + ", ".join(
            f"{k} +{v:.0f} MiB" for k, v in mem.items()
        )
    times, out = interleaved(fns, args.repeat, args.device)

    flop = 2.0 * args.n_train * args.n_test * args.dim
    print(
        f"device={args.device} train={args.n_train}x{args.dim} test={args.n_test} classes={args.classes} "
        f"repeat={args.repeat} (interleaved; min is the figure)"
    )
    fl = min(times["matmul floor"])
    for name, secs in times.items():
        print(line(name, secs) + f"   floor/time {fl / min(secs):5.2f}")
    print(f"  matmul floor: {flop:.2e} FLOP at {flop / fl / 1e9:.0f} GFLOP/s")
    print(
        f"  ratio DINO / sslbench: k=20 {min(times['DINO k=20']) / min(times['sslbench k=20']):.2f}x, "
        f"four k {min(times['DINO k=10,20,100,200 (4 calls)']) / min(times['sslbench k=10,20,100,200']):.2f}x"
    )

    ours = out["sslbench k=10,20,100,200"]
    dino = dict(zip(ks, out["DINO k=10,20,100,200 (4 calls)"]))
    equal = all(ours[f"top1@k{k}"] == dino[k][0] and ours[f"top5@k{k}"] == dino[k][1] for k in ks)
    for k in ks:
        print(
            f"  k={k:3d}  top1 {ours[f'top1@k{k}']:.2f} / {dino[k][0]:.2f}   top5 {ours[f'top5@k{k}']:.2f} / {dino[k][1]:.2f}"
        )
    print(f"  accuracies equal: {equal}")

    print(mem_line)
    if not equal:
        sys.exit(1)


if __name__ == "__main__":
    main()
