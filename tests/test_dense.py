"""Dense protocols through the real mm stack on CPU: registries, optimizer constructor, ShapesWorld COCO and ADE20K
runs through `sslbench eval`, resume, and the full-size configs (built, one forward at the configured size)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

try:
    import mmcv.ops  # noqa: F401  (the compiled ops, not mmcv-lite)
    import mmdet  # noqa: F401
    import mmseg  # noqa: F401
except Exception as exc:  # noqa: BLE001
    pytest.skip(
        f"the mm stack (dense extra) is not importable ({type(exc).__name__}: {exc}); run scripts/install_mm.sh",
        allow_module_level=True,
    )

from evaluate.cli import main
from evaluate.protocols.layer_decay import lr_scale
from evaluate.reporting.records import read_records
from pretrain.vit import build_vit, export_backbone

pytestmark = pytest.mark.dense
REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "downstream_configs"


def tiny_export(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save(export_backbone(build_vit("vit_pico")), path)
    return path


def tiny_converted(path: Path) -> tuple[Path, dict]:
    torch.manual_seed(0)
    model = build_vit("vit_pico")
    state = model.state_dict()
    meta = {"arch": model.arch.to_dict(), "pos_interp": "dino", "source_sha256": "0" * 64, "format": "test"}
    torch.save({"state_dict": state, "meta": meta}, path)
    return path, state


def build_model(config: Path, **backbone):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from evaluate.protocols.dense.runner import _replace_type

    cfg = Config.fromfile(str(config))
    scope = cfg.get("default_scope", "mmdet")
    init_default_scope(scope)
    import evaluate.protocols.dense.register  # noqa: F401

    if scope == "mmseg":
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    cfg.model.backbone.update(backbone)
    _replace_type(cfg.model, "SyncBN", "BN")
    model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, model


def test_registry_build_keeps_loaded_weights_and_layer_decay_groups(tmp_path):
    from mmengine.optim import build_optim_wrapper

    ckpt, state = tiny_converted(tmp_path / "bb.pth")
    cfg, model = build_model(CONFIGS / "coco" / "cascade_mask_rcnn_vit_shapesworld.py", checkpoint=str(ckpt))
    loaded = model.backbone.vit.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())  # init_weights left the ViT alone
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    base_lr, decay = cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.paramwise_cfg.layer_decay_rate
    names = {id(p): n for n, p in model.named_parameters()}
    seen = 0
    for group in wrapper.optimizer.param_groups:
        for param in group["params"]:
            name = names[id(param)]
            assert group["lr"] == pytest.approx(base_lr * lr_scale(name, 4, decay)), name
            exempt = param.ndim == 1 or name.endswith((".pos_embed", ".cls_token"))
            assert group["weight_decay"] == (0.0 if exempt else 0.05), name
            seen += 1
    assert seen == sum(1 for p in model.parameters() if p.requires_grad)


def _shapesworld_root(tmp_path: Path, task: str) -> Path:
    """An empty ``<tmp>/shapesworld/<task>`` inside a tree marked as ShapesWorld (``shapesworld.json``), which makes
    the runner pick the task's ShapesWorld config."""
    root = tmp_path / "shapesworld" / task
    root.mkdir(parents=True)
    (root.parent / "shapesworld.json").write_text("{}")
    return root


def _losses(run: Path) -> list[float]:
    losses = [row["loss"] for row in json.loads((run / "losses.json").read_text())]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses), losses
    return losses


