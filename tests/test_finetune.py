"""Fine-tuning (``sslbench eval finetune``): layer decay, head-layer init, mixup targets, exact resume, DDP, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluate.checkpoints.heads import head_layer_from, load_head_layer
from evaluate.protocols.finetune.config import AugConfig, FinetuneConfig
from evaluate.protocols.finetune.data import mixup_and_loss, transforms
from evaluate.protocols.finetune.engine import build_optimizer, build_scheduler, summarize
from evaluate.protocols.finetune.model import build_classifier
from evaluate.protocols.layer_decay import lr_scale
from pretrain.vit import SSLViT, ViTArch, build_vit, export_backbone
from sslcore.config import load_config
from sslcore.errors import SSLBenchError

REPO = Path(__file__).resolve().parent.parent
ARCH4 = ViTArch(patch_size=8, embed_dim=32, depth=4, num_heads=2, img_size=32)
# a deterministic pipeline: whole image, no flip/RandAugment/erasing/mixup, no drop-path
PLAIN = [
    "aug.scale=[1.0,1.0]",
    "aug.hflip=0",
    "aug.auto_augment=null",
    "aug.color_jitter=0",
    "aug.reprob=0",
    "aug.mixup=0",
    "aug.cutmix=0",
    "aug.repeated_aug=1",
    "model.drop_path=0",
]


def _cfg(root: Path, ckpt: Path, out: Path, *extra: str) -> FinetuneConfig:
    over = [
        f"backbone.path={ckpt}",
        f"data.root={root}",
        f"out={out}",
        "aug.input_size=32",
        "batch_size=8",
        "epochs=2",
        "num_workers=0",
        "threads=1",
        "progress=false",
        "optim.lr=5e-3",
        "optim.warmup_epochs=1",
        *extra,
    ]
    return load_config(FinetuneConfig, None, over)


@pytest.fixture(scope="module")
def femto_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ft") / "femto.pt"
    torch.save(export_backbone(build_vit("vit_femto")), path)
    return path


# ------------------------------------------------------------------------------------------------ layer decay
def test_layer_decay_groups_match_hand_scales_timm_and_dense_rule():
    from timm.optim import param_groups_layer_decay

    torch.manual_seed(0)
    model = build_classifier(SSLViT(ARCH4), 5, pool="mean")
    cfg = load_config(FinetuneConfig, None, ["optim.layer_decay=0.5", "optim.lr=1.0", "optim.lr_batch_ref=null"])
    opt = build_optimizer(model, cfg, 1.0)
    scale = {n: g["lr_scale"] for g in opt.param_groups for n in g["names"]}
    wd = {n: g["weight_decay"] for g in opt.param_groups for n in g["names"]}
    # hand-computed BEiT scales for L = 4: embeddings 0.5^5, block i 0.5^(4 - i), fc_norm / head 1
    assert scale["backbone.cls_token"] == scale["backbone.pos_embed"] == 0.5**5
    assert scale["backbone.patch_embed.proj.weight"] == 0.5**5
    for i in range(4):
        assert scale[f"backbone.blocks.{i}.attn.qkv.weight"] == 0.5 ** (4 - i)
    assert scale["fc_norm.weight"] == scale["head.weight"] == 1.0
    assert set(scale) == {n for n, _ in model.named_parameters()}
    # weight decay: 0 on 1-D params, biases, pos_embed and cls_token; 0.05 on matrices
    assert wd["backbone.pos_embed"] == wd["backbone.cls_token"] == wd["head.bias"] == wd["fc_norm.weight"] == 0.0
    assert wd["backbone.blocks.0.mlp.fc1.weight"] == wd["head.weight"] == 0.05
    # the dense protocols' rule is the same function
    assert all(scale[n] == lr_scale(n, 4, 0.5) for n in scale)
    # timm's param_groups_layer_decay on the same ViT with a head agrees on every parameter but the final norm,
    # which timm puts at the last block's level (0.5) and BEiT/MAE at the head's (1.0)
    import timm

    cls_model = build_classifier(SSLViT(ARCH4), 5, pool="cls")
    ours = {n.removeprefix("backbone."): g["lr_scale"] for g in build_optimizer(cls_model, cfg, 1.0).param_groups
            for n in g["names"]}  # fmt: skip
    ref = timm.create_model("vit_tiny_patch16_224", patch_size=8, embed_dim=32, depth=4, num_heads=2, img_size=32,
                            num_classes=5)  # fmt: skip
    ids = {id(p): n for n, p in ref.named_parameters()}
    theirs = {ids[id(p)]: g["lr_scale"] for g in param_groups_layer_decay(ref, layer_decay=0.5) for p in g["params"]}
    assert set(theirs) == set(ours)
    assert {n: s for n, s in theirs.items() if not n.startswith("norm.")} == {
        n: s for n, s in ours.items() if not n.startswith("norm.")
    }
    assert theirs["norm.weight"] == 0.5 and ours["norm.weight"] == 1.0
    # a fixed sin-cos table (BAM, MoCo v3) stays fixed and out of the optimiser
    sincos = build_classifier(SSLViT(dataclasses.replace(ARCH4, pos_embed="sincos")), 5)
    assert not sincos.backbone.pos_embed.requires_grad
    assert "backbone.pos_embed" not in {n for g in build_optimizer(sincos, cfg, 1.0).param_groups for n in g["names"]}
    # timm's scheduler multiplies lr_scale in: after warm-up the block-0 group runs at lr * 0.5^4
    sched = build_scheduler(opt, cfg, steps_per_epoch=1)
    sched.step(cfg.optim.warmup_epochs)
    for group in opt.param_groups:
        expected = sched._get_lr(cfg.optim.warmup_epochs)[0] * group["lr_scale"]
        assert group["lr"] == pytest.approx(expected)


@pytest.mark.parametrize("prefix", [False, True])
def test_schedules_match_deit_and_mae_formulas(prefix):
    """DeiT: per-epoch cosine counted from 0 after a warm-up from warmup_lr; MAE: per-iteration warm-up from 0, then
    a half-cosine over the remaining E - W epochs (mae/util/lr_sched.py)."""
    over = ["epochs=10", "optim.warmup_epochs=2", "optim.min_lr=0.1"]
    if prefix:
        over += ["optim.warmup_prefix=true", "optim.sched_on=step", "optim.warmup_lr=0.0"]
    else:
        over += ["optim.warmup_lr=0.01"]
    cfg = load_config(FinetuneConfig, None, over)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [param], "lr": 1.0, "lr_scale": 0.5}], lr=1.0)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    for t in range(40 if prefix else 10):
        if prefix:
            sched.step_update(t)
            e = t / 4
            ref = e / 2 if e < 2 else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (e - 2) / 8))
        else:
            sched.step(t)
            ref = 0.01 + 0.99 * t / 2 if t < 2 else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / 10))
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * ref), t


# ------------------------------------------------------------------------------------------------ head layer
def _dino_checkpoint(hidden: int = 48) -> tuple[dict, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    vit = build_vit("vit_femto")
    weight, bias = torch.randn(hidden, 32), torch.randn(hidden)
    net = {f"backbone.{k}": v for k, v in vit.state_dict().items()}
    net.update({"head.mlp.0.weight": weight, "head.mlp.0.bias": bias, "head.mlp.2.weight": torch.randn(16, hidden)})
    student = {f"module.{k}": v.clone() + 1 for k, v in net.items()}
    return {"teacher": net, "student": student}, weight, bias


def test_head_layer_initialisation_copies_the_checkpoint_head(tmp_path):
    ckpt, weight, bias = _dino_checkpoint()
    path = tmp_path / "dino.pth"
    torch.save(ckpt, path)
    layer = load_head_layer(path)
    assert layer.key == "teacher:head.mlp.0" and torch.equal(layer.weight, weight) and torch.equal(layer.bias, bias)
    assert torch.equal(head_layer_from(ckpt, which="student").weight, weight + 1)
    model = build_classifier(build_vit("vit_femto"), 7, head="proj_layer", head_layer=(layer.weight, layer.bias))
    first, act, last = model.head
    assert torch.equal(first.weight, weight) and torch.equal(first.bias, bias)
    assert isinstance(act, torch.nn.GELU) and tuple(last.weight.shape) == (7, 48)
    assert float(last.weight.detach().abs().max()) <= 0.04 and not last.bias.detach().any()  # trunc-normal(0.02), 0
    # the official BAM layout: <which>.proj_head.projector.0
    bam = {"model": {"teacher.proj_head.projector.0.weight": weight, "teacher.proj_head.projector.0.bias": bias,
                     "teacher.backbone.cls_token": torch.zeros(1, 1, 32)}}  # fmt: skip
    assert torch.equal(head_layer_from(bam, format="bam").weight, weight)
    # sslbench training checkpoints: BAM's heads.proj.layers.0, DINO/iBOT's heads.cls.mlp.0
    for key in ("heads.proj.layers.0", "heads.cls.mlp.0"):
        train = {"format": "sslbench-train", "teacher": {"backbone.cls_token": torch.zeros(1, 1, 32),
                                                         f"{key}.weight": weight, f"{key}.bias": bias}}  # fmt: skip
        assert head_layer_from(train, format="sslbench").key == f"teacher:{key}"
    with pytest.raises(SSLBenchError, match="stores no projection head"):
        head_layer_from({"model": {}}, format="mae")
    with pytest.raises(SSLBenchError, match="export stores no projection head"):
        head_layer_from(export_backbone(build_vit("vit_femto")), format="sslbench")
    with pytest.raises(SSLBenchError, match="no projection-head layer"):
        head_layer_from({"teacher": {"backbone.cls_token": torch.zeros(1)}}, format="dino")


# ------------------------------------------------------------------------------------------------ mixup
def test_mixup_with_label_smoothing_gives_the_expected_soft_targets():
    aug = AugConfig(mixup=0.8, cutmix=0.0, smoothing=0.1)
    mixup, loss_fn = mixup_and_loss(aug, num_classes=4)
    x = torch.zeros(4, 3, 8, 8)
    x[0] = 1.0  # image 0 is all ones, image 3 (its partner under batch mixup: flip) all zeros
    np.random.seed(0)
    mixed, target = mixup(x.clone(), torch.tensor([0, 1, 2, 3]))
    lam = float(mixed[0, 0, 0, 0])
    assert 0.0 < lam < 1.0 and torch.allclose(mixed[0], torch.full_like(mixed[0], lam))
    off, on = 0.1 / 4, 1 - 0.1 + 0.1 / 4  # 0.025, 0.925
    expected0 = torch.tensor([lam * on + (1 - lam) * off, off, off, lam * off + (1 - lam) * on])
    assert torch.allclose(target[0], expected0, atol=1e-6)
    assert torch.allclose(target.sum(1), torch.ones(4))
    logits = torch.randn(4, 4)
    assert float(loss_fn(logits, target)) == pytest.approx(float(-(target * logits.log_softmax(1)).sum(1).mean()))
    # smoothing only: label-smoothing CE; neither: plain CE
    assert mixup_and_loss(AugConfig(mixup=0, cutmix=0, smoothing=0.1), 4)[0] is None
    assert isinstance(mixup_and_loss(AugConfig(mixup=0, cutmix=0, smoothing=0.0), 4)[1], torch.nn.CrossEntropyLoss)


def test_transforms_handle_non_square_odd_sizes():
    from PIL import Image

    train, test = transforms(AugConfig(input_size=32))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (23, 41, 3), dtype=np.uint8))
    torch.manual_seed(0)
    assert tuple(train(image).shape) == tuple(test(image).shape) == (3, 32, 32)


def test_randaugment_posterize_survives_zero_bits():
    from PIL import Image
    from timm.data.auto_augment import RandAugment

    train, _ = transforms(AugConfig(input_size=16))
    ops = [op for step in train.transforms if isinstance(step, RandAugment) for op in step.ops]
    posterize = [op for op in ops if op.name.startswith("Posterize")]
    assert posterize
    image = Image.new("RGB", (16, 16), (200, 100, 50))
    assert posterize[0].aug_fn(image, 0).getextrema() == ((0, 0), (0, 0), (0, 0))  # Pillow >= 12 would raise
    assert posterize[0].aug_fn(image, 2).getpixel((0, 0)) == (192, 64, 0)


class _Timm1029RepeatAugSampler:
    """timm 1.0.29's ``RepeatAugSampler`` size rule (transcribed; a GPU image ships it): no guard for datasets
    smaller than ``selected_round``, so 128 images give an empty epoch."""

    def __init__(self, dataset, num_replicas, rank, shuffle=True, num_repeats=3, selected_round=256):
        n = len(dataset)
        self.num_samples = math.ceil(n * num_repeats / num_replicas)
        if selected_round:
            self.num_selected_samples = int(math.floor(n // selected_round * selected_round / num_replicas))
        else:
            self.num_selected_samples = int(math.ceil(n / num_replicas))

    def __iter__(self):
        return iter(range(self.num_selected_samples))

    def __len__(self):
        return self.num_selected_samples


@pytest.mark.parametrize("sampler", ["installed", "timm-1.0.29"])
def test_repeated_augmentation_epoch_size_does_not_depend_on_timm(monkeypatch, sampler):
    """DeiT's rule: the epoch is cut to a multiple of 256 images; a dataset below 256 images is kept whole (timm
    1.0.31's rule, asked for explicitly so that timm 1.0.29 agrees; it gave 0 batches on the H200 image)."""
    import timm.data.distributed_sampler as tds

    from evaluate.protocols.finetune.data import Split, train_loader

    if sampler != "installed":
        monkeypatch.setattr(tds, "RepeatAugSampler", _Timm1029RepeatAugSampler)
    aug = AugConfig(repeated_aug=3)
    for n, batch, steps in ((128, 128, 1), (100, 8, 12), (600, 64, 8)):  # 600 images: 512 per epoch
        data = torch.utils.data.TensorDataset(torch.zeros(n, 1), torch.zeros(n, dtype=torch.long))
        loader = train_loader(Split(data, [0] * n, ("a",)), batch, 0, 1, aug, 0, 0, torch.device("cpu"))
        assert len(loader) == steps, (n, batch)


