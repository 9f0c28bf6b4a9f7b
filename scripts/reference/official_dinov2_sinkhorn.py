"""Run DINOv2's Sinkhorn-Knopp teacher centering on fixed small inputs and save its outputs as test data.

    python scripts/reference/official_dinov2_sinkhorn.py DINOV2_SRC tests/data/official/dinov2_sinkhorn.pt

DINOV2_SRC: a checkout of facebookresearch/dinov2 at b8931f7 (only ``dinov2/loss/dino_clstoken_loss.py`` is used,
loaded as a file so that the package's other imports are not needed; the file is untouched and needs no process
group). Inputs are drawn from torch.manual_seed(0) and saved next to the outputs: teacher logits of the scale a
weight-normalised DINO head gives (|t| <= 1) at the teacher temperatures 0.04 and 0.07, and a larger-scale case.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch


def main(src: str, out: str) -> None:
    path = Path(src) / "dinov2" / "loss" / "dino_clstoken_loss.py"
    spec = importlib.util.spec_from_file_location("dino_clstoken_loss", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    cases = []
    for rows, k, temp, scale in ((6, 7, 0.04, 1.0), (8, 16, 0.07, 1.0), (5, 3, 0.1, 2.0)):
        teacher = torch.tanh(torch.randn(rows, k)) * scale
        loss = module.DINOLoss(k)
        for iters in (1, 3):
            probs = loss.sinkhorn_knopp_teacher(teacher.clone(), teacher_temp=temp, n_iterations=iters)
            cases.append({"teacher": teacher, "temp": temp, "iters": iters, "probs": probs.clone()})
    torch.save({"source": "facebookresearch/dinov2@b8931f7bf91576930313be2c6d6af376033b35f0", "cases": cases}, out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
