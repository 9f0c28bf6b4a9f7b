"""Run the official DINO and iBOT losses on fixed small inputs and save their outputs as test data.

    python scripts/reference/official_dino_ibot_losses.py DINO_SRC IBOT_SRC tests/data/official/dino_ibot_losses.pt

DINO_SRC: a checkout of facebookresearch/dino at 7c446df (main_dino.py, utils.py, vision_transformer.py);
IBOT_SRC: a checkout of bytedance/ibot at da316d8 (main_ibot.py, utils.py, loader.py, models/). Patch, without
touching their files: a one-process gloo group (their center updates call ``dist.all_reduce``), and stand-in modules
for the two imports iBOT's training script needs only for logging/evaluation (``tensorboardX``,
``evaluation.unsupervised.unsup_cls``). Inputs are drawn from torch.manual_seed(0) and saved next to the outputs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import types

import torch
import torch.distributed as dist


def import_from(src: str, module: str):
    """Import ``module`` from the checkout ``src``, then forget the names both repositories use (``utils``,
    ``models``, ...), so that the other checkout's modules of the same name can be imported next."""
    sys.path.insert(0, src)
    try:
        return __import__(module)
    finally:
        sys.path.remove(src)
        for name in ("utils", "models", "models.head", "models.vision_transformer", "vision_transformer", "loader"):
            sys.modules.pop(name, None)


def main(dino_src: str, ibot_src: str, out: str) -> None:
    init = tempfile.NamedTemporaryFile(delete=False)
    dist.init_process_group("gloo", init_method=f"file://{init.name}", rank=0, world_size=1)
    sys.modules["tensorboardX"] = types.SimpleNamespace(SummaryWriter=None)
    for name in ("evaluation", "evaluation.unsupervised"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["evaluation.unsupervised.unsup_cls"] = types.SimpleNamespace(eval_pred=None)
    main_dino = import_from(dino_src, "main_dino")
    main_ibot = import_from(ibot_src, "main_ibot")

    torch.manual_seed(0)
    k, k2, b, n_side = 7, 5, 3, 2
    dino_in = [(torch.randn(4 * b, k) * 3, torch.randn(2 * b, k) * 3) for _ in range(3)]
    dino_epochs = [0, 1, 4]
    dino = main_dino.DINOLoss(k, 4, 0.04, 0.07, 3, 5, student_temp=0.1, center_momentum=0.9)
    dino_out = []
    for (s, t), epoch in zip(dino_in, dino_epochs):
        loss = dino(s, t, epoch)
        dino_out.append({"loss": loss.detach().clone(), "center": dino.center.clone()})

    ibot_in = []
    for _ in range(2):
        masks = torch.rand(2 * b, n_side, n_side) < 0.5
        masks[0] = False  # an image with no masked patch
        masks[1] = True  # an image with every patch masked
        ibot_in.append(
            {
                "s_cls": torch.randn(2 * b, k) * 3,
                "s_local": torch.randn(2 * b, k) * 3,
                "s_patch": torch.randn(2 * b, n_side * n_side, k2) * 3,
                "t_cls": torch.randn(2 * b, k) * 3,
                "t_patch": torch.randn(2 * b, n_side * n_side, k2) * 3,
                "masks": masks,
            }
        )
    ibot_epochs = [0, 2]
    ibot = main_ibot.iBOTLoss(k, k2, 2, 2, 0.04, 0.07, 0.04, 0.06, 3, 5, lambda1=1.0, lambda2=0.7)
    ibot_out = []
    for x, epoch in zip(ibot_in, ibot_epochs):
        losses = ibot(
            (x["s_cls"], x["s_patch"]), (x["t_cls"], x["t_patch"]), x["s_local"], list(x["masks"].chunk(2)), epoch
        )
        ibot_out.append(
            {
                **{name: v.detach().clone() for name, v in losses.items()},
                "center": ibot.center.clone(),
                "center2": ibot.center2.clone(),
            }
        )
    torch.save(
        {
            "source": {
                "dino": "facebookresearch/dino@7c446df main_dino.py::DINOLoss",
                "ibot": "bytedance/ibot@da316d8 main_ibot.py::iBOTLoss",
            },
            "dino": {
                "inputs": dino_in,
                "epochs": dino_epochs,
                "outputs": dino_out,
                "settings": {
                    "out_dim": k,
                    "ncrops": 4,
                    "warmup_temp": 0.04,
                    "temp": 0.07,
                    "warmup_epochs": 3,
                    "epochs": 5,
                    "student_temp": 0.1,
                    "center_momentum": 0.9,
                },
            },
            "ibot": {
                "inputs": ibot_in,
                "epochs": ibot_epochs,
                "outputs": ibot_out,
                "settings": {
                    "out_dim": k,
                    "patch_out_dim": k2,
                    "ngcrops": 2,
                    "nlcrops": 2,
                    "warmup_temp": 0.04,
                    "temp": 0.07,
                    "warmup_temp2": 0.04,
                    "temp2": 0.06,
                    "warmup_epochs": 3,
                    "epochs": 5,
                    "lambda1": 1.0,
                    "lambda2": 0.7,
                },
            },
        },
        out,
    )
    dist.destroy_process_group()
    os.unlink(init.name)


if __name__ == "__main__":
    main(*sys.argv[1:4])
