"""Figures: mass threshold (golden and DINO-equivalence), CLS attention maps, entropy/curve/attention plots."""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pytest
import torch

from evaluate.cli import main
from evaluate.reporting.figures import (
    cls_attention,
    image_array,
    mass_threshold,
    plot_attention,
    plot_curves,
    plot_entropy,
    preprocess,
    read_log,
)
from pretrain.vit import build_vit, export_backbone
from sslcore.errors import SSLBenchError


# ----------------------------------------------------------------------------------------------- threshold
def test_mass_threshold_golden():
    attn = torch.tensor([0.5, 0.3, 0.1, 0.1])
    assert mass_threshold(attn, 0.6).tolist() == [True, True, False, False]  # 0.5 < 0.6 <= 0.8
    assert mass_threshold(attn, 0.5).tolist() == [True, False, False, False]  # 0.5 already holds 0.5
    assert mass_threshold(attn, 0.8).tolist() == [True, True, False, False]
    assert mass_threshold(attn, 1.0).tolist() == [True, True, True, True]
    # order-independent, scale-independent, batched over leading dims
    assert mass_threshold(torch.tensor([[1.0, 5.0, 1.0, 3.0]]), 0.6).tolist() == [[False, True, False, True]]
    with pytest.raises(SSLBenchError, match="threshold"):
        mass_threshold(attn, 0.0)


def dino_threshold(attn: torch.Tensor, threshold: float) -> torch.Tensor:
    """DINO visualize_attention.py's rule, re-typed: sort ascending, normalise, keep cumsum > 1 - threshold."""
    val, idx = torch.sort(attn)
    val = val / torch.sum(val, dim=1, keepdim=True)
    cumval = torch.cumsum(val, dim=1)
    th_attn = cumval > (1 - threshold)
    idx2 = torch.argsort(idx)
    for head in range(attn.shape[0]):
        th_attn[head] = th_attn[head][idx2[head]]
    return th_attn


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_mass_threshold_matches_dino(fraction):
    generator = torch.Generator().manual_seed(0)
    attn = torch.rand(6, 49, generator=generator, dtype=torch.float64).softmax(-1)
    assert torch.equal(mass_threshold(attn, fraction), dino_threshold(attn, fraction))
    kept = (attn * mass_threshold(attn, fraction)).sum(-1) / attn.sum(-1)
    assert (kept >= fraction).all()


# ----------------------------------------------------------------------------------------------- attention
def test_cls_attention_shape_and_mass():
    torch.manual_seed(0)
    model = build_vit("vit_femto").eval()
    x = torch.randn(1, 3, 48, 40)
    maps = cls_attention(model, x)
    assert maps.shape == (2, 6, 5)
    full = model.forward_tokens(x, attn=True).attn[0, :, 0]  # (heads, 1 + N)
    assert torch.allclose(maps.flatten(1).sum(-1) + full[:, 0], torch.ones(2), atol=1e-5)  # not renormalised


def test_preprocess_crops_to_patch_grid():
    image = np.full((30, 50, 3), 255, np.uint8)
    x, shown = preprocess(image, 36, 8)
    assert x.shape == (1, 3, 32, 32) and shown.shape == (32, 32, 3)
    assert torch.allclose(x[0, 0], torch.full((32, 32), (1 - 0.485) / 0.229), atol=1e-5)
    with pytest.raises(SSLBenchError, match="--image-size 4: must be at least the patch size"):
        preprocess(image, 4, 8)  # (it used to be widened silently to one patch)


def test_plot_attention_differs_between_models_and_images(tmp_path):
    torch.manual_seed(0)
    a = build_vit("vit_femto")
    torch.manual_seed(1)
    b = build_vit("vit_femto")
    paths_a = plot_attention(a, "sklearn:china.jpg", tmp_path, image_size=64, name="a")
    paths_b = plot_attention(b, "sklearn:china.jpg", tmp_path, image_size=64, name="b")
    paths_c = plot_attention(types.SimpleNamespace(model=a), "sklearn:flower.jpg", tmp_path, image_size=64, name="c")
    assert [p.name for p in paths_a] == ["a.png", "a.pdf"] and all(p.stat().st_size > 1000 for p in paths_a)
    img_a, img_b, img_c = (image_array(p[0]) for p in (paths_a, paths_b, paths_c))
    assert img_a.std() > 0.01
    assert img_a.shape == img_b.shape and not np.array_equal(img_a, img_b)
    assert not np.array_equal(img_a, img_c)


