"""Run the released PQCL loss (the code the ADCLR paper links) on fixed small inputs and save its outputs.

    python scripts/reference/official_pqcl_loss.py PQCL_SRC tests/data/official/pqcl_loss.pt

PQCL_SRC: a checkout of Sherrylone/PQCL at a7999c44e8e4d18b07b201ff23cc1b8a9bfccab6 (``main_pos_bot.py``,
``utils.py``, ``loader.py``, ``augmentation.py``, ``models/``). Patch, without touching its files: a one-process gloo
group (its center update calls ``dist.all_reduce``) and a stand-in ``tensorboardX`` module (logging only).

What coincides with sslbench's ADCLR/ADCLR* loss (``pretrain.losses.adclr`` + iBOT's MIM term): the CLS term over
the two global views, the masked-patch term, the three centers and the three teacher-temperature schedules. PQCL's
query term takes one teacher target per query token (its local crop's patch tokens) for both views; ADCLR's takes
the teacher's query i of the *other* view. Given the same teacher target for both views the two are the same number,
which is how tests/test_adclr_loss.py compares them. Inputs are drawn from torch.manual_seed(0) and saved with the
outputs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import types

import torch
import torch.distributed as dist

SOURCE = "Sherrylone/PQCL@a7999c44e8e4d18b07b201ff23cc1b8a9bfccab6 main_pos_bot.py::PQCLLoss"


def main(pqcl_src: str, out: str) -> None:
    init = tempfile.NamedTemporaryFile(delete=False)
    dist.init_process_group("gloo", init_method=f"file://{init.name}", rank=0, world_size=1)
    sys.modules["tensorboardX"] = types.SimpleNamespace(SummaryWriter=None)
    sys.path.insert(0, pqcl_src)
    import main_pos_bot

    torch.manual_seed(0)
    # PQCL packs CLS and patch logits in one (2B, 1 + N, K) tensor, so CLS, patch and query share K (its shared head)
    k, b, n_side, m = 6, 3, 2, 4  # prototypes, images, grid side, queries
    settings = {
        "out_dim": k,
        "patch_out_dim": k,
        "ngcrops": 2,
        "nlcrops": 1,
        "warmup_temp": 0.04,
        "temp": 0.07,
        "warmup_temp2": 0.04,
        "temp2": 0.06,
        "warmup_temp3": 0.04,
        "temp3": 0.05,
        "warmup_epochs": 3,
        "epochs": 5,
        "lambda1": 1.0,
        "lambda2": 0.7,
        "lambda3": 0.5,
    }
    loss_fn = main_pos_bot.PQCLLoss(
        k, k, 2, 1, 0.04, 0.07, 0.04, 0.06, 0.04, 0.05, 3, 5, lambda1=1.0, lambda2=0.7, lambda3=0.5
    )
    inputs, outputs, epochs = [], [], [0, 2, 4]
    for epoch in epochs:
        masks = torch.rand(2 * b, n_side, n_side) < 0.5
        masks[0] = False  # an image with no masked patch
        masks[1] = True  # an image with every patch masked
        x = {
            "s_cls": torch.randn(2 * b, k) * 3,
            "t_cls": torch.randn(2 * b, k) * 3,
            "s_patch": torch.randn(2 * b, n_side * n_side, k) * 3,
            "t_patch": torch.randn(2 * b, n_side * n_side, k) * 3,
            "s_query": torch.randn(2 * b, m, k) * 3,
            "t_query": torch.randn(b, m, k) * 3,
            "masks": masks,
        }
        inputs.append(x)
        s_gout = torch.cat([x["s_cls"].unsqueeze(1), x["s_patch"]], dim=1)
        t_gout = torch.cat([x["t_cls"].unsqueeze(1), x["t_patch"]], dim=1)
        losses = loss_fn(t_gout, x["t_query"], s_gout, x["s_query"], list(x["masks"].chunk(2)), epoch)
        outputs.append(
            {
                **{name: v.detach().clone() for name, v in losses.items()},
                "center": loss_fn.center.clone(),
                "center2": loss_fn.center2.clone(),
                "center3": loss_fn.center3.clone(),
            }
        )
    torch.save({"source": SOURCE, "settings": settings, "inputs": inputs, "epochs": epochs, "outputs": outputs}, out)
    dist.destroy_process_group()
    os.unlink(init.name)


if __name__ == "__main__":
    main(*sys.argv[1:3])