@pytest.mark.slow
def test_coco_cascade_mask_rcnn_end_to_end(shapes_root, tmp_path, capsys):
    ckpt = tiny_export(tmp_path / "pico_export.pth")  # a pretraining export: converted through evaluate.checkpoints
    run = tmp_path / "run"
    code = main(["eval", "coco", str(ckpt), "--data-root", str(shapes_root / "coco"), "--out", str(run)])
    assert code == 0
    losses = _losses(run)
    assert losses[-1] < losses[0] and sum(losses[-2:]) < sum(losses[:2]), losses
    records = [r for r in read_records() if r["protocol"] == "coco"]
    metrics = {r["metric"]: r["value"] for r in records}
    assert {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "segm_mAP", "segm_mAP_50"} <= set(metrics)
    assert all(0.0 <= v <= 100.0 for v in metrics.values())
    record = records[0]
    assert record["dataset"] == "shapesworld-coco" and record["split"] == "val"
    assert record["checkpoint"]["arch"]["embed_dim"] == 64 and record["checkpoint"]["format"] == "sslbench"
    assert record["settings"]["config"] == "cascade_mask_rcnn_vit_shapesworld"
    overrides = record["settings"]["overrides"]
    assert overrides["model.backbone.checkpoint"] == str((run / "backbone.pth").resolve())
    assert overrides["train_dataloader.dataset.data_root"] == str((shapes_root / "coco").resolve()) + "/"
    raw = json.loads((run / "metrics.json").read_text())
    assert metrics["bbox_mAP"] == pytest.approx(100 * raw["coco/bbox_mAP"])
    assert (run / "config.py").is_file() and list((run / "mm").glob("iter_6.pth"))
    assert "bbox_mAP" in capsys.readouterr().out


@pytest.mark.slow
def test_ade20k_upernet_end_to_end_and_resume(shapes_root, tmp_path):
    ckpt, _ = tiny_converted(tmp_path / "pico_converted.pth")
    run = tmp_path / "run"
    args = ["eval", "ade20k", str(ckpt), "--data-root", str(shapes_root / "ade20k"), "--out", str(run)]
    assert main(args) == 0
    losses = _losses(run)
    assert losses[-1] < losses[0] and sum(losses[-2:]) < sum(losses[:2]), losses
    first = {r["metric"]: r["value"] for r in read_records() if r["protocol"] == "ade20k"}
    assert set(first) == {"mIoU", "mAcc", "aAcc"} and all(0.0 <= v <= 100.0 for v in first.values())
    # metrics.json is what a torchrun launch reads back: mmseg's numpy scalars must reach it
    raw = json.loads((run / "metrics.json").read_text())
    assert {k: raw[k] for k in first} == pytest.approx(first)
    # resume: mmengine reloads iter_6.pth (HistoryBuffer, numpy state) through the weights-only safe loader,
    # finds training complete and re-tests the same weights
    assert main(args + ["--resume"]) == 0
    records = [r for r in read_records() if r["protocol"] == "ade20k"]
    assert len(records) == 6
    second = {r["metric"]: r["value"] for r in records[3:]}
    assert second == pytest.approx(first)


def test_safe_load_refuses_unknown_globals(tmp_path):
    from evaluate.protocols.dense.register import safe_load
    from sslcore.errors import SSLBenchError

    torch.save({"x": torch.ones(1), "obj": Path("/tmp")}, tmp_path / "evil.pth")
    with pytest.raises(SSLBenchError, match="refusing to unpickle"):
        safe_load(str(tmp_path / "evil.pth"))


FULL = sorted(p for p in CONFIGS.glob("*/*.py") if "shapesworld" not in p.name and p.parent.name != "_base_")