def test_summarize_max_and_last():
    hist = [{"epoch": 0, "top1": 50.0, "top5": 90.0}, {"epoch": 1}, {"epoch": 2, "top1": 40.0, "top5": 95.0}]
    metrics, chosen = summarize(hist, "max")
    assert metrics == {"top1": 50.0, "top5": 90.0, "top1_max": 50.0, "top1_last": 40.0}
    assert chosen == {"best_epoch": 1, "last_epoch": 3}
    assert summarize(hist, "last")[0]["top1"] == 40.0


# ------------------------------------------------------------------------------------------------ resume
def _cli(args: list[str], env: dict) -> list[str]:
    return [sys.executable, "-m", "sslbench_entry", "eval", "finetune", *args]


def test_kill9_and_resume_is_bit_identical(shapes_root, femto_ckpt, tmp_path):
    from evaluate.protocols.finetune.run import run

    root = shapes_root / "classification"
    common = [str(femto_ckpt), "--data", str(root), "aug.input_size=32", "batch_size=8", "epochs=4", "num_workers=0",
              "threads=1", "progress=false", "optim.lr=5e-3", "optim.warmup_epochs=1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli([*common, "--out", str(killed)], env), env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        log = killed / "log.jsonl"
        if log.is_file() and '"kind": "epoch"' in log.read_text() and (killed / "checkpoint.pth").is_file():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    done = torch.load(killed / "checkpoint.pth", weights_only=True)["epoch"]
    assert 1 <= done < 4
    resumed = subprocess.run(
        _cli([*common, "--out", str(killed)], env), env=env, cwd=REPO, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = tmp_path / "reference"
    cfg = _cfg(root, femto_ckpt, reference, "epochs=4")
    metrics = run(cfg)
    a = torch.load(killed / "checkpoint.pth", weights_only=True)
    b = torch.load(reference / "checkpoint.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in b["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    assert [r.get("top1") for r in a["history"]] == [r.get("top1") for r in b["history"]]
    # records: top1 is the max over the evaluated epochs, top1_last the last one
    recs = [
        json.loads(line) for line in (Path(os.environ["SSLBENCH_RESULTS"]) / "records.jsonl").read_text().splitlines()
    ]
    ours = {r["metric"]: r for r in recs if r["protocol"] == "finetune"}
    tops = [r["top1"] for r in b["history"]]
    assert ours["top1"]["value"] == max(tops) == metrics["top1"] and ours["top1_last"]["value"] == tops[-1]
    assert ours["top1"]["dataset"] == "shapesworld" and ours["top1"]["split"] == "val"
    # the record fills BAM Table 3's fine-tune cell (ShapesWorld stands in for ImageNet)
    from evaluate.reporting.reference import load_reference
    from evaluate.reporting.results import query
    from evaluate.reporting.tables import regenerate

    table = next(t for p in load_reference().values() for t in p.tables if t.id == "bam.table3_finetune")
    view = regenerate(table, query())
    assert view.rows[-1][-1] == f"{max(tops):.1f}" and "finetune on shapesworld" in view.refs[0].text
    # the log feeds `sslbench plot curves`: a third (top-1) panel appears next to loss and lr
    from PIL import Image

    from evaluate.reporting.figures import plot_curves

    lines = (reference / "log.jsonl").read_text().splitlines()
    stripped = tmp_path / "no_top1" / "log.jsonl"
    stripped.parent.mkdir()
    stripped.write_text("\n".join(json.dumps({k: v for k, v in json.loads(x).items() if k not in ("top1", "top5")})
                                   for x in lines))  # fmt: skip
    wide = Image.open(plot_curves([reference / "log.jsonl"], tmp_path / "fig", name="a")[0]).size[0]
    narrow = Image.open(plot_curves([stripped], tmp_path / "fig", name="b")[0]).size[0]
    assert wide > narrow
    # a changed setting refuses to resume, naming the key; nothing is overwritten
    before = (reference / "checkpoint.pth").read_bytes()
    with pytest.raises(SSLBenchError, match="optim.lr"):
        run(_cfg(root, femto_ckpt, reference, "epochs=4", "optim.lr=1e-3"))
    assert (reference / "checkpoint.pth").read_bytes() == before


def test_mae_style_run_with_ema_evaluation_every_second_epoch(shapes_root, femto_ckpt, tmp_path):
    from evaluate.protocols.finetune.run import run

    cfg = _cfg(shapes_root / "classification", femto_ckpt, tmp_path / "mae", "model.pool=mean", "optim.layer_decay=0.75",
               "optim.sched_on=step", "optim.warmup_prefix=true", "eval_every=2", "ema.evaluate=true", "ema.decay=0.5")  # fmt: skip
    metrics = run(cfg)
    hist = torch.load(tmp_path / "mae" / "checkpoint.pth", weights_only=True)["history"]
    assert "top1" not in hist[0] and {"top1", "top5", "ema_top1", "ema_top5"} <= set(hist[1])
    assert metrics["top1"] == metrics["top1_last"] == hist[1]["top1"] and metrics["ema_top1_max"] == hist[1]["ema_top1"]
    model = torch.load(tmp_path / "mae" / "checkpoint.pth", weights_only=True)["model"]
    assert "fc_norm.weight" in model and "backbone.norm.weight" not in model  # MAE pooling: no final norm


# ------------------------------------------------------------------------------------------------ DDP
def _gloo_worker(rank: int, world: int, init_file: str, root: str, ckpt: str, out: str, extra: list) -> None:
    import torch.distributed as dist

    from evaluate.protocols.finetune.run import run

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        run(_cfg(Path(root), Path(ckpt), Path(out), *extra))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one(shapes_root, femto_ckpt, tmp_path):
    import torch.multiprocessing as mp

    from evaluate.protocols.finetune.run import run

    root = shapes_root / "classification"
    extra = [*PLAIN, "epochs=1", "ema.enabled=false", "optim.warmup_epochs=0"]
    args = (2, str(tmp_path / "rdv"), str(root), str(femto_ckpt), str(tmp_path / "two"), extra)
    mp.spawn(_gloo_worker, args=args, nprocs=2, join=True)
    run(_cfg(root, femto_ckpt, tmp_path / "one", *extra))
    two = torch.load(tmp_path / "two" / "checkpoint.pth", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoint.pth", weights_only=True)
    pretrained = torch.load(femto_ckpt, weights_only=True)["state_dict"]
    moved = 0.0
    for key, value in one["model"].items():
        # atol: the key part of qkv.bias has a zero gradient up to rounding, which Adam scales up to ~lr per step
        assert torch.allclose(two["model"][key], value, atol=5e-6, rtol=1e-5), key
        if key.startswith("backbone."):
            moved = max(moved, float((value - pretrained[key.removeprefix("backbone.")]).abs().max()))
    assert moved > 5e-4  # training moved the backbone by far more than the tolerance: the comparison is not vacuous
    assert two["history"][0]["top1"] == one["history"][0]["top1"]


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_bad_inputs_exit_2_before_work(shapes_root, femto_ckpt, tmp_path, capsys):
    from evaluate.cli import main

    root = str(shapes_root / "classification")
    assert main(["eval", "finetune", str(femto_ckpt), "--recipe", "nosuch", "--data", root]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nosuch" in err[0] and "deit_bam" in err[0]
    out = tmp_path / "o"
    assert main(["eval", "finetune", str(femto_ckpt), "--recipe", "ibot_semisup_1pct_proj_layer", "--data", root,
                 "--out", str(out), "data.subset=null", "data.name=shapesworld", "aug.input_size=32"]) == 2  # fmt: skip
    assert "stores no projection head" in capsys.readouterr().err
    assert not (out / "checkpoint.pth").exists()
    assert main(["eval", "finetune", str(femto_ckpt), "--data", root, "batch_size=100000", "aug.input_size=32"]) == 2
    assert "batch_size=100000" in capsys.readouterr().err
    # a recipe's real dataset name on a ShapesWorld tree would file the number under that dataset: refused
    assert main(["eval", "finetune", str(femto_ckpt), "--recipe", "ibot_transfer_cifar10", "--data", root]) == 2
    assert "is a ShapesWorld tree" in capsys.readouterr().err


def test_transfer_recipes_on_official_layouts_from_the_cli(femto_ckpt, tmp_path, capsys):
    """The registry's readers (issue 15) feed fine-tuning: Flowers (.mat, train = trnid + valid) and CIFAR pickles."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from official_layouts import write_cifar10, write_flowers

    from evaluate.cli import main
    from evaluate.reporting.records import read_records

    flowers, cifar = write_flowers(tmp_path / "f"), write_cifar10(tmp_path / "c")
    small = [
        "epochs=1",
        "batch_size=2",
        "aug.input_size=32",
        "num_workers=0",
        "progress=false",
        "data.check_counts=false",
    ]
    for recipe, data in (
        ("ibot_transfer_flowers", f"flowers:{flowers}"),
        ("ibot_transfer_cifar10", f"cifar10:{cifar}"),
    ):
        out = tmp_path / recipe
        assert (
            main(["eval", "finetune", str(femto_ckpt), "--recipe", recipe, "--data", data, "--out", str(out), *small])
            == 0
        )
    assert "finetune cifar10: top1=" in capsys.readouterr().out
    recs = {(r["dataset"], r["split"], r["metric"]): r for r in read_records(os.environ["SSLBENCH_RESULTS"])}
    flowers_top1 = recs[("flowers", "test", "top1")]
    assert flowers_top1["settings"]["train_split"] == "trainval" and flowers_top1["settings"]["n_train"] == 6
    assert flowers_top1["settings"]["recipe"] == "ibot_transfer_flowers"
    assert recs[("cifar10", "test", "top1")]["settings"]["n_train"] == 10


def test_every_recipe_loads_and_names_its_source():
    from evaluate.protocols.finetune.run import recipe_names, resolve_recipe

    names = recipe_names()
    assert {"deit_bam", "mae_vitb", "mae_vits", "adclr_beit_vitb", "ibot_semisup_1pct_proj_layer",
            "ibot_transfer_cifar10", "ibot_transfer_inat18"} <= set(names)  # fmt: skip
    for name in names:
        cfg = load_config(FinetuneConfig, resolve_recipe(name))
        assert cfg.recipe == name and cfg.source and cfg.epochs >= 100
    cars = load_config(FinetuneConfig, resolve_recipe("ibot_transfer_cars"))
    assert cars.optim.lr * cars.batch_size / cars.optim.lr_batch_ref == pytest.approx(1.125e-4)
    mae = load_config(FinetuneConfig, resolve_recipe("mae_vitb"))
    assert mae.optim.lr * mae.batch_size / mae.optim.lr_batch_ref == pytest.approx(2e-3)
