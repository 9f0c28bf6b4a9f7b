"""The method registry's contract, for every entry of ``pretrain.methods.METHODS``.

Each method builds from its config, takes two optimizer steps on CPU with finite losses, exports a backbone that the
evaluation side's checkpoint adapter loads to identical features, and (``test_engine.py``) resumes bit-identically
after SIGKILL and runs 2 gloo processes equal to 1. The layering rule is checked here too: no module of ``pretrain``
except its CLI layer imports the evaluation harness, and none imports another ``pretrain`` module lazily (the import
circle engine -> methods -> engine is gone).
"""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_engine import METHOD_OVERRIDES, toy_cfg
from test_pretrain_bam import shapes_32px

from evaluate.checkpoints import load_backbone
from evaluate.cli import main as cli_main
from evaluate.protocols.knn import knn_accuracy
from pretrain import monitor
from pretrain.config import DataConfig, KnnConfig, PretrainConfig
from pretrain.engine import Trainer
from pretrain.methods import METHODS, build_method, method_class
from pretrain.views import random_batch
from sslcore.config import load_config
from sslcore.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "pretrain" / "configs"


def test_registry_holds_the_methods_of_the_engine():
    assert {"bam", "dino", "ibot", "adclr", "sere"} <= set(METHODS)
    assert set(METHODS) <= set(METHOD_OVERRIDES)  # every method has tiny settings in the contract tests


@pytest.mark.parametrize("name", sorted(set(METHODS) | {"adclr_star"}))
def test_every_method_steps_and_exports_a_backbone_the_adapter_loads(tmp_path, name):
    cfg = toy_cfg(tmp_path, **METHOD_OVERRIDES[name])
    trainer = Trainer(cfg, iters_per_epoch=4)
    before = {k: v.clone() for k, v in trainer.method.student.state_dict().items()}
    plan = method_class(cfg.method).view_plan(cfg)
    for step in range(2):
        batch = random_batch(plan, 8, 32, 16, generator=torch.Generator().manual_seed(step))
        loss, diag = trainer.train_step(batch)
        assert torch.isfinite(torch.tensor(loss)) and all(torch.isfinite(torch.tensor(float(v))) for v in diag.values())
    after = trainer.method.student.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("backbone.blocks"))
    path = trainer.export()
    loaded = load_backbone(path, num_heads=2)
    assert loaded.report.missing == loaded.report.unexpected == []
    x = torch.randn(2, 3, 32, 48)  # a non-square input through both
    with torch.no_grad():
        ref = trainer.eval_backbone().eval().forward_tokens(x)
        got = loaded.model.forward_tokens(x)
    torch.testing.assert_close(got.cls, ref.cls, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.patch, ref.patch, rtol=0, atol=1e-6)