@pytest.mark.slow
@pytest.mark.parametrize("config", FULL, ids=[p.stem for p in FULL])
def test_full_size_config_builds_and_runs_one_forward(config):
    cfg, model = build_model(config)
    model.eval()
    if cfg.get("default_scope") == "mmseg":
        size = tuple(cfg.model.data_preprocessor["size"])
        with torch.no_grad():
            logits = model(torch.randn(1, 3, *size), mode="tensor")
        stride = 4 if cfg.model.backbone.get("with_fpn", True) else 16
        assert logits.shape == (1, cfg.model.decode_head.num_classes, size[0] // stride, size[1] // stride)
        assert torch.isfinite(logits).all()
        return
    # detection: the test scale (1333, 800) of a 4:3 COCO image, padded to 32 -> 800 x 1088
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 800, 1088))
    assert [tuple(f.shape[-2:]) for f in feats] == [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
    assert all(torch.isfinite(f).all() for f in feats)
    assert model.backbone.vit.blocks[0].attn.num_heads == model.backbone.vit.embed_dim // 64  # 6 (S), 12 (B)


@pytest.mark.parametrize("task", ["coco", "ade20k", "voc", "imagenet-s"])
def test_runner_overrides_reach_every_dataset(task, tmp_path):
    from evaluate.protocols.dense.runner import build_config, resolve_config

    root = tmp_path / "data"
    root.mkdir()
    config = resolve_config(task, None, {"embed_dim": 384}, root)
    cfg, overrides = build_config(config, tmp_path / "bb.pth", root, tmp_path / "mm")
    expected = str(root.resolve()) + "/"

    def roots(dataset):
        if "datasets" in dataset:
            return [r for d in dataset["datasets"] for r in roots(d)]
        return [dataset["data_root"]]

    for split in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert set(roots(cfg[split]["dataset"])) == {expected}, split
    assert cfg.model.backbone.checkpoint == str((tmp_path / "bb.pth").resolve()) and "arch" not in cfg.model.backbone
    assert cfg.work_dir == str((tmp_path / "mm").resolve())
    if task == "coco":
        assert cfg.test_evaluator.ann_file == expected + "annotations/instances_val2017.json"
    swapped = overrides.get("SyncBN->BN (single process)", 0)
    assert swapped == 0 if task == "imagenet-s" else swapped >= 2  # backbone adapter + heads
    assert "SyncBN" not in str(cfg.model)


@pytest.mark.parametrize("task", ["coco", "ade20k"])
def test_the_heads_take_the_checkpoints_width(task, tmp_path):
    """The ShapesWorld configs are written for vit_pico (64 wide); a vit_femto (32) checkpoint must get 32-wide heads
    (before, mm failed on a shape mismatch), and an explicit option still wins."""
    from evaluate.protocols.dense.runner import build_config, resolve_config

    root = _shapesworld_root(tmp_path, task)
    config = resolve_config(task, None, {"embed_dim": 32}, root)
    cfg, overrides = build_config(config, tmp_path / "bb.pth", root, tmp_path / "mm", width=32)
    if task == "coco":
        assert cfg.model.neck.in_channels == [32] * 4
        assert overrides["model.neck.in_channels"].startswith("[64, 64, 64, 64] -> [32, 32, 32, 32]")
    else:
        assert cfg.model.decode_head.in_channels == [32] * 4 and cfg.model.auxiliary_head.in_channels == 32
    same, notes = build_config(config, tmp_path / "bb.pth", root, tmp_path / "mm", width=64)
    assert not any(k.endswith("in_channels") for k in notes)
    if task == "coco":
        option = {"model.neck.in_channels": [16] * 4}
        cfg, _ = build_config(config, tmp_path / "bb.pth", root, tmp_path / "mm", options=option, width=32)
        assert cfg.model.neck.in_channels == [16] * 4


def test_the_long_shapesworld_segmentation_config_trains_on_every_image_with_one_schedule(tmp_path):
    """ade20k/upernet_vit_shapesworld_2k ("ADE20K-tiny") is the 6-iteration ShapesWorld config's model, trained on all
    of images/training, shuffled, with a warm-up + poly schedule that ends where training ends."""
    from evaluate.protocols.dense.runner import build_config, resolve_config

    root = _shapesworld_root(tmp_path, "ade20k")
    short, _ = build_config(resolve_config("ade20k", None, {"embed_dim": 64}, root), tmp_path / "b.pth", root, tmp_path)
    path = resolve_config("ade20k", "ade20k/upernet_vit_shapesworld_2k", {"embed_dim": 64}, root)
    cfg, _ = build_config(path, tmp_path / "b.pth", root, tmp_path / "mm", width=64)
    assert cfg.model == short.model and cfg.optim_wrapper.paramwise_cfg == short.optim_wrapper.paramwise_cfg
    loader = cfg.train_dataloader
    assert loader.batch_size == 8 and loader.sampler.shuffle and loader.dataset.indices is None
    assert any(step["type"] == "RandomFlip" for step in loader.dataset.pipeline)
    assert loader.dataset.data_root == str(root.resolve()) + "/"
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end, poly.type, poly.begin) == ("LinearLR", 100, "PolyLR", 100)
    assert poly.end == cfg.train_cfg.max_iters == 2000 == cfg.default_hooks.checkpoint.interval
    assert cfg.test_cfg == short.test_cfg and cfg.model.test_cfg.mode == "slide"


