"""Run six training steps of the official DINO and iBOT loops on fixed small inputs and save everything as test data.

    python scripts/reference/official_dino_ibot_steps.py DINO_SRC IBOT_SRC tests/data/official

writes ``dino_steps.pt``, ``ibot_steps.pt`` (the shared head of iBOT's released ViT-S/B recipes) and
``ibot_separate_steps.pt`` (the official argparse defaults: a separate patch layer in the student, ``--shared_head
false``, while the teacher scores patches with its CLS layer, ``--shared_head_teacher true``) there. DINO_SRC: a checkout of facebookresearch/dino at 7c446df;
IBOT_SRC: a checkout of bytedance/ibot at da316d8. What runs is each repository's own ``train_one_epoch`` (two epochs
of three iterations) with its own ``VisionTransformer``, head, ``MultiCropWrapper``, loss, ``get_params_groups``,
``cosine_scheduler``, ``clip_gradients`` and ``cancel_gradients_last_layer``, so the whole step is covered: the
learning-rate and weight-decay schedules of the two parameter groups, the multi-crop forward (positional embeddings
resampled for the local crops; iBOT: the masked global crops, its mask token), the loss with the teacher temperatures
of each epoch, the center updates, per-parameter gradient clipping, the last layer frozen in epoch 0, AdamW and the
EMA teacher.

Patch, without touching their files: a one-process gloo group (the center updates all-reduce); ``Tensor.cuda`` /
``torch.cuda.synchronize`` and the epoch-end synchronisation of the logging meters (a CUDA tensor) made no-ops, so
that ``train_one_epoch`` runs on the CPU; stand-ins for the modules iBOT's script imports only for logging and its
epoch-end clustering score (``tensorboardX``, ``evaluation.unsupervised.unsup_cls``). Drop-path is 0 (it draws random
numbers the implementations cannot share). The model is sslbench's ``vit_femto`` shape (patch 8, width 32, 2 blocks,
2 heads, 32 px) with a small head. The saved initial state dicts (student, and teacher after the official copy) use
the official key names. With ``--shared_head_teacher`` the official copy loads the student's separate patch layer
into the teacher's CLS layer (its alias ``last_layer2`` is loaded last), so the two CLS layers start apart.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import types
from functools import partial

import torch
import torch.distributed as dist
from official_dino_ibot_losses import import_from  # this folder (sys.path[0] when run as a script)
from torch import nn

COMMON = {
    "batch": 3,
    "epochs": 2,
    "iters_per_epoch": 3,
    "global_size": 32,
    "local_size": 16,
    "local_crops": 4,
    "out_dim": 40,
    "hidden_dim": 48,
    "bottleneck_dim": 16,
    "norm_last_layer": False,
    "lr": 0.5,  # per 256 images: peak 0.5 * 3 / 256
    "min_lr": 1e-5,
    "warmup_epochs": 1,
    "weight_decay": 0.04,
    "weight_decay_end": 0.4,
    "momentum_teacher": 0.9,
    "clip_grad": 0.3,
    "freeze_last_layer": 1,
    "warmup_teacher_temp": 0.04,
    "teacher_temp": 0.07,
    "warmup_teacher_temp_epochs": 2,
    "student_temp": 0.1,
    "center_momentum": 0.9,
}
IBOT = {
    "warmup_teacher_patch_temp": 0.04,
    "teacher_patch_temp": 0.06,
    "center_momentum2": 0.9,
    "lambda1": 1.0,
    "lambda2": 0.7,
    "mask_p": 0.4,  # each patch of each global crop masked with this probability; image 0 never, image 1 always
}


class _Ddp(nn.Module):
    """What ``train_one_epoch`` expects of the student: the network under ``.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def _vit(vits, img_size: int, **kwargs) -> nn.Module:
    return vits.VisionTransformer(
        img_size=[img_size],
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        drop_path_rate=0.0,
        **kwargs,
    )


def _crops(s: dict) -> list[list[torch.Tensor]]:
    b, g, loc = s["batch"], s["global_size"], s["local_size"]
    return [
        [torch.randn(b, 3, g, g) for _ in range(2)] + [torch.randn(b, 3, loc, loc) for _ in range(s["local_crops"])]
        for _ in range(s["epochs"] * s["iters_per_epoch"])
    ]


