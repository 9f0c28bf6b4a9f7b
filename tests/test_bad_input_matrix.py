"""Issue 17: the bad-input matrix. Every malformed input to every command gives exit status 2, exactly one line on
stderr (naming the file/key/value), no traceback, and leaves every pre-existing file untouched.

Cases run in-process through ``evaluate.cli.main`` (a few also as real subprocesses, for the traceback check of a
fresh interpreter). ``W`` is a workspace with good inputs: a tiny checkpoint, a ShapesWorld copy, a results store with
one record, a feature cache entry, an output directory holding a previous result, a pretraining config.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluate.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def W(tmp_path_factory, shapes_root):
    from test_checkpoints import random_backbone

    from pretrain.vit import build_vit, export_backbone

    root = tmp_path_factory.mktemp("matrix")
    shutil.copytree(shapes_root / "classification", root / "data")
    shutil.copytree(shapes_root / "davis", root / "davis")
    torch.manual_seed(0)
    torch.save(export_backbone(build_vit("vit_femto")), root / "good.pth")
    (root / "text.pth").write_text("hello, I am not a checkpoint\n")
    (root / "empty.pth").write_bytes(b"")
    (root / "truncated.pth").write_bytes((root / "good.pth").read_bytes()[:300])
    state = random_backbone(0)
    state["blocks.0.attn.qkv.weight"][0, 0] = float("nan")
    torch.save({"model": state | {"head.weight": torch.zeros(2, 32), "head.bias": torch.zeros(2)}}, root / "nan.pth")
    (root / "blocker").write_text("a file where a directory is expected\n")
    (root / "bad.yaml").write_text("features: [1\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "trust.yaml").write_text("backbone:\n  trust_pickle: true\n")
    (root / "unknown.yaml").write_text("features:\n  batch_sise: 8\n")
    (root / "store").mkdir()
    (root / "store" / "records.jsonl").write_text(json.dumps({"protocol": "knn", "metric": "top1", "value": 1}) + "\n")
    (root / "cache" / "features").mkdir(parents=True)
    (root / "cache" / "features" / "entry.pt").write_bytes(b"cached")
    (root / "prev").mkdir()
    (root / "prev" / "metrics.json").write_text('{"metrics": {"top1": 50.0}}\n')
    (root / "pretrain.yaml").write_text("method: bam\nmodel:\n  arch: vit_femto\n")
    (root / "log.jsonl").write_text('{"kind": "meta"}\n')
    (root / "keep.csv").write_text("an earlier export\n")
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "img.png")
    (root / "inet" / "train").mkdir(parents=True)  # ImageNet with empty train/ and val/
    (root / "inet" / "val").mkdir()
    (root / "ptrun").mkdir()  # a finished pretraining run: a new run without --resume must not replace it
    (root / "ptrun" / "checkpoint.pth").write_bytes(b"a previous run's checkpoint")
    (root / "ptrun" / "log.jsonl").write_text('{"kind": "meta"}\n')
    return root


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
        elif path.is_dir():
            out[str(path.relative_to(root)) + "/"] = ("dir", 0)
    return out


def _cases() -> list[tuple[str, list[str], str]]:
    """(id, argv with {W} placeholders, a fragment the one error line must contain)."""
    knn = ["eval", "knn", "{W}/good.pth", "--data", "{W}/data"]
    lin = ["eval", "linear", "{W}/good.pth", "--data", "{W}/data"]
    lr = ["eval", "logreg", "{W}/good.pth", "--data", "{W}/data"]
    cl = ["eval", "cluster", "{W}/good.pth", "--data", "{W}/data"]
    rel = ["eval", "sere-relation", "{W}/good.pth", "--data", "{W}/data"]
    dv = ["eval", "davis", "--checkpoint", "{W}/good.pth", "--davis-root", "{W}/davis", "--out", "{W}/dv"]
    pt = ["pretrain", "--config", "{W}/pretrain.yaml", "--out", "{W}/pt"]
    ft = ["eval", "finetune", "{W}/good.pth", "--data", "{W}/data", "--out", "{W}/ft"]
    return [
        # ---- found by the 2026-11-29 CLI audit: binary configs and logs, devices, unchecked values, overwrites
        ("knn-config-binary", [*knn, "--config", "{W}/good.pth"], "not a text file"),
        ("knn-config-dir", [*knn, "--config", "{W}/prev"], "is a directory"),
        ("knn-out-holds-a-result", [*knn, "--out", "{W}/prev"], "--force"),
        ("linear-out-holds-a-result", [*lin, "--out", "{W}/prev"], "--force"),
        ("cluster-out-holds-a-result", [*cl, "--out", "{W}/prev"], "--force"),
        ("knn-device-name", [*knn, "features.device=foo"], "features.device='foo'"),
        ("knn-device-absent", [*knn, "features.device=cuda:99"], "features.device=cuda:99"),
        ("pretrain-config-binary", ["pretrain", "--config", "{W}/good.pth"], "not a text file"),
        ("pretrain-device-name", [*pt, "train.device=foo"], "train.device='foo'"),
        ("pretrain-ema-momentum", [*pt, "ema.momentum=2"], "ema.momentum=2"),
        ("pretrain-bam-tau", [*pt, "bam.tau=-1"], "bam.tau=-1"),
        ("pretrain-bam-topk", [*pt, "bam.top_k=-1"], "bam.top_k=-1"),
        ("pretrain-over-a-run", ["pretrain", "--config", "{W}/pretrain.yaml", "--out", "{W}/ptrun"], "--resume"),
        ("finetune-batch-0", [*ft, "batch_size=0"], "batch_size=0"),
        ("finetune-ema-decay", [*ft, "ema.decay=2"], "ema.decay=2"),
        ("finetune-layer-decay", [*ft, "optim.layer_decay=-1"], "optim.layer_decay=-1"),
        ("finetune-warmup", [*ft, "optim.warmup_epochs=-1"], "optim.warmup_epochs=-1"),
        ("finetune-threads", [*ft, "threads=-1"], "threads=-1"),
        ("finetune-input-size", [*ft, "aug.input_size=0"], "aug.input_size=0"),
        ("finetune-device", [*ft, "device=foo"], "device='foo'"),
        ("finetune-recipe-binary", [*ft, "--recipe", "{W}/good.pth"], "not a text file"),
        ("plot-curves-binary", ["plot", "curves", "--log", "{W}/good.pth", "--out", "{W}/fig"], "not a text file"),
        ("convert-in-place", ["ckpt", "convert", "{W}/good.pth", "--to", "timm", "{W}/good.pth"], "source checkpoint"),
        ("convert-to-dir", ["ckpt", "convert", "{W}/good.pth", "--to", "timm", "{W}/prev"], "is a directory"),
        ("init-safetensors", ["ckpt", "init", "--arch", "vit_femto", "{W}/x.safetensors"], ".pth"),
        ("init-empty-path", ["ckpt", "init", "--arch", "vit_femto", ""], "path is empty"),
        ("convert-over-a-file", ["ckpt", "convert", "{W}/good.pth", "--to", "timm", "{W}/truncated.pth"], "--force"),
        ("init-over-a-file", ["ckpt", "init", "--arch", "vit_femto", "{W}/truncated.pth"], "--force"),
        ("pretrain-plugin-missing", [*pt, "--plugin", "{W}/noplugins"], "--plugin"),
        ("shapes-no-parts", ["data", "shapes", "--out", "{W}/sw", "--parts", ""], "--parts"),
        ("check-imagenet-empty", ["data", "check", "imagenet:{W}/inet"], "no class folders"),
        ("demo-seed", ["demo", "--quick", "--out", "{W}/demo", "--report", "{W}/demorep", "--seed", "-1"], "--seed -1"),
        ("demo-report-unwritable", ["demo", "--quick", "--out", "{W}/demo", "--report", "{W}/blocker/r"], "--report"),
        (
            "full-pretrain-log-missing",
            ["eval", "full", "{W}/good.pth", "--suite", "frozen", "--data-root", "{W}", "--dry-run"]
            + ["--pretrain-log", "{W}/nolog.jsonl"],
            "--pretrain-log",
        ),
        (
            "export-nothing-keeps-file",
            ["results", "export", "--store", "{W}/store", "--protocol", "nosuch", "{W}/keep.csv"],
            "not written",
        ),
        ("cluster-no-possible-C", [*cl, "num_classes=[50]", "features.crop=32"], "no C can be clustered"),
        (
            "attention-image-size",
            ["plot", "attention", "--checkpoint", "{W}/good.pth", "--image", "{W}/img.png", "--image-size", "0"],
            "--image-size 0",
        ),
        ("results-ls-no-store", ["results", "ls", "--store", "{W}/nostore"], "--store"),
        ("inspect-img-size-huge", ["ckpt", "inspect", "{W}/good.pth", "--img-size", "80000"], "img_size=80000"),
        # ---- checkpoints
        ("knn-no-checkpoint", ["eval", "knn", "--data", "{W}/data"], "no checkpoint given"),
        ("knn-missing-checkpoint", ["eval", "knn", "{W}/nope.pth", "--data", "{W}/data"], "nope.pth"),
        ("knn-text-checkpoint", ["eval", "knn", "{W}/text.pth", "--data", "{W}/data"], "not a PyTorch checkpoint"),
        ("knn-empty-checkpoint", ["eval", "knn", "{W}/empty.pth", "--data", "{W}/data"], "empty file"),
        ("knn-truncated", ["eval", "knn", "{W}/truncated.pth", "--data", "{W}/data"], "truncated.pth"),
        ("knn-nan-weights", ["eval", "knn", "{W}/nan.pth", "--data", "{W}/data"], "non-finite"),
        ("knn-two-checkpoints", [*knn, "{W}/nan.pth"], "one checkpoint expected"),
        ("knn-heads-0", [*knn, "backbone.num_heads=0"], "backbone.num_heads=0"),
        ("knn-heads-3", [*knn, "backbone.num_heads=3"], "num_heads=3"),
        ("knn-which", [*knn, "backbone.which=middle"], "backbone.which"),
        ("knn-format", [*knn, "backbone.format=nosuch"], "nosuch"),
        ("knn-img-size", [*knn, "backbone.img_size=33"], "img_size=33"),
        # ---- data
        ("knn-missing-data", ["eval", "knn", "{W}/good.pth", "--data", "{W}/nodata"], "nodata"),
        ("knn-data-is-file", ["eval", "knn", "{W}/good.pth", "--data", "{W}/blocker"], "blocker"),
        ("knn-no-data", ["eval", "knn", "{W}/good.pth"], "data.root"),
        ("knn-bad-split", [*knn, "data.test=nosplit"], "nosplit"),
        ("knn-bad-subset", [*knn, "data.subset=nosuch"], "nosuch"),
        # ---- config values
        ("knn-ks-0", [*knn, "ks=[0]"], "ks=[0]"),
        ("knn-ks-empty", [*knn, "ks=[]"], "ks=[]"),
        ("knn-ks-type", [*knn, "ks=abc"], "ks"),
        ("knn-T-neg", [*knn, "T=-1"], "T=-1"),
        ("knn-batch-0", [*knn, "features.batch_size=0"], "features.batch_size=0"),
        ("knn-workers-neg", [*knn, "features.num_workers=-1"], "features.num_workers=-1"),
        ("knn-taps", [*knn, "features.taps=foo"], "features.taps"),
        ("knn-n-last-0", [*knn, "features.n_last=0"], "features.n_last=0"),
        ("knn-crop-neg", [*knn, "features.crop=-8"], "features.crop=-8"),
        ("knn-unknown-key", [*knn, "foo=1"], "foo: unknown key"),
        ("knn-unknown-nested", [*knn, "features.foo=1"], "features.foo: unknown key"),
        ("knn-override-syntax", [*knn, "features.=3"], "empty key"),
        ("knn-config-missing", [*knn, "--config", "{W}/nope.yaml"], "config file not found"),
        ("knn-config-invalid", [*knn, "--config", "{W}/bad.yaml"], "invalid YAML"),
        ("knn-config-list", [*knn, "--config", "{W}/list.yaml"], "expected a mapping"),
        ("knn-config-trust", [*knn, "--config", "{W}/trust.yaml"], "trust_pickle: can only be given"),
        ("knn-config-unknown", [*knn, "--config", "{W}/unknown.yaml"], "features.batch_sise"),
        # ---- outputs
        ("knn-out-unwritable", [*knn, "--out", "{W}/blocker/out"], "not writable"),
        ("knn-out-key-unwritable", [*knn, "out={W}/blocker/x"], "not writable"),
        # ---- linear / logreg / cluster
        ("linear-lr-neg", [*lin, "lr=-1"], "lr=-1"),
        ("linear-epochs-0", [*lin, "epochs=0"], "epochs=0"),
        ("linear-heldout", [*lin, "heldout_fraction=1.5"], "heldout_fraction=1.5"),
        ("linear-batch-0", [*lin, "batch_size=0"], "batch_size=0"),
        ("linear-mode", [*lin, "mode=fast"], "mode"),
        ("linear-lrs-empty", [*lin, "variant=grid", "lrs=[]"], "lrs=[]"),
        ("linear-momentum", [*lin, "momentum=1.5"], "momentum=1.5"),
        ("logreg-lambdas-0", [*lr, "num_lambdas=0"], "num_lambdas=0"),
        ("logreg-val-fraction", [*lr, "val_fraction=0"], "val_fraction=0"),
        ("logreg-lambda-order", [*lr, "lambda_max=1e-9"], "lambda_max"),
        ("logreg-selection-val", [*lr, "selection=val"], "selection=val"),
        ("logreg-selection-subset", [*lr, "selection=outside_subset"], "needs data.subset"),
        ("logreg-metric", [*lr, "metric=f1"], "metric"),
        ("logreg-tiny-heldout", [*lr, "data.subset=1percent", "selection=heldout"], "no image of"),
        ("cluster-instances-0", [*cl, "instances=0"], "instances=0"),
        ("cluster-classes-1", [*cl, "num_classes=[1]"], "num_classes=[1]"),
        ("cluster-n-init-0", [*cl, "n_init=0"], "n_init=0"),
        ("sere-relation-grid-1", [*rel, "grid=1"], "grid=1"),
        ("sere-relation-scale", [*rel, "scale=[0.9, 0.2]"], "scale"),
        ("sere-relation-tokens", [*rel, "tokens=cls"], "tokens"),
        ("sere-relation-missing-data", ["eval", "sere-relation", "{W}/good.pth", "--data", "{W}/nodata"], "nodata"),
        # ---- davis
        ("davis-no-checkpoint", ["eval", "davis", "--davis-root", "{W}/davis"], "checkpoint"),
        ("davis-missing-root", [*dv[:4], "--davis-root", "{W}/nodavis"], "nodavis"),
        ("davis-topk-0", [*dv, "--set", "topk=[0]"], "topk"),
        ("davis-n-last-type", [*dv, "--n-last-frames", "abc"], "--n-last-frames"),
        ("davis-split", [*dv, "--split", "nosplit"], "nosplit"),
        ("davis-sequence", [*dv, "--sequences", "nosuchseq"], "nosuchseq"),
        ("davis-out-unwritable", [*dv[:-1], "{W}/blocker/dv"], "not writable"),
        (
            "davis-score-missing",
            ["eval", "davis-score", "--davis-root", "{W}/davis", "--results", "{W}/nores"],
            "nores",
        ),
        # ---- ckpt
        ("inspect-missing", ["ckpt", "inspect", "{W}/nope.pth"], "nope.pth"),
        ("inspect-text", ["ckpt", "inspect", "{W}/text.pth"], "not a PyTorch checkpoint"),
        ("inspect-heads", ["ckpt", "inspect", "{W}/good.pth", "--num-heads", "3"], "num_heads=3"),
        ("inspect-img-size", ["ckpt", "inspect", "{W}/good.pth", "--img-size", "30"], "img_size=30"),
        (
            "convert-unwritable",
            ["ckpt", "convert", "{W}/good.pth", "--to", "timm", "{W}/blocker/x.pth"],
            "not writable",
        ),
        ("convert-mm-safetensors", ["ckpt", "convert", "{W}/good.pth", "--to", "mmdet", "{W}/x.safetensors"], ".pth"),
        ("convert-target", ["ckpt", "convert", "{W}/good.pth", "--to", "onnx", "{W}/x.pth"], "--to"),
        ("init-arch", ["ckpt", "init", "--arch", "vit_nosuch", "{W}/x.pth"], "--arch"),
        ("init-seed", ["ckpt", "init", "--arch", "vit_femto", "--seed", "-1", "{W}/x.pth"], "--seed -1"),
        ("init-unwritable", ["ckpt", "init", "--arch", "vit_femto", "{W}/blocker/x.pth"], "not writable"),
        # ---- results / tables / plots
        ("results-show-unknown", ["results", "show", "nosuchrun", "--store", "{W}/store"], "nosuchrun"),
        ("results-export-unwritable", ["results", "export", "--store", "{W}/store", "{W}/blocker/x.csv"], "writable"),
        ("tables-unwritable", ["tables", "--store", "{W}/store", "--out", "{W}/blocker/t"], "not writable"),
        ("tables-paper", ["tables", "--paper", "nosuch"], "--paper"),
        ("plot-curves-missing", ["plot", "curves", "--log", "{W}/nolog.jsonl", "--out", "{W}/fig"], "nolog"),
        (
            "plot-entropy-unwritable",
            ["plot", "entropy", "--log", "{W}/log.jsonl", "--out", "{W}/blocker/f"],
            "writable",
        ),
        ("plot-attention-missing", ["plot", "attention", "--checkpoint", "{W}/nope.pth", "--image", "x.png"], "nope"),
        # ---- data / pretrain / top level
        ("shapes-seed", ["data", "shapes", "--out", "{W}/sw", "--seed", "-1"], "--seed -1"),
        ("shapes-size", ["data", "shapes", "--out", "{W}/sw", "--size", "huge"], "--size"),
        ("shapes-image-size", ["data", "shapes", "--out", "{W}/sw", "--image-size", "4"], "--image-size 4"),
        ("shapes-unwritable", ["data", "shapes", "--out", "{W}/blocker/sw"], "not writable"),
        ("shapes-workers", ["data", "shapes", "--out", "{W}/sw", "--workers", "0"], "--workers 0"),
        ("pretrain-missing-config", ["pretrain", "--config", "{W}/nope.yaml"], "config file not found"),
        ("pretrain-lr-neg", [*pt, "optim.lr=-1"], "optim.lr=-1"),
        ("pretrain-sere-weights", [*pt, "method=sere", "sere.alpha=3", "sere.beta=2"], "alpha + beta = 5"),
        ("pretrain-sere-grid", [*pt, "method=sere", "sere.global_grid=1"], "sere.global_grid=1"),
        ("pretrain-sere-base", [*pt, "method=sere", "sere.base=moco"], "sere.base"),
        ("pretrain-global-size-0", [*pt, "data.global_size=0"], "data.global_size=0"),
        ("pretrain-global-scale", [*pt, "data.global_scale=[1.0, 0.4]"], "data.global_scale"),
        ("pretrain-epochs-0", [*pt, "train.epochs=0"], "train.epochs=0"),
        ("pretrain-blur", [*pt, "data.blur_p=[1.0, 2.0, 0.5]"], "data.blur_p"),
        ("pretrain-unknown", [*pt, "optim.lrr=1"], "optim.lrr"),
        ("unknown-command", ["nosuch"], "invalid choice"),
        ("unknown-eval", ["eval", "nosuch"], "invalid choice"),
        ("unknown-flag", ["eval", "knn", "--nosuch"], "--nosuch"),
    ]


CASES = _cases()


def _fill(argv: list[str], root: Path) -> list[str]:
    return [a.replace("{W}", str(root)) for a in argv]


@pytest.mark.parametrize(("argv", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(W, argv, fragment, capsys, monkeypatch):
    monkeypatch.setenv("SSLBENCH_RESULTS", str(W / "store"))
    monkeypatch.setenv("SSLBENCH_CACHE", str(W / "cache"))
    monkeypatch.chdir(W)
    before = snapshot(W)
    code = main(_fill(argv, W))
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert fragment in lines[0], lines[0]
    assert snapshot(W) == before


def test_the_matrix_is_large_and_covers_every_command():
    assert len(CASES) >= 60
    commands = {" ".join(a for a in argv[:2] if not a.startswith(("{", "-"))) for _, argv, _ in CASES}
    for needed in (
        "eval knn",
        "eval linear",
        "eval logreg",
        "eval cluster",
        "eval davis",
        "ckpt inspect",
        "ckpt convert",
        "ckpt init",
        "results show",
        "tables",
        "plot curves",
        "data shapes",
        "pretrain",
    ):
        assert any(c.startswith(needed) for c in commands), needed


@pytest.mark.slow
@pytest.mark.parametrize("case", ["knn-text-checkpoint", "knn-ks-0", "pretrain-global-scale", "shapes-seed"])
def test_in_a_fresh_interpreter_there_is_no_traceback(W, case, tmp_path):
    argv = _fill(next(c[1] for c in CASES if c[0] == case), W)
    env = dict(os.environ, PYTHONPATH=str(REPO), SSLBENCH_RESULTS=str(W / "store"), SSLBENCH_CACHE=str(W / "cache"))
    before = snapshot(W)
    proc = subprocess.run(
        [sys.executable, "-m", "sslbench_entry", *argv], capture_output=True, text=True, env=env, cwd=W, timeout=300
    )
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert snapshot(W) == before