def test_a_training_length_without_its_schedule_is_named(tmp_path, caplog):
    """--cfg-options train_cfg.max_iters alone leaves a poly schedule written for another length: the runner says so
    (log and overrides.json); moving the schedule's end with it is quiet."""
    from evaluate.protocols.dense.runner import build_config, resolve_config

    root = _shapesworld_root(tmp_path, "ade20k")
    path = resolve_config("ade20k", "ade20k/upernet_vit_shapesworld_2k", {"embed_dim": 64}, root)
    _, notes = build_config(path, tmp_path / "b.pth", root, tmp_path / "mm", options={"train_cfg.max_iters": 40})
    assert "ends at iteration 2000 but train_cfg.max_iters=40" in notes["schedule mismatch"]
    assert "train_cfg.max_iters=40" in caplog.text
    options = {"train_cfg.max_iters": 400, "param_scheduler.1.end": 400}
    _, notes = build_config(path, tmp_path / "b.pth", root, tmp_path / "mm", options=options)
    assert "schedule mismatch" not in notes
    for config in sorted(CONFIGS.glob("*/*.py")):  # every shipped config ends its schedule with its training
        if config.parent.name != "_base_":
            _, notes = build_config(config, tmp_path / "b.pth", root, tmp_path / "mm")
            assert "schedule mismatch" not in notes, config


@pytest.mark.parametrize(
    ("task", "damage", "fragment"),
    [
        ("coco", "empty", "annotations/instances_train.json: annotation file not found"),
        ("coco", "bad-json", "instances_train.json: not a JSON annotation file"),
        ("coco", "no-images", "images/train: missing or empty"),
        ("ade20k", "empty", "images/training: missing or empty"),
        ("ade20k", "no-labels", "annotations/training: missing or empty"),
    ],
)
def test_a_wrong_dataset_layout_is_one_line_before_anything_is_written(
    shapes_root, tmp_path, capsys, task, damage, fragment
):
    import shutil

    ckpt = tmp_path / "pico.pth"
    torch.save(export_backbone(build_vit("vit_pico")), ckpt)
    root = tmp_path / task
    if damage == "empty":
        root.mkdir()
    else:
        shutil.copytree(shapes_root / task, root)
        (root.parent / "shapesworld.json").write_text((shapes_root / "shapesworld.json").read_text())
    if damage == "bad-json":
        (root / "annotations" / "instances_train.json").write_text("{")
    if damage == "no-images":
        shutil.rmtree(root / "images" / "train")
    if damage == "no-labels":
        shutil.rmtree(root / "annotations" / "training")
    config = "coco/cascade_mask_rcnn_vit_shapesworld" if task == "coco" else "ade20k/upernet_vit_shapesworld"
    out = tmp_path / "run"
    code = main(["eval", task, str(ckpt), "--data-root", str(root), "--out", str(out), "--config", config])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert not out.exists()  # nothing converted or written before the data was checked


def test_the_layout_check_follows_cfg_options(shapes_root, tmp_path):
    import shutil

    from evaluate.protocols.dense.runner import CONFIG_DIR, check_data_layout
    from sslcore.errors import DataError

    root = tmp_path / "coco"
    shutil.copytree(shapes_root / "coco", root)
    (root / "annotations" / "instances_train.json").rename(root / "annotations" / "mine.json")
    config = CONFIG_DIR / "coco" / "cascade_mask_rcnn_vit_shapesworld.py"
    with pytest.raises(DataError, match="instances_train.json: annotation file not found"):
        check_data_layout(config, root)
    check_data_layout(config, root, {"train_dataloader.dataset.ann_file": "annotations/mine.json"})