def _schedules(utils, s: dict):
    ipe, epochs = s["iters_per_epoch"], s["epochs"]
    lr = utils.cosine_scheduler(
        s["lr"] * s["batch"] / 256.0, s["min_lr"], epochs, ipe, warmup_epochs=s["warmup_epochs"]
    )
    wd = utils.cosine_scheduler(s["weight_decay"], s["weight_decay_end"], epochs, ipe)
    momentum = utils.cosine_scheduler(s["momentum_teacher"], 1, epochs, ipe)
    return lr, wd, momentum


def _record(loss_fn: nn.Module, centers: tuple[str, ...]) -> dict[str, list]:
    """Wrap ``loss_fn.forward`` to keep each step's loss (and terms) and centers after the update."""
    seen: dict[str, list] = {"losses": [], **{name: [] for name in centers}}
    real_forward = loss_fn.forward

    def forward(*args):
        out = real_forward(*args)
        seen["losses"].append(out if isinstance(out, dict) else {"loss": out})
        for name in centers:
            seen[name].append(getattr(loss_fn, name).clone())
        return dict(out) if isinstance(out, dict) else out  # a copy: iBOT's loop pops "loss" from what it gets

    loss_fn.forward = forward
    return seen


def _run(main_module, ddp, teacher, loss_fn, optimizer, schedules, batches, s, args) -> None:
    main_module.utils.SmoothedValue.synchronize_between_processes = lambda self: None  # a CUDA tensor
    ipe = s["iters_per_epoch"]
    for epoch in range(s["epochs"]):
        loader = batches[epoch * ipe : (epoch + 1) * ipe]
        main_module.train_one_epoch(ddp, teacher, teacher, loss_fn, loader, optimizer, *schedules, epoch, None, args)


def _result(s, initial, batches, seen, schedules, student, teacher, source) -> dict:
    steps = seen.pop("losses")
    return {
        "settings": s,
        "source": source,
        "initial": initial[0],
        "initial_teacher": initial[1],
        "batches": batches,
        **{
            ("losses" if term == "loss" else f"loss_{term}"): torch.tensor(
                [float(x[term]) for x in steps], dtype=torch.float64
            )
            for term in steps[0]
        },
        **{name: torch.stack(values) for name, values in seen.items()},
        "lr": torch.from_numpy(schedules[0]),
        "wd": torch.from_numpy(schedules[1]),
        "momentum": torch.from_numpy(schedules[2]),
        "student": {k: v.clone() for k, v in student.state_dict().items()},
        "teacher": {k: v.clone() for k, v in teacher.state_dict().items()},
    }


def dino_steps(dino_src: str) -> dict:
    s = dict(COMMON)
    main_dino = import_from(dino_src, "main_dino")
    utils, vits = main_dino.utils, main_dino.vits
    torch.manual_seed(0)

    def network() -> nn.Module:
        head = vits.DINOHead(
            32, s["out_dim"], use_bn=False, norm_last_layer=s["norm_last_layer"], nlayers=3,
            hidden_dim=s["hidden_dim"], bottleneck_dim=s["bottleneck_dim"],
        )  # fmt: skip
        return utils.MultiCropWrapper(_vit(vits, s["global_size"]), head)

    student, teacher = network(), network()
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    initial = [{k: v.clone() for k, v in net.state_dict().items()} for net in (student, teacher)]
    batches = _crops(s)
    ddp = _Ddp(student)
    optimizer = torch.optim.AdamW(utils.get_params_groups(ddp))
    schedules = _schedules(utils, s)
    loss_fn = main_dino.DINOLoss(
        s["out_dim"], 2 + s["local_crops"], s["warmup_teacher_temp"], s["teacher_temp"],
        s["warmup_teacher_temp_epochs"], s["epochs"], student_temp=s["student_temp"],
        center_momentum=s["center_momentum"],
    )  # fmt: skip
    seen = _record(loss_fn, ("center",))
    args = argparse.Namespace(epochs=s["epochs"], clip_grad=s["clip_grad"], freeze_last_layer=s["freeze_last_layer"])
    loader = [(views, None) for views in batches]
    _run(main_dino, ddp, teacher, loss_fn, optimizer, schedules, loader, s, args)
    return _result(s, initial, batches, seen, schedules, student, teacher, "facebookresearch/dino@7c446df")


