"""BAM on the engine, end to end on CPU: ``sslbench pretrain`` on ShapesWorld, then a k-NN of the exported backbone.

The data is a classification-only ShapesWorld (10 classes, 40 images per class at 32x32: 300 train / 100 val),
generated once per module. The run is the ShapesWorld recipe scaled to 32-px images (vit_pico, 2x32 + 2x16 crops)
with ContrastiveCrop boxes refreshed during the run and the online k-NN monitor on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evaluate.cli import main as cli_main
from evaluate.protocols.knn import knn_accuracy
from pretrain import monitor
from pretrain.backbones import build_backbone
from pretrain.config import DataConfig, KnnConfig
from pretrain.vit import SSLViT, ViTArch

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "pretrain" / "configs" / "bam_shapes_tiny.yaml"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def knn_top1(model: SSLViT, root: Path) -> float:
    """20-NN top-1 (%) at 32 px with the training monitor's code path and the protocol's vote."""
    cfg = KnnConfig(train_root=str(root / "train"), val_root=str(root / "val"), size=32, batch_size=100)
    return monitor.knn_top1(model, cfg, DataConfig(mean=MEAN, std=STD), torch.device("cpu"), knn_accuracy)


def shapes_32px(root: Path) -> dict:
    """The ShapesWorld recipes scaled to 32-px images of ``root/train``: vit_pico, 2 x 32 + 2 x 16 crops, batch 50,
    12 epochs (72 steps on 300 images), one thread."""
    return {
        "model.arch": "vit_pico",
        "data.root": root / "train",
        "data.global_size": 32,
        "data.local_size": 16,
        "data.local_crops": 2,
        "data.num_workers": 0,
        "train.batch_size": 50,
        "train.epochs": 12,
        "train.threads": 1,
        "train.log_every": 2,
    }


def run_args(root: Path, out: Path, **extra) -> list[str]:
    over = {
        **shapes_32px(root),
        "ccrop.warmup_epochs": 6,
        "ccrop.interval": 3,
        "ccrop.size": 32,
        "knn.every_epochs": 6,
        "knn.train_root": root / "train",
        "knn.val_root": root / "val",
        "knn.size": 32,
    }
    over.update(extra)
    return ["pretrain", "--config", str(RECIPE), "--out", str(out), *[f"{k}={v}" for k, v in over.items()]]


@pytest.mark.slow
def test_bam_shapesworld_run_beats_random_init(tmp_path, shapes_cls):
    """The seed-0 trajectory of the recipe with PIL rendering (what the +5 margin was measured on: 32.0 vs 23.0).

    This is a regression check of one trajectory, not evidence that BAM learns at this size: seeds 1 and 2 end at
    21.0 / 20.0 (PIL) and 22.0 / 22.0 (``data.render: batch``, seed 0: 27.0), all against 23.0 at random init
    (measured 2026-11-29; issue #18 holds the open question of recipes that learn)."""
    out = tmp_path / "bam"
    assert cli_main(run_args(shapes_cls, out, **{"data.render": "pil"})) == 0

    payload = torch.load(out / "backbone.pth", weights_only=True)
    assert payload["format"] == "sslbench-backbone" and payload["meta"]["which"] == "teacher"
    assert payload["arch"]["pos_embed"] == "sincos"
    trained = SSLViT(ViTArch(**payload["arch"]), pos_interp=payload["pos_interp"])
    trained.load_state_dict(payload["state_dict"])
    torch.manual_seed(0)
    random_init = build_backbone("vit_pico", pos_embed="sincos", freeze_patch_embed=True, init="moco")
    acc_trained, acc_random = knn_top1(trained, shapes_cls), knn_top1(random_init, shapes_cls)
    print(f"BAM ShapesWorld k-NN top-1: pretrained {acc_trained:.1f}% vs random init {acc_random:.1f}%")
    assert acc_trained >= acc_random + 5.0, (acc_trained, acc_random)  # seen: 32.0 vs 23.0 (100 val images)

    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert lines[0]["kind"] == "meta" and lines[0]["config"]["method"] == "bam"
    steps = [r for r in lines if r["kind"] == "step"]
    epochs = [r for r in lines if r["kind"] == "epoch"]
    assert len(epochs) == 12 and [r["epoch"] for r in epochs] == list(range(12))
    for key in ("diag/source_entropy", "diag/target_entropy", "diag/marginal_error", "diag/topk_mass", "lr", "wd"):
        assert all(key in r for r in steps), key
    # the Sinkhorn target is sharper than the source softmax (eps < tau), as in the paper's Fig. 3
    assert all(r["diag/target_entropy"] < r["diag/source_entropy"] for r in steps)
    assert [r["epoch"] for r in epochs if "knn_top1" in r] == [5, 11]
    assert all(-1.0 <= r["knn_mean_cosine"] < 1.0 and r["knn_eff_rank"] >= 1.0 for r in epochs if "knn_top1" in r)
    assert [r["epoch"] for r in epochs if r.get("crop_boxes_updated")] == [5, 8]

    state = torch.load(out / "checkpoint.pth", weights_only=True)
    boxes = state["crop_boxes"]
    assert boxes.shape == (300, 4) and (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert set(state["teacher"]) == set(state["student"])
    assert {k.split(".")[0] for k in state["teacher"]} == {"backbone", "heads"}
    assert not state["student"]["backbone.pos_embed"].requires_grad

    # the evaluation side's checkpoint adapter reads both outputs, teacher by default, to the same weights
    from evaluate.checkpoints import load_backbone

    for path in (out / "backbone.pth", out / "checkpoint.pth"):
        loaded = load_backbone(path)
        assert loaded.report.ok and loaded.info["arch"]["embed_dim"] == 64, path
        for key, value in loaded.model.state_dict().items():
            assert torch.equal(value, payload["state_dict"][key]), (path, key)


def test_bam_teacher_free_with_bn_projector_steps_and_exports_the_student(tmp_path):
    from pretrain.config import PretrainConfig
    from pretrain.engine import Trainer
    from pretrain.views import ViewPlan, random_batch
    from sslcore.config import load_config

    over = {
        "model.arch": "vit_femto",
        "ema.enabled": False,
        "bam.proj_bn": True,
        "bam.proj_hidden": 64,
        "bam.proj_out": 64,
        "train.batch_size": 8,
        "train.precision": "fp32",
        "train.out": str(tmp_path / "free"),
    }
    cfg = load_config(PretrainConfig, None, [f"{k}={v}" for k, v in over.items()])
    trainer = Trainer(cfg, iters_per_epoch=3)
    assert trainer.method.teacher is None
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in trainer.method.student.heads["proj"].modules())
    views = random_batch(ViewPlan(2, 4, patch_size=8), 8, 32, 16, generator=torch.Generator().manual_seed(0))
    before = trainer.method.student.backbone.blocks[0].attn.qkv.weight.detach().clone()
    trainer.step = 1  # past the zero-LR first warm-up step
    loss, diag = trainer.train_step(views)
    assert torch.isfinite(torch.tensor(loss)) and diag["diag/target_entropy"] < diag["diag/source_entropy"]
    assert not torch.equal(trainer.method.student.backbone.blocks[0].attn.qkv.weight, before)
    payload = torch.load(trainer.export(), weights_only=True)
    assert payload["meta"]["which"] == "student"