def test_cuda_peaks_survive_mmengines_resets(monkeypatch):
    """mmengine's log processor reads torch's CUDA peak and resets it at every log line; ``run_mm``'s wrapper keeps
    each reading for the run's meter and timings.json (on the H200 the acceptance run read 0.99 GiB after a COCO run
    whose training lines logged up to 3.7 GiB)."""
    from types import SimpleNamespace

    from mmengine.runner import log_processor

    from evaluate.protocols.dense.runner import _keep_cuda_peaks
    from sslcore.io import start_meter

    readings = iter([120, 3769, 900])  # MiB since the previous reset, as mmengine's reader returns them

    def fake_reader(device=None):
        return next(readings)

    monkeypatch.setattr(log_processor, "get_max_cuda_memory", fake_reader)
    meter = start_meter()
    processor = log_processor.LogProcessor()
    runner = SimpleNamespace(model=SimpleNamespace())
    peaks: list[float] = []
    with _keep_cuda_peaks(peaks):
        got = [processor._get_max_memory(runner) for _ in range(3)]  # the call of every log line
    assert got == [120, 3769, 900]  # mmengine's log lines are unchanged
    assert peaks == [120.0, 3769.0, 900.0]
    assert meter.peak_memory_mb()["cuda_mb"] == 3769.0
    assert log_processor.get_max_cuda_memory is fake_reader  # restored
    meter.stop()


def test_cfg_options_must_name_a_place_in_the_config():
    """mmengine adds any key, so ``optim_wraper.optimizer.lr=1`` trained at the config's lr (the CLI audit's item 21);
    every part before the last must exist, the first may be a Runner argument, the last may be new."""
    from evaluate.protocols.dense.runner import CONFIG_DIR, check_options, load_mm_config
    from sslcore.errors import ConfigError

    path = CONFIG_DIR / "coco" / "cascade_mask_rcnn_vit_small_giou_4conv1f_coco_1x.py"
    cfg = load_mm_config(path)
    good = {
        "model.backbone.drop_path_rate": 0.2,  # exists
        "train_dataloader.persistent_workers": False,  # a new last part
        "randomness.seed": 3,  # a Runner argument the config does not set
        "train_pipeline.0.type": "LoadImageFromFile",  # a list index
        "auto_scale_lr.base_batch_size": 16,
    }
    check_options(cfg, good, path)
    for key, fragment in (
        ("optim_wraper.optimizer.lr", "no 'optim_wraper' under the top level of cascade_mask_rcnn_vit_small_giou_4conv1f"
                                      "_coco_1x.py (nearest: optim_wrapper)"),
        ("model.backbon.drop_path_rate", "no 'backbon' under model of"),
        ("train_pipeline.99.type", "no '99' under train_pipeline of"),
        ("nonexistent", "no 'nonexistent' under the top level"),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            check_options(cfg, {key: 1}, path)


def test_a_cfg_options_typo_is_one_line_before_anything_is_written(shapes_root, tmp_path, capsys):
    ckpt = tmp_path / "pico.pth"
    torch.save(export_backbone(build_vit("vit_pico")), ckpt)
    out = tmp_path / "run"
    args = ["eval", "coco", str(ckpt), "--data-root", str(shapes_root / "coco"), "--out", str(out)]
    args += ["--config", "coco/cascade_mask_rcnn_vit_shapesworld", "--cfg-options", "nonexistent.key=1"]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--cfg-options nonexistent.key: no 'nonexistent'" in err[0], err
    assert not out.exists()


def test_a_suites_cfg_options_typo_fails_the_plan(shapes_root, tmp_path, capsys):
    ckpt = tmp_path / "pico.pth"
    torch.save(export_backbone(build_vit("vit_pico")), ckpt)
    args = ["eval", "full", str(ckpt), "--suite", "shapesworld", "--data-root", str(shapes_root), "--only", "coco"]
    args += ["--out", str(tmp_path / "out"), "--report", str(tmp_path / "report"), "--dry-run"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--set", "coco.cfg_options.optim_wraper=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cfg-options optim_wraper: no 'optim_wraper' under the top level" in err[0], err
    assert "nearest: optim_wrapper" in err[0]