def ibot_steps(ibot_src: str, shared_head: bool) -> dict:
    s = {**COMMON, **IBOT, "shared_head": shared_head, "shared_head_teacher": True}
    sys.modules["tensorboardX"] = types.SimpleNamespace(SummaryWriter=None)
    for name in ("evaluation", "evaluation.unsupervised"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["evaluation.unsupervised.unsup_cls"] = types.SimpleNamespace(eval_pred=lambda *a, **k: (0, 0, 0, 0))
    main_ibot = import_from(ibot_src, "main_ibot")
    utils, vits, head_cls = main_ibot.utils, main_ibot.models.vision_transformer, main_ibot.iBOTHead
    torch.manual_seed(1)

    def network(student: bool) -> nn.Module:
        head = head_cls(
            32, s["out_dim"], patch_out_dim=s["out_dim"], norm=None, act="gelu",
            norm_last_layer=s["norm_last_layer"], nlayers=3, hidden_dim=s["hidden_dim"],
            bottleneck_dim=s["bottleneck_dim"], shared_head=s["shared_head"] if student else s["shared_head_teacher"],
        )  # fmt: skip
        backbone = _vit(vits, s["global_size"], return_all_tokens=True, masked_im_modeling=student)
        return utils.MultiCropWrapper(backbone, head)

    student, teacher = network(True), network(False)
    with torch.no_grad():  # a non-zero mask token, so that a wrong masking rule shows
        student.backbone.masked_embed.normal_(0, 0.5)
    teacher.load_state_dict(student.state_dict(), strict=False)
    for p in teacher.parameters():
        p.requires_grad = False
    initial = [{k: v.clone() for k, v in net.state_dict().items()} for net in (student, teacher)]
    batches = _crops(s)
    side = s["global_size"] // 8
    masks = []
    for _ in batches:
        step_masks = [torch.rand(s["batch"], side, side) < s["mask_p"] for _ in range(2)]
        for m in step_masks:
            m[0], m[1] = False, True
        masks.append(step_masks)
    ddp = _Ddp(student)
    optimizer = torch.optim.AdamW(utils.get_params_groups(ddp))
    schedules = _schedules(utils, s)
    loss_fn = main_ibot.iBOTLoss(
        s["out_dim"], s["out_dim"], 2, s["local_crops"], s["warmup_teacher_temp"], s["teacher_temp"],
        s["warmup_teacher_patch_temp"], s["teacher_patch_temp"], s["warmup_teacher_temp_epochs"], s["epochs"],
        student_temp=s["student_temp"], center_momentum=s["center_momentum"],
        center_momentum2=s["center_momentum2"], lambda1=s["lambda1"], lambda2=s["lambda2"],
    )  # fmt: skip
    seen = _record(loss_fn, ("center", "center2"))
    args = argparse.Namespace(
        epochs=s["epochs"], clip_grad=s["clip_grad"], freeze_last_layer=s["freeze_last_layer"],
        global_crops_number=2, use_masked_im_modeling=True,
    )  # fmt: skip
    loader = [(views, torch.zeros(s["batch"], dtype=torch.long), m) for views, m in zip(batches, masks)]
    _run(main_ibot, ddp, teacher, loss_fn, optimizer, schedules, loader, s, args)
    result = _result(s, initial, batches, seen, schedules, student, teacher, "bytedance/ibot@da316d8")
    result["masks"] = masks
    return result


def main(dino_src: str, ibot_src: str, out_dir: str) -> None:
    init = tempfile.NamedTemporaryFile(delete=False)
    dist.init_process_group("gloo", init_method=f"file://{init.name}", rank=0, world_size=1)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.cuda.synchronize = lambda *args, **kwargs: None
    runs = (
        ("dino", lambda: dino_steps(dino_src)),
        ("ibot", lambda: ibot_steps(ibot_src, shared_head=True)),
        ("ibot_separate", lambda: ibot_steps(ibot_src, shared_head=False)),
    )
    for name, run in runs:
        result = run()
        path = os.path.join(out_dir, f"{name}_steps.pt")
        torch.save(result, path)
        print(f"{name}: losses {[round(float(x), 6) for x in result['losses']]} -> {path}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
