"""Run the official SERE heads, overlap grids, relation sampling and losses on fixed small inputs; save the outputs.

    git -C <mirror of MCG-NKU/SERE> archive e20f37f | tar -x -C SERE_SRC
    python scripts/reference/official_sere_losses.py SERE_SRC tests/data/official/sere_losses.pt

SERE_SRC: a checkout of MCG-NKU/SERE at e20f37fb53fda2089328e874fb7ebaa57bd235ac (main_sere.py, utils.py,
transforms_overlap.py, models/). Used as they are: ``transforms_overlap.get_grid``, ``models.VisionTransformer``
(with its ``pixel_sere``/``channel_sere``/``*_local`` heads), ``utils.MultiCropWrapper`` (teacher/student forward and
the global-global sampling), ``main_sere.sere_loss_pixel`` / ``sere_loss_channel`` / ``sampling``.

Patch, without touching their files: a stand-in ``tensorboardX`` module (imported by main_sere.py for logging only);
a ViT with **depth 0** (patch 4, width 8, 2 heads), so the tokens the heads see are the patch embedding plus
positions, saved here as the "features"; global crops of 56 px and local crops of 24 px, so the maps are 14 x 14 and
6 x 6, the sizes the released code hard-codes in its channel normaliser; 3 local crops (the release sends 1 or 2 local
crops through the global heads); BN affine parameters drawn at random so they matter. Everything runs in train mode
on CPU (plain BatchNorm2d: one process, so the same statistics as SyncBatchNorm).
"""

from __future__ import annotations

import copy
import sys
import types

import torch


def main(src: str, out: str) -> None:
    sys.modules["tensorboardX"] = types.SimpleNamespace(SummaryWriter=None)
    sys.path.insert(0, src)
    import main_sere
    import models
    import transforms_overlap
    import utils

    torch.manual_seed(0)
    b, dim, heads, patch = 2, 8, 2, 4
    vit = models.VisionTransformer(
        img_size=[56],
        patch_size=patch,
        embed_dim=dim,
        depth=0,
        num_heads=heads,
        return_all_tokens=True,
        local_crop=True,
    )
    for module in vit.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    student = utils.MultiCropWrapper(vit, None)
    teacher = utils.MultiCropWrapper(copy.deepcopy(vit), None)
    for p in teacher.parameters():  # a teacher that differs from the student (an EMA step away)
        p.data.add_(0.1 * torch.randn_like(p))
    student.train(), teacher.train()

    globals_ = [torch.randn(b, 3, 56, 56) for _ in range(2)]
    locals_ = [torch.randn(b, 3, 24, 24) for _ in range(3)]
    # per image and crop: [left, top, width, height, flip] in a 100 x 100 image (image 0's 2nd and image 1's 3rd local
    # crops overlap neither global crop: the no-overlap case)
    rects = [
        [[0, 0, 60, 60, 0], [30, 20, 70, 80, 1], [10, 10, 30, 30, 0], [90, 0, 10, 15, 1], [40, 50, 40, 30, 1]],
        [[10, 5, 50, 90, 1], [0, 30, 80, 50, 0], [20, 40, 35, 25, 1], [5, 5, 20, 20, 0], [70, 80, 30, 20, 0]],
    ]
    grid_pairs = [transforms_overlap.get_grid(r[0], r[1], 13) for r in rects]
    grid1 = [torch.stack([g[0] for g in grid_pairs]), torch.stack([g[1] for g in grid_pairs])]
    grid2 = [g.clone() for g in grid1]
    grid_local, grid_global = [], []
    for q in (0, 1):  # the release's order: local l vs global 1 for all l, then vs global 2
        for v in range(3):
            pairs = [transforms_overlap.get_grid(r[2 + v], r[q], 6) for r in rects]
            grid_local.append(torch.stack([p[0] for p in pairs]))
            grid_global.append(torch.stack([p[1] for p in pairs]))

    t_out = teacher(globals_, grid1, grid2, teacher=True)
    s_out = student(globals_, grid1, grid2, teacher=False)
    s_local = student(locals_, teacher=False)
    args = types.SimpleNamespace(temperature_pixel=0.5, temperature_channel=0.1)
    loss_pixel = main_sere.sere_loss_pixel(
        args, s_out[2], t_out[2], s_local[4], t_out[5], grid_local, grid_global, ncrops=2, ncrops_local=3
    )
    loss_channel = main_sere.sere_loss_channel(args, s_out[1], t_out[1], s_local[3], ncrops=2, ncrops_local=3)

    with torch.no_grad():
        features = [vit.prepare_tokens(x)[:, 1:] for x in (*globals_, *locals_)]  # (B, n, C) what the heads saw
        t_features = [teacher.backbone.prepare_tokens(x)[:, 1:] for x in globals_]
    head_keys = ("pixel_sere", "channel_sere", "pixel_sere_local", "channel_sere_local")

    def heads_of(model):
        return {k: v.clone() for k, v in model.backbone.state_dict().items() if k.split(".")[0] in head_keys}

    boxes = torch.tensor([[[r[0], r[1], r[0] + r[2], r[1] + r[3]] for r in img] for img in rects], dtype=torch.float32)
    flips = torch.tensor([[bool(r[4]) for r in img] for img in rects])
    torch.save(
        {
            "source": "MCG-NKU/SERE@e20f37fb53fda2089328e874fb7ebaa57bd235ac main_sere.py, utils.py, models/head.py",
            "settings": {"dim": dim, "heads": heads, "pixel_temp": 0.5, "channel_temp": 0.1, "grids": (13, 6)},
            "features": [f.clone() for f in features],
            "teacher_features": [f.clone() for f in t_features],
            "student_heads": heads_of(student),
            "teacher_heads": heads_of(teacher),
            "boxes": boxes,
            "flips": flips,
            "grids": {"global": grid1, "local": grid_local, "global_side": grid_global},
            "outputs": {
                "loss_pixel": loss_pixel.detach().clone(),
                "loss_channel": loss_channel.detach().clone(),
                "teacher_channel": t_out[1].detach().clone(),
                "student_channel": s_out[1].detach().clone(),
                # head 0 of (crop 1, image 0) and (crop 2, image 1), to keep the file small
                "teacher_pixel_sampled": t_out[2][[0, 3], 0].detach().clone(),
                "student_pixel_sampled": s_out[2][[0, 3], 0].detach().clone(),
                "student_channel_local": s_local[3].detach().clone(),
            },
        },
        out,
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
