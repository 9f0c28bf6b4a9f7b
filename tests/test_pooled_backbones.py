"""ResNet and CAFormer backbones (pretrain.pooled) for BAM and the frozen-feature protocols, on CPU with tiny widths.

* BAM steps with each backbone at 32/16 px (multi-crop of two sizes);
* export -> checkpoint adapter -> features equal to the training model's;
* official layouts written as tiny files (BAM ``model`` with ``student.module.backbone.`` / ``teacher[.module]
  .backbone.``, DINO ResNet training checkpoint and backbone-only release, MoCo v3 ``module.base_encoder.``,
  torchvision ``resnet`` keys with ``fc.*``, timm's StarReLU CAFormer with ``head.fc.*``) load strictly and give the
  source model's features; the official BAM CAFormer-M36 keys are timm's with GELU and no residual scale (checked
  once against BAM's models/metaformer.py at fd858711, see the module docstring of pretrain.pooled);
* one-line errors: a missing / extra key, ViT-only protocols (DAVIS, dense) given a CNN checkpoint (exit 2, before
  any work), ViT taps asked of a CNN;
* ContrastiveCrop boxes from the activation map;
* ``sslbench pretrain`` BAM with resnet_tiny for one epoch on ShapesWorld, then ``sslbench eval knn`` of its export.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_engine import BAM_CAFORMER_OVER, BAM_RESNET_OVER, random_views, toy_cfg
from torch import nn

from evaluate.checkpoints import load_backbone
from evaluate.cli import main as cli_main
from evaluate.protocols.features import FeatureConfig, tap_features
from pretrain.contrastive_crop import boxes_for_images
from pretrain.engine import Trainer
from pretrain.pooled import POOLED_ARCHS, PooledArch, build_pooled, export_pooled
from sslcore.errors import SSLBenchError

REPO = Path(__file__).resolve().parent.parent
OVERS = {"resnet_tiny": BAM_RESNET_OVER, "caformer_tiny": BAM_CAFORMER_OVER}


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return tap_features(model.eval(), x, "cls", 1)


def _randomised(arch: str) -> nn.Module:
    """A tiny model with every parameter and BN statistic drawn at random (zero-initialised BNs would hide a swap)."""
    torch.manual_seed(0)
    model = build_pooled(arch)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in name else torch.randn_like(t) * 0.2)
    return model.eval()


@pytest.mark.parametrize("arch", list(OVERS))
def test_bam_steps_with_each_backbone(tmp_path, arch):
    """Three BAM steps on 2 x 32 px + 2 x 16 px crops: finite losses, the backbone and projector train, the projector
    reads the pooled feature (its input width is the backbone's), the teacher follows by EMA."""
    cfg = toy_cfg(tmp_path, **{**OVERS[arch], "train.batch_size": 8})
    trainer = Trainer(cfg, iters_per_epoch=5)
    student = trainer.method.student
    assert student.heads["proj"].layers[0].in_features == POOLED_ARCHS[arch].embed_dim
    before = {n: p.detach().clone() for n, p in student.backbone.named_parameters()}
    t_before = {n: p.detach().clone() for n, p in trainer.method.teacher.named_parameters()}
    losses = [trainer.train_step(random_views(8, s, cfg))[0] for s in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in student.backbone.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) > len(before) // 2
    t_changed = [n for n, p in trainer.method.teacher.named_parameters() if not torch.equal(p, t_before[n])]
    assert t_changed and set(t_changed) <= {f"backbone.{n}" for n in before} | {
        n for n, _ in trainer.method.teacher.named_parameters()
    }
    outs = student.backbone.forward_crops([torch.randn(2, 3, 32, 32)] * 2 + [torch.randn(2, 3, 16, 16)] * 2)
    assert [tuple(o.cls.shape) for o in outs] == [(2, POOLED_ARCHS[arch].embed_dim)] * 4


def test_methods_that_need_patch_tokens_refuse_a_cnn_when_built(tmp_path):
    """DINO trains on the pooled feature (its official code supports convnets); iBOT, ADCLR and SERE read patch
    tokens, masks or queries: one ConfigError line when the method is built."""
    from test_engine import METHOD_OVERRIDES

    from pretrain.methods import build_method
    from sslcore.errors import ConfigError

    cfg = toy_cfg(tmp_path, **{**METHOD_OVERRIDES["dino"], "model.arch": "resnet_tiny", "train.batch_size": 8})
    trainer = Trainer(cfg, iters_per_epoch=2)
    assert torch.isfinite(torch.tensor(trainer.train_step(random_views(8, 0, cfg))[0]))
    for name in ("ibot", "adclr", "adclr_star", "sere", "sere_dino"):
        cfg = toy_cfg(tmp_path, **{**METHOD_OVERRIDES[name], "model.arch": "caformer_tiny"})
        with pytest.raises(ConfigError, match="needs a ViT") as err:
            build_method(cfg)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("arch", list(OVERS))
def test_export_then_adapter_gives_the_training_models_features(tmp_path, arch):
    cfg = toy_cfg(tmp_path, **{**OVERS[arch], "train.batch_size": 8})
    trainer = Trainer(cfg, iters_per_epoch=5)
    for s in range(2):
        trainer.train_step(random_views(8, s, cfg))
    trainer.out.mkdir(parents=True, exist_ok=True)
    path = trainer.export()
    loaded = load_backbone(path)
    assert loaded.info["format"] == "sslbench" and loaded.info["arch"]["family"] in ("resnet", "metaformer")
    assert loaded.info["arch"]["img_size"] == POOLED_ARCHS[arch].img_size
    x = torch.randn(3, 3, 64, 64)
    ref = _features(trainer.eval_backbone(), x)
    torch.testing.assert_close(_features(loaded.model, x), ref, rtol=0, atol=0)
    assert ref.shape == (3, POOLED_ARCHS[arch].embed_dim)
    # the training checkpoint too (teacher and student)
    trainer.save()
    for which in ("teacher", "student"):
        net = trainer.method.teacher if which == "teacher" else trainer.method.student
        got = load_backbone(trainer.out / "checkpoint.pth", which=which)
        torch.testing.assert_close(_features(got.model, x), _features(net.backbone, x), rtol=0, atol=0)
        assert got.report.dropped and all(k.startswith("heads.") for k in got.report.dropped)


def _official_files(tmp: Path, arch: str, model: nn.Module) -> dict[str, Path]:
    """The official layouts of ``arch``'s weights (tiny), each with non-backbone keys the adapter must drop."""
    sd = model.state_dict()
    proj = {"projector.0.weight": torch.randn(8, model.embed_dim), "projector.0.bias": torch.zeros(8)}
    other = {k: v + 1.0 if v.is_floating_point() else v for k, v in sd.items()}  # the other network differs
    files: dict[str, dict] = {}
    # BAM main_pretrain.py: StudentTeacherWrapper state under "model"; with BN the teacher is DDP-wrapped too
    teacher_prefix = "teacher.module.backbone." if arch.startswith("resnet") else "teacher.backbone."
    files["bam"] = {
        "model": {
            **{f"student.module.backbone.{k}": v for k, v in other.items()},
            **{f"student.module.proj_head.{k}": v for k, v in proj.items()},
            **{teacher_prefix + k: v for k, v in sd.items()},
            **{teacher_prefix.replace("backbone.", "proj_head.") + k: v for k, v in proj.items()},
        },
        "epoch": 3,
        "boxes": torch.rand(5, 4),
    }
    if arch.startswith("resnet"):
        fc = {"fc.weight": torch.randn(10, model.embed_dim), "fc.bias": torch.zeros(10)}
        head = {"head.mlp.0.weight": torch.randn(8, model.embed_dim), "head.last_layer.weight_g": torch.ones(8, 1)}
        files["dino"] = {  # DINO main_dino.py --arch resnet50: teacher plain, student DDP-wrapped
            "teacher": {**{f"backbone.{k}": v for k, v in sd.items()}, **head},
            "student": {
                **{f"module.backbone.{k}": v for k, v in other.items()},
                **{f"module.{k}": v for k, v in head.items()},
            },
            "epoch": 3,
        }
        files["dino_release"] = dict(sd)  # dino_resnet50_pretrain.pth: torchvision keys, fc removed
        moco_fc = {"fc.0.weight": torch.randn(8, model.embed_dim), "fc.1.weight": torch.ones(8)}
        files["moco"] = {  # MoCo v3 main_moco.py checkpoint: base encoder's fc is the projector
            "state_dict": {
                **{f"module.base_encoder.{k}": v for k, v in {**sd, **moco_fc}.items()},
                **{f"module.momentum_encoder.{k}": v for k, v in {**other, **moco_fc}.items()},
                "module.predictor.0.weight": torch.randn(8, 8),
            },
            "epoch": 100,
            "arch": "resnet50",
        }
        files["torchvision"] = {**sd, **fc}  # torchvision / timm resnet50 state dict with its classifier
    else:
        files["timm_classifier"] = {
            **sd,
            "head.fc.weight": torch.randn(10, model.embed_dim),
            "head.fc.bias": torch.zeros(10),
        }
    paths = {}
    for name, payload in files.items():
        paths[name] = tmp / f"{arch}_{name}.pth"
        torch.save(payload, paths[name])
    return paths


@pytest.mark.parametrize("arch", list(OVERS))
def test_official_layouts_load_strictly_with_equal_features(tmp_path, arch, capsys):
    model = _randomised(arch)
    x = torch.randn(2, 3, 64, 64)
    ref = _features(model, x)
    expected_format = {
        "bam": "bam",
        "dino": "dino",
        "dino_release": "timm",
        "moco": "moco",
        "torchvision": "timm",
        "timm_classifier": "timm",
    }
    for name, path in _official_files(tmp_path, arch, model).items():
        loaded = load_backbone(path, trust_pickle=False)
        assert loaded.info["format"] == expected_format[name], name
        assert PooledArch.from_dict(loaded.info["arch"]) == PooledArch.from_dict(
            {**model.arch.to_dict(), "img_size": 224}
        )
        torch.testing.assert_close(_features(loaded.model, x), ref, rtol=0, atol=0, msg=name)
        if name in ("bam", "dino", "moco", "torchvision", "timm_classifier"):
            assert loaded.report.dropped, name  # heads, projectors, the other network, classifiers
    # ckpt inspect reads them too (one report, exit 0), ckpt convert --to timm writes plain timm keys
    capsys.readouterr()
    assert cli_main(["ckpt", "inspect", str(tmp_path / f"{arch}_bam.pth")]) == 0
    report = capsys.readouterr().out
    family = model.arch.family
    assert f"family      {family}" in report and "depths" in report
    assert ("block" in report) == (family == "resnet")  # each family shows its own fields only
    assert ("mixers" in report) == ("res_scale" in report) == (family == "metaformer")
    conv = tmp_path / f"{arch}_timm.pth"
    assert cli_main(["ckpt", "convert", str(tmp_path / f"{arch}_bam.pth"), "--to", "timm", str(conv)]) == 0
    torch.testing.assert_close(_features(load_backbone(conv).model, x), ref, rtol=0, atol=0)
    # the student of a BAM / DINO file is the other network
    student = load_backbone(tmp_path / f"{arch}_bam.pth", which="student")
    assert not torch.equal(_features(student.model, x), ref)


def test_timm_caformer_starrelu_with_residual_scales_is_inferred(tmp_path):
    """timm's own CAFormer (StarReLU, residual scales in stages 3-4) is a different architecture from BAM's; the
    adapter reads which one a file holds off its keys."""
    arch = PooledArch(
        "metaformer",
        (1, 1, 1, 1),
        (16, 32, 64, 96),
        mixers=("sepconv", "sepconv", "attention", "attention"),
        act="starrelu",
        res_scale=(None, None, 1.0, 1.0),
    )
    torch.manual_seed(1)
    model = build_pooled(arch).eval()
    path = tmp_path / "caformer_timm.pth"
    torch.save(model.state_dict(), path)
    loaded = load_backbone(path)
    assert loaded.info["arch"]["act"] == "starrelu" and loaded.info["arch"]["res_scale"] == [None, None, 1.0, 1.0]
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(_features(loaded.model, x), _features(model, x), rtol=0, atol=0)


def test_resnet50_and_caformer_m36_shapes_match_the_published_models():
    """The full-size recipes' backbones: ResNet-50 is torchvision's/timm's (23.5M parameters without fc, 2048-d),
    CAFormer-M36 BAM's (GELU, no residual scales: 52.5M without a classifier, 576-d)."""
    r50, m36 = build_pooled("resnet50"), build_pooled("caformer_m36")
    assert sum(p.numel() for p in r50.parameters()) == 23_508_032 and r50.embed_dim == 2048
    assert sum(p.numel() for p in m36.parameters()) == 52_548_480 and m36.embed_dim == 576
    import torchvision

    tv = torchvision.models.resnet50().state_dict()
    assert {k: tuple(v.shape) for k, v in tv.items() if not k.startswith("fc.")} == {
        k: tuple(v.shape) for k, v in r50.state_dict().items()
    }


def test_strict_errors_are_one_line(tmp_path):
    model = _randomised("resnet_tiny")
    sd = model.state_dict()
    missing = {k: v for k, v in sd.items() if k != "layer2.0.bn1.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(SSLBenchError, match=r"missing: layer2\.0\.bn1\.weight") as err:
        load_backbone(tmp_path / "missing.pth")
    assert "\n" not in str(err.value)
    torch.save({**sd, "layer1.0.extra.weight": torch.ones(3)}, tmp_path / "extra.pth")
    with pytest.raises(SSLBenchError, match=r"unexpected: layer1\.0\.extra\.weight"):
        load_backbone(tmp_path / "extra.pth")
    torch.save({**sd, "layer1.0.conv2.weight": torch.ones(1, 1, 3, 3)}, tmp_path / "shape.pth")
    with pytest.raises(SSLBenchError, match="wrong shape: layer1.0.conv2.weight"):
        load_backbone(tmp_path / "shape.pth")
    torch.save(sd, tmp_path / "ok.pth")
    with pytest.raises(SSLBenchError, match="num_heads / pos_interp apply to ViTs"):
        load_backbone(tmp_path / "ok.pth", num_heads=6)
    assert cli_main(["ckpt", "inspect", str(tmp_path / "missing.pth")]) == 2
    assert cli_main(["ckpt", "convert", str(tmp_path / "ok.pth"), "--to", "mmdet", str(tmp_path / "mm.pth")]) == 2
    assert not (tmp_path / "mm.pth").exists()


def test_vit_only_taps_on_a_cnn_fail_in_one_line(tmp_path):
    from evaluate.protocols.features import extract_features

    model = _randomised("resnet_tiny")
    with pytest.raises(SSLBenchError, match="one pooled feature"):
        extract_features(model, None, None, FeatureConfig(taps="mean_patch"))  # type: ignore[arg-type]
    with pytest.raises(SSLBenchError, match="one pooled feature"):
        extract_features(model, None, None, FeatureConfig(taps="cls", n_last=4))  # type: ignore[arg-type]


def test_contrastive_crop_boxes_from_the_activation_map():
    """The CNN rule: channel mean of the last feature map, min-max normalised, upsampled, thresholded at 0.1."""

    class Stub(nn.Module):
        def activation_map(self, x: torch.Tensor) -> torch.Tensor:
            heat = torch.zeros(x.shape[0], 4, 4)
            heat[:, 1:3, 2:4] = 1.0  # rows 1-2, columns 2-3 of a 4x4 map
            return heat

    boxes = boxes_for_images(Stub(), torch.zeros(2, 3, 64, 64), threshold=0.1)
    # bilinear upsampling (align_corners=False) spreads the block by up to half a cell (8 px) before the threshold
    assert boxes.shape == (2, 4)
    h0, w0, h1, w1 = boxes[0].tolist()
    assert 0.15 < h0 < 0.25 and 0.4 < w0 < 0.5 and 0.75 < h1 < 0.85 and w1 == 1.0
    # a real tiny ResNet: its map is the channel mean of layer4
    model = _randomised("resnet_tiny")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.activation_map(x), model.forward_features(x).mean(1))
    got = boxes_for_images(model, x)
    assert ((got[:, 2] > got[:, 0]) & (got[:, 3] > got[:, 1])).all()


def _resnet_export(tmp_path: Path) -> Path:
    model = _randomised("resnet_tiny")
    path = tmp_path / "resnet_tiny_backbone.pth"
    torch.save(export_pooled(model, {"method": "bam"}), path)
    return path


def test_davis_and_dense_refuse_a_cnn_in_one_line(tmp_path, shapes_root, capsys):
    path = _resnet_export(tmp_path)
    davis_root, data_root = shapes_root / "davis", shapes_root / "ade20k"  # good data: the network is what is refused
    out = tmp_path / "davis_out"
    code = cli_main(["eval", "davis", "--checkpoint", str(path), "--davis-root", str(davis_root), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "DAVIS label propagation needs a ViT" in err[0] and str(path) in err[0]
    assert not any((out).rglob("*.png"))
    code = cli_main(["eval", "ade20k", str(path), "--data-root", str(data_root), "--out", str(tmp_path / "det")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "dense evaluation" in err[0] and "needs a ViT" in err[0]
    root = str(shapes_root / "classification")
    code = cli_main(["eval", "finetune", str(path), "--data", root, "--out", str(tmp_path / "ft"), "aug.input_size=32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "fine-tuning" in err[0] and "needs a ViT" in err[0]
    assert not (tmp_path / "ft" / "checkpoint.pth").exists()
    assert not (tmp_path / "det" / "backbone.pth").exists()


def test_cli_pretrain_resnet_tiny_then_knn(tmp_path, shapes_root):
    """``sslbench pretrain`` BAM with resnet_tiny, one epoch on the tiny ShapesWorld, then ``sslbench eval knn`` of
    the export (the recipe's ViT-only model keys reset to their defaults; LARS and the ReLU projector as the ResNet-50
    recipe; the online k-NN monitor on)."""
    train = shapes_root / "classification" / "train"
    out = tmp_path / "run"
    over = [
        "model.arch=resnet_tiny",
        "model.pos_embed=learned",
        "model.freeze_patch_embed=false",
        "model.init=timm",
        f"data.root={train}",
        "data.global_size=32",
        "data.local_size=16",
        "data.local_crops=2",
        "data.num_workers=0",
        "train.epochs=1",
        "train.batch_size=32",
        "train.threads=1",
        "train.log_every=1",
        "ccrop.enabled=false",
        "knn.every_epochs=1",  # the online k-NN monitor reads the pooled feature too
        f"knn.train_root={train}",
        f"knn.val_root={shapes_root / 'classification' / 'val'}",
        "knn.size=32",
        "bam.proj_hidden=64",
        "bam.proj_out=64",
        "bam.proj_act=relu",
        "optim.name=lars",
        "optim.lr=0.3",
        "optim.weight_decay=1e-6",
        "optim.weight_decay_end=1e-6",
    ]
    config = REPO / "pretrain" / "configs" / "bam_shapes_tiny.yaml"
    assert cli_main(["pretrain", "--config", str(config), "--out", str(out), *over]) == 0
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epoch = next(r for r in steps if r["kind"] == "epoch" and r["epoch"] == 0)
    assert 0.0 <= epoch["knn_top1"] <= 100.0 and epoch["knn_eff_rank"] >= 1.0
    exported = torch.load(out / "backbone.pth", weights_only=True)
    assert exported["arch"]["family"] == "resnet" and "layer4.0.conv3.weight" in exported["state_dict"]
    knn_out = tmp_path / "knn"
    code = cli_main(
        [
            "eval",
            "knn",
            str(out / "backbone.pth"),
            "--data",
            str(shapes_root / "classification"),
            "features.crop=32",
            "features.batch_size=64",
            f"out={knn_out}",
        ]
    )
    assert code == 0
    metrics = json.loads((knn_out / "metrics.json").read_text())["metrics"]
    top1 = [v for k, v in metrics.items() if k.startswith("top1")]
    assert top1 and all(0.0 <= v <= 100.0 for v in top1)


@pytest.mark.parametrize("arch", list(OVERS))
def test_every_frozen_protocol_runs_on_pooled_features(tmp_path, shapes_root, arch):
    """linear (the architecture's head protocol: one head on the pooled feature), logistic regression and
    clustering through the CLI on an export; the linear bank is the pooled feature (taps=cls, one block)."""
    model = _randomised(arch)
    path = tmp_path / f"{arch}.pth"
    torch.save(export_pooled(model), path)
    data = ["--data", str(shapes_root / "classification"), "features.crop=32", "features.batch_size=64"]
    dim = POOLED_ARCHS[arch].embed_dim
    assert cli_main(["eval", "linear", str(path), *data, "mode=cached", "epochs=2", f"out={tmp_path / 'lin'}"]) == 0
    lin = json.loads((tmp_path / "lin" / "metrics.json").read_text())
    assert lin["settings"]["taps"] == {"taps": "cls", "n_last": 1, "interleave": False}
    assert 0.0 <= lin["metrics"]["top1"] <= 100.0
    assert cli_main(["eval", "cluster", str(path), *data, f"out={tmp_path / 'cl'}"]) == 0
    assert cli_main(["eval", "logreg", str(path), *data, f"out={tmp_path / 'lr'}"]) == 0
    from evaluate.reporting.records import read_records

    records = read_records()  # the records name the architecture (family, widths) and hold finite metrics
    assert {r["protocol"] for r in records} == {"linear", "cluster", "logreg"}
    for r in records:
        assert r["checkpoint"]["arch"]["family"] == POOLED_ARCHS[arch].family
        assert r["checkpoint"]["arch"]["widths"] == list(POOLED_ARCHS[arch].widths)
        assert -100.0 <= r["value"] <= 100.0, r
    lin_record = next(r for r in records if r["protocol"] == "linear")
    assert dim == POOLED_ARCHS[arch].embed_dim and lin_record["settings"]["taps"]["taps"] == "cls"


def test_bam_table8_and_table5_resnet_rows_fill_from_pooled_records(tmp_path):
    """Linear records of a ResNet-50 and a CAFormer-M36 checkpoint fill BAM Table 8 as rows labelled with the
    paper's architecture names; logistic-regression transfer records of the ResNet-50 fill Table 5 (linear)."""
    from evaluate.reporting.records import Record, append_records
    from evaluate.reporting.reference import load_reference
    from evaluate.reporting.results import query
    from evaluate.reporting.tables import regenerate

    store = tmp_path / "store"
    archs = {"bam-r50": POOLED_ARCHS["resnet50"], "bam-m36": POOLED_ARCHS["caformer_m36"]}
    records = [
        Record(
            protocol="linear",
            dataset="imagenet",
            split="val",
            metric="top1",
            value=value,
            checkpoint={
                "name": name,
                "sha256": name[-3:] * 21 + "x",
                "format": "sslbench",
                "arch": archs[name].to_dict(),
            },
            settings={"variant": "dino"},
            run_id=f"lin{name}",
        )
        for name, value in (("bam-r50", 71.5), ("bam-m36", 76.3))
    ]
    records += [
        Record(
            protocol="logreg",
            dataset=ds,
            split="test",
            metric=metric,
            value=value,
            checkpoint={
                "name": "bam-r50",
                "sha256": "r50" * 21 + "x",
                "format": "sslbench",
                "arch": archs["bam-r50"].to_dict(),
            },
            settings={},
            run_id=f"lr{ds}",
        )
        for ds, metric, value in (("food101", "top1", 70.0), ("pets", "mean_per_class", 80.5))
    ]
    append_records(records, store)
    tables = {t.id: t for p in load_reference().values() for t in p.tables}
    t8 = regenerate(tables["bam.table8_architectures"], query(store))
    measured = {tuple(row[:2]): row[-1] for row in t8.rows if row[0] in ("bam-r50", "bam-m36")}
    assert measured == {("bam-r50", "ResNet-50"): "71.5", ("bam-m36", "CAFormer-M36"): "76.3"}, t8.rows
    t5 = regenerate(tables["bam.table5_transfer_linear"], query(store))
    row = next(r for r in t5.rows if "bam-r50" in r)
    assert "ResNet-50" in row and "70.0" in row and "80.5" in row, row


def test_detection_needs_a_first_block_right_under_a_network_prefix():
    from evaluate.checkpoints import is_pooled_checkpoint

    one = torch.ones(1)
    assert is_pooled_checkpoint({"model": {"teacher.module.backbone.layer1.0.conv1.weight": one}})
    assert is_pooled_checkpoint({"state_dict": {"module.base_encoder.layer1.0.conv1.weight": one}})
    assert is_pooled_checkpoint({"student": {"module.backbone.stages.0.blocks.0.norm1.weight": one}})
    # a hybrid ViT's CNN stem is not a pooled backbone: it stays with the ViT loader
    assert not is_pooled_checkpoint({"patch_embed.backbone.stages.0.blocks.0.norm1.weight": one, "cls_token": one})
