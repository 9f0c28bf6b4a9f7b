"""``sslbench plot queries``: CLS and query-crop attention (ADCLR Fig. 1 right) for sslbench and PQCL checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_checkpoints import random_backbone, write_adclr
from test_engine import METHOD_OVERRIDES, toy_cfg

from evaluate.cli import main as cli_main
from evaluate.reporting.figures import cls_attention, image_array, plot_queries, query_attention
from pretrain.engine import Trainer
from pretrain.vit import build_vit


def test_query_attention_maps():
    torch.manual_seed(0)
    model = build_vit("vit_femto").eval()
    x = torch.randn(1, 3, 32, 32)
    crops = torch.randn(3, 3, 8, 8)
    cls, q = query_attention(model, x, crops)
    assert cls.shape == (2, 4, 4) and q.shape == (3, 2, 4, 4)
    torch.testing.assert_close(cls, cls_attention(model, x), rtol=0, atol=1e-6)  # queries never reach CLS
    assert (q.sum((-1, -2)) < 1).all() and (q >= 0).all()  # the rest of the mass: CLS and the query itself
    moved = crops.clone()
    moved[0] = torch.randn(3, 8, 8)
    _, q2 = query_attention(model, x, moved)
    assert not torch.allclose(q2[0], q[0], atol=1e-5) and torch.equal(q2[1:], q[1:])
    _, q_all = query_attention(model, x, moved, rule="all")
    assert not torch.allclose(q_all[1], q[1], atol=1e-6)  # under PQCL's rule the others move too


def test_plot_queries_draws_cls_and_every_query(tmp_path):
    torch.manual_seed(0)
    model = build_vit("vit_femto")
    paths = plot_queries(model, "sklearn:china.jpg", tmp_path, num_queries=5, image_size=64, name="a")
    assert [p.name for p in paths] == ["a.png", "a.pdf"] and paths[0].stat().st_size > 1000
    other = plot_queries(model, "sklearn:china.jpg", tmp_path, num_queries=5, image_size=64, seed=1, name="b")
    assert not np.array_equal(image_array(paths[0]), image_array(other[0]))  # other crops, other boxes and maps


@pytest.mark.parametrize("layout", ["sslbench", "pqcl"])
def test_cli_on_an_exported_adclr_backbone_and_a_pqcl_checkpoint(tmp_path, layout, capsys):
    if layout == "sslbench":
        trainer = Trainer(toy_cfg(tmp_path, **METHOD_OVERRIDES["adclr"]), iters_per_epoch=2)
        ckpt = trainer.export()
    else:
        ckpt = tmp_path / "checkpoint.pth"
        write_adclr(ckpt, random_backbone(0), random_backbone(1))
    out = tmp_path / "fig"
    args = ["plot", "queries", str(ckpt), "--image", "sklearn:flower.jpg", "--image-size", "64", "--out", str(out)]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2 and all(p.endswith((".png", ".pdf")) for p in printed)
    assert (out / f"queries_{ckpt.stem}_flower.png").stat().st_size > 1000
    assert cli_main([*args, "--attention", "all", "--name", "all"]) == 0


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli_main(["plot", "queries", str(tmp_path / "missing.pth"), "--image", "sklearn:china.jpg"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert cli_main(["plot", "queries", "--image", "sklearn:china.jpg"]) == 2
    assert cli_main(["plot", "queries", "x.pth", "--image", "sklearn:china.jpg", "--queries", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sslbench: error: --queries")
