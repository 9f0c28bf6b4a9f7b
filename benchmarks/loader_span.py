"""The pretraining loader: one DataLoader spanning the epochs between ContrastiveCrop refreshes (the engine) against a
new DataLoader every epoch (what the engine did before), side by side in one process.

Both run the demo's BAM recipe (``pretrain/configs/bam_shapes_tiny.yaml``: vit_pico, 2 x 64 + 4 x 32 px crops,
batch 64, 2 loader workers, batch renderer) for a few short epochs on ShapesWorld classification images generated
here, with the k-NN monitor and ContrastiveCrop off; the losses of the two runs must be equal (the same batches).
A loader per epoch starts its workers again and waits for its first batch at every epoch start; the spanning loader
prefetches across the epoch end (its checkpoint and log writes). Target: the spanning loader at least 1.05x the
per-epoch loaders' images/s on 2 cores at the demo's epoch length (15 steps); the gain is the start-up latency
per epoch, so shorter epochs gain more.

    python benchmarks/loader_span.py [--epochs 4] [--steps 15] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import interleaved, line  # noqa: E402
from evaluate.shapesworld.generate import ShapesWorldSpec, generate  # noqa: E402
from pretrain.config import PretrainConfig  # noqa: E402
from pretrain.data import make_loader  # noqa: E402
from pretrain.engine import Trainer  # noqa: E402
from pretrain.views import Batch  # noqa: E402
from sslcore.config import load_config  # noqa: E402

RECIPE = Path(__file__).resolve().parent.parent / "pretrain" / "configs" / "bam_shapes_tiny.yaml"


class PerEpochLoaders(Trainer):
    """The engine with a new DataLoader for every epoch (its workers started at each epoch start)."""

    def _batches(self, epoch: int, start_batch: int) -> Iterator[Batch]:
        data = self.data
        data.dataset.crop_boxes = self.crop_boxes
        data.sampler.set_epoch(epoch, start_batch)
        on_cuda = self.device.type == "cuda"
        yield from make_loader(data.dataset, data.sampler, self.cfg.data.num_workers, on_cuda, not on_cuda)


def run(trainer_class: type[Trainer], root: Path, out: Path, epochs: int) -> list[float]:
    over = {
        "data.root": str(root),
        "train.out": str(out),
        "train.epochs": epochs,
        "knn.every_epochs": 0,
        "ccrop.enabled": False,
        "train.log_every": 1,
    }
    cfg = load_config(PretrainConfig, RECIPE, [f"{k}={v}" for k, v in over.items()])
    trainer_class(cfg).fit()
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("kind") == "step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=15, help="steps per epoch (batch 64)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        per_class = -(-args.steps * 64 // 10) + 1  # the train split holds at least steps x 64 images
        spec = ShapesWorldSpec(cls_per_class=per_class, cls_val_fraction=1 / per_class)
        generate(Path(tmp) / "sw", spec, parts=("classification",))
        root = Path(tmp) / "sw" / "classification" / "train"
        runs = {
            "one loader per epoch": lambda: run(PerEpochLoaders, root, Path(tmp) / "a", args.epochs),
            "one loader across epochs": lambda: run(Trainer, root, Path(tmp) / "b", args.epochs),
        }
        times, losses = interleaved(runs, args.repeat)
    images = args.epochs * args.steps * 64
    print(f"cpu BAM demo recipe, {args.epochs} epochs x {args.steps} steps of 64 images")
    for name, sec in times.items():
        print(line(name, sec) + f"   {images / min(sec):7.1f} images/s")
    same = losses["one loader per epoch"] == losses["one loader across epochs"]
    ratio = min(times["one loader per epoch"]) / min(times["one loader across epochs"])
    print(f"  ratio spanning / per-epoch images/s: {ratio:.2f} (target >= 1.05); losses equal: {same}")
    if not same:
        raise SystemExit("the two loaders gave different batches")


if __name__ == "__main__":
    main()