# --------------------------------------------------------------------------------------------------- logs
def write_log(path, slope, knn=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"kind": "meta", "git": "abc", "config": {}}]
    for step in range(40):
        lines.append(
            {
                "kind": "step",
                "step": step,
                "epoch": step / 10,
                "loss": 4 * math.exp(-slope * step / 40),
                "lr": 1e-3 * min(1.0, step / 10),
                "diag/source_entropy": 5.0 - slope * step / 40,
                "diag/target_entropy": 4.0 - slope * step / 80,
            }
        )
        if step % 10 == 9:
            lines.append(
                {"kind": "epoch", "epoch": step // 10, "loss": 1.0, **({"knn_top1": slope * step} if knn else {})}
            )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_entropy_plot_depends_on_the_log(tmp_path):
    a = write_log(tmp_path / "runs" / "a" / "log.jsonl", 1.0)
    b = write_log(tmp_path / "runs" / "b" / "log.jsonl", 2.0)
    one = plot_entropy([a], tmp_path / "fig", name="one")
    two = plot_entropy([b], tmp_path / "fig", name="two")
    both = plot_entropy([a, b], tmp_path / "fig", name="both")
    assert all(p.stat().st_size > 1000 for p in one + two + both)
    arr_one, arr_two = image_array(one[0]), image_array(two[0])
    assert arr_one.shape == arr_two.shape and not np.array_equal(arr_one, arr_two)
    assert not np.array_equal(arr_one, image_array(both[0]))


def test_entropy_plot_errors(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"kind": "step", "step": 0, "loss": 1.0}) + "\n")
    with pytest.raises(SSLBenchError, match="diag/source_entropy"):
        plot_entropy([log], tmp_path)
    log.write_text('{"kind": "meta"}\nnot json\n')
    with pytest.raises(SSLBenchError, match="log.jsonl:2"):
        plot_entropy([log], tmp_path)
    with pytest.raises(SSLBenchError, match="not found"):
        plot_entropy([tmp_path / "missing.jsonl"], tmp_path)


def test_curves_plot(tmp_path):
    a = write_log(tmp_path / "a" / "log.jsonl", 1.0)
    b = write_log(tmp_path / "b" / "log.jsonl", 3.0, knn=False)
    with_knn = plot_curves([a], tmp_path / "fig", name="a")
    without = plot_curves([b], tmp_path / "fig", name="b")
    arr_a, arr_b = image_array(with_knn[0]), image_array(without[0])
    assert arr_a.shape[1] > arr_b.shape[1]  # a third (k-NN) panel only when logged
    assert arr_b.std() > 0.01


def test_cli_plots(tmp_path, capsys):
    log = write_log(tmp_path / "run" / "log.jsonl", 1.0)
    out = tmp_path / "figs"
    assert main(["plot", "entropy", "--log", str(log), "--out", str(out)]) == 0
    assert main(["plot", "curves", "--log", str(log), "--out", str(out), "--name", "c"]) == 0
    assert {p.name for p in out.iterdir()} == {"entropy.png", "entropy.pdf", "c.png", "c.pdf"}
    assert main(["plot", "entropy", "--log", str(log), "--label", "x", "--label", "y", "--out", str(out)]) == 2
    torch.manual_seed(0)
    ckpt = tmp_path / "femto.pth"
    torch.save(export_backbone(build_vit("vit_femto")), ckpt)
    args = ["plot", "attention", "--checkpoint", str(ckpt), "--image", "sklearn:china.jpg", "--image-size", "48"]
    assert main([*args, "--out", str(out)]) == 0
    assert (out / "attention_femto_china.png").stat().st_size > 1000
    assert main(["plot", "attention", "--checkpoint", str(ckpt), "--image", str(tmp_path / "no.png")]) == 2


def test_read_log_resumed_run_keeps_later_lines(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = [
        {"kind": "meta", "git": "abc"},
        {"kind": "step", "step": 0, "epoch": 0.0, "loss": 3.0},
        {"kind": "step", "step": 1, "epoch": 0.5, "loss": 2.0},
        {"kind": "step", "step": 1, "epoch": 0.5, "loss": 2.5},  # re-logged after a resume
        {"kind": "epoch", "epoch": 0, "loss": 2.4, "knn_top1": 30.0},
    ]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    meta, steps, epochs = read_log(log)
    assert meta["git"] == "abc"
    assert steps["loss"].tolist() == [3.0, 2.5]
    assert epochs["knn_top1"].tolist() == [30.0]