@pytest.mark.parametrize("recipe", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_recipe_builds(recipe):
    """Every recipe resolves against the schema and builds its method (the ViT-B ones too: no step taken)."""
    cfg = load_config(PretrainConfig, CONFIGS / recipe)
    method = build_method(cfg)
    plan = method_class(cfg.method).view_plan(cfg)
    mim = cfg.method == "ibot" or (cfg.method == "adclr" and cfg.adclr.mim)
    mim = mim or (cfg.method == "sere" and cfg.sere.base == "ibot")
    assert plan.global_crops == cfg.data.global_crops and plan.masks == mim
    assert plan.query_crops == (cfg.adclr.query_crops if cfg.method == "adclr" else 0)
    if cfg.optim.freeze_last_layer_epochs:
        assert any(cfg.optim.last_layer in n for n, _ in method.student.named_parameters())


def test_ibot_shared_head_with_another_patch_width_is_one_config_error(tmp_path):
    cfg = toy_cfg(tmp_path, **{**METHOD_OVERRIDES["ibot"], "ibot.patch_out_dim": 32})
    with pytest.raises(ConfigError, match="ibot.shared_head=true gives patch logits of dino.out_dim=64"):
        build_method(cfg)
    separate = {"ibot.patch_out_dim": 32, "ibot.shared_head": False, "ibot.shared_head_teacher": True}
    cfg = toy_cfg(tmp_path, **{**METHOD_OVERRIDES["ibot"], **separate})
    with pytest.raises(ConfigError, match="ibot.shared_head_teacher=true gives patch logits of dino.out_dim=64"):
        build_method(cfg)


def test_training_modules_never_import_the_harness_or_each_other_lazily():
    lazy = []
    for path in sorted((REPO / "pretrain").rglob("*.py")):
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                root = (module or "").split(".")[0]
                if root == "evaluate" and path.name != "cli.py":
                    lazy.append(f"{path.name}:{node.lineno} imports {module}")
                if root == "pretrain" and id(node) not in top and path.name != "cli.py":
                    lazy.append(f"{path.name}:{node.lineno} imports {module} inside a function")
    assert lazy == []
    code = (
        "import sys, pretrain.engine, pretrain.monitor, pretrain.checkpoint, pretrain.methods.dino, "
        "pretrain.methods.ibot, pretrain.methods.bam, pretrain.methods.adclr, pretrain.methods.sere; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'evaluate'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------- learning


def _knn(backbone, root: Path) -> float:
    cfg = KnnConfig(train_root=str(root / "train"), val_root=str(root / "val"), size=32, batch_size=100)
    return monitor.knn_top1(backbone, cfg, DataConfig(), torch.device("cpu"), knn_accuracy)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dino", "ibot", "adclr", "sere"])
def test_dino_and_ibot_train_on_shapesworld_from_the_cli(tmp_path, shapes_cls, name):
    """The tiny recipe scaled to 32-px images, 72 steps from the CLI: diagnostics logged, the export loads, and the
    teacher's 20-NN is printed next to the same model at step 0 (its own seed and init).

    Measured at this scale (docs/pretraining.md): DINO and iBOT do NOT beat their step-0 model beyond the noise of
    100 validation images (e.g. 27 vs 25 %; ADCLR 28 vs 25 %), where BAM gains 9 points; their teacher distributions drift to the
    uniform (or, with slower centering, to a single prototype) within ~20 steps. The assertion is therefore a sanity
    bound (no collapse to chance), not evidence of learning; the issue that asks for that evidence stays open.
    SERE (iBOT + SERE, sere_shapes_tiny.yaml) is held to the same bound and logs both relation losses.
    """
    over = {**shapes_32px(shapes_cls), "knn.every_epochs": 0}
    recipe = CONFIGS / f"{name}_shapes_tiny.yaml"
    args = [f"{k}={v}" for k, v in over.items()]
    out = tmp_path / name
    cfg = load_config(PretrainConfig, recipe, [*args, f"train.out={out}"])
    step0 = Trainer(cfg, iters_per_epoch=1).eval_backbone()  # same seed, same init: the run's starting point
    assert cli_main(["pretrain", "--config", str(recipe), "--out", str(out), *args]) == 0
    trained = load_backbone(out / "backbone.pth").model
    acc, acc0 = _knn(trained, shapes_cls), _knn(step0, shapes_cls)
    print(f"{name} ShapesWorld 20-NN top-1: pretrained {acc:.1f}% vs step 0 {acc0:.1f}%")
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in lines if r["kind"] == "step"]
    assert len(steps) == 36 and all(math.isfinite(r["loss"]) for r in steps)
    assert all(key in steps[-1] for key in ("teacher_entropy", "teacher_batch_entropy", "teacher_temp"))
    assert steps[0]["teacher_temp"] == pytest.approx(0.04) and steps[-1]["teacher_temp"] == pytest.approx(0.07)
    if name in ("ibot", "sere"):  # sere_shapes_tiny.yaml is iBOT + SERE
        assert all("loss_mim" in r and 0.0 < r["mask_ratio"] < 0.5 for r in steps)
    if name == "adclr":
        assert all(math.isfinite(r["loss_query"]) and r["teacher_query_temp"] == r["teacher_temp"] for r in steps)
    if name == "sere":
        assert all(r["loss_pixel"] > 0 and r["loss_channel"] > 0 for r in steps)
    assert acc >= acc0 - 5.0 and acc > 15.0, (acc, acc0)  # 10 classes: chance is 10 %


@pytest.mark.parametrize("name", ["dino", "ibot"])
def test_last_layer_frozen_during_the_first_epoch_then_trained(tmp_path, name):
    over = {**METHOD_OVERRIDES[name], "optim.freeze_last_layer_epochs": 1, "optim.last_layer": "last_layer"}
    over.update({"optim.warmup_epochs": 0})
    cfg = toy_cfg(tmp_path, **over)
    trainer = Trainer(cfg, iters_per_epoch=1)
    head = trainer.method.student.heads["cls"]
    plan = method_class(cfg.method).view_plan(cfg)
    last, mlp = head.last_layer.weight_v.detach().clone(), head.mlp[0].weight.detach().clone()
    trainer.train_step(random_batch(plan, 8, 32, 16, generator=torch.Generator().manual_seed(0)))  # epoch 0
    assert torch.equal(head.last_layer.weight_v, last) and not torch.equal(head.mlp[0].weight, mlp)
    trainer.train_step(random_batch(plan, 8, 32, 16, generator=torch.Generator().manual_seed(1)))  # epoch 1
    assert not torch.equal(head.last_layer.weight_v, last)


def test_probe_views_prints_the_step0_agreement_and_writes_nothing(tmp_path, shapes_cls, capsys):
    """``sslbench pretrain --probe-views N``: one JSON line, nothing trained or written; switching the photometric
    augmentations off raises the agreement (docs/demo.md, sixth round: 8.9 % -> 79.2 % on the demo's data)."""
    recipe = CONFIGS / "dino_shapes_tiny.yaml"
    out = tmp_path / "never"
    args = [f"{k}={v}" for k, v in shapes_32px(shapes_cls).items()]
    off = ["data.jitter_p=0", "data.grayscale_p=0", "data.solarize_p=[0,0,0]", "data.blur_p=[0,0,0]"]
    results = []
    for extra in ([], off):
        capsys.readouterr()
        assert (
            cli_main(["pretrain", "--config", str(recipe), "--out", str(out), "--probe-views", "2", *args, *extra]) == 0
        )
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    recipe_probe, plain = results
    assert recipe_probe["method"] == "dino" and recipe_probe["batches"] == 2.0
    assert recipe_probe["agreement_chance"] == pytest.approx(1 / 50, abs=1e-4)
    assert 0.0 <= recipe_probe["agreement_retrieval"] < plain["agreement_retrieval"] <= 1.0
    assert plain["agreement_positive_cosine"] > recipe_probe["agreement_positive_cosine"]
    assert not out.exists()
    assert cli_main(["pretrain", "--config", str(recipe), "--probe-views", "0", *args]) == 2
    assert "--probe-views: 0 batches" in capsys.readouterr().err


def test_probe_views_of_a_run_reads_its_networks(tmp_path, shapes_cls, capsys):
    """``--probe-views N --resume --out RUN``: the run's own networks (its step in the line), under other
    augmentations if asked; a config whose networks do not fit the checkpoint is one line, exit 2."""
    recipe = CONFIGS / "dino_shapes_tiny.yaml"
    out = tmp_path / "run"
    args = [f"{k}={v}" for k, v in {**shapes_32px(shapes_cls), "train.epochs": 1, "knn.every_epochs": 0}.items()]
    assert cli_main(["pretrain", "--config", str(recipe), "--out", str(out), *args]) == 0
    before = (out / "checkpoint.pth").read_bytes()
    capsys.readouterr()
    probe = ["pretrain", "--resume", "--out", str(out), "--probe-views", "1"]
    assert cli_main([*probe, "data.jitter_p=0"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["step"] == 6 and line["batches"] == 1.0 and 0.0 <= line["agreement_retrieval"] <= 1.0
    assert (out / "checkpoint.pth").read_bytes() == before  # nothing written
    assert cli_main([*probe, "model.arch=vit_femto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "networks do not fit the config" in err[0]
