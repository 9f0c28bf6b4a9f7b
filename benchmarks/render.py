"""Making the views: the PIL path (``data.render: pil``) against the batch renderer (``data.render: batch``), side by
side on the same images and the same drawn parameters, in one process.

CPU (always): 64 images of 64 x 64 with the demo's crops (2 x 64 + 4 x 32 px) and with 2 x 32 + 4 x 16 px; GPU (when
CUDA is available): 64 ImageNet-sized images (375 x 500) with the ViT-S/16 recipe's 2 x 224 + 10 x 96 crops rendered
on the device. Target: the batch renderer at least 2x the PIL path's images/s on one thread (what a DataLoader worker
has, where it runs on a CPU run) at the demo's crop sizes, and 3x with 2 threads.

    python benchmarks/render.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import interleaved, line  # noqa: E402
from pretrain.config import DataConfig  # noqa: E402
from pretrain.crops import MultiCropAugment  # noqa: E402
from pretrain.render import render_views  # noqa: E402


def images(n: int, height: int, width: int) -> list[Image.Image]:
    return [
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8)) for i in range(n)
    ]


def compare(cfg: DataConfig, imgs: list[Image.Image], repeat: int, device: str = "cpu") -> None:
    aug = MultiCropAugment(cfg)
    sizes = [aug.view_spec(v)[0] for v in range(aug.num_views)]
    torch.manual_seed(0)
    params = torch.stack([aug.draw_all(im.size[1], im.size[0]) for im in imgs])
    batch = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in imgs]).to(device)
    on_device = params.to(device)

    def pil() -> None:
        for i, im in enumerate(imgs):
            for v in range(aug.num_views):
                aug.render_pil(im, params[i, v], sizes[v])

    fns = {"batch renderer": lambda: render_views(batch, on_device, sizes, cfg.mean, cfg.std)}
    if device == "cpu":
        fns = {"PIL, per image": pil, **fns}
    times, _ = interleaved(fns, repeat, device)
    h, w = imgs[0].size[1], imgs[0].size[0]
    crops = f"{cfg.global_crops}x{cfg.global_size}+{cfg.local_crops}x{cfg.local_size}"
    print(f"{device} {len(imgs)} images {h}x{w}, crops {crops}, {torch.get_num_threads()} threads")
    for name, sec in times.items():
        print(line(name, sec) + f"   {len(imgs) / min(sec):9.1f} images/s")
    if "PIL, per image" in times:
        ratio = min(times["PIL, per image"]) / min(times["batch renderer"])
        target = 2 if torch.get_num_threads() == 1 else 3
        print(f"  ratio batch / PIL images/s: {ratio:.2f} (target >= {target})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    imgs = images(64, 64, 64)
    compare(DataConfig(global_size=64, local_size=32, local_crops=4), imgs, args.repeat)
    compare(DataConfig(global_size=32, local_size=16, local_crops=4), imgs, args.repeat)
    torch.set_num_threads(1)  # what one DataLoader worker has
    compare(DataConfig(global_size=64, local_size=32, local_crops=4), imgs, args.repeat)
    if torch.cuda.is_available():
        torch.set_num_threads(2)
        big = images(64, 375, 500)
        compare(DataConfig(global_size=224, local_size=96, local_crops=10), big, args.repeat, "cuda")


if __name__ == "__main__":
    main()
