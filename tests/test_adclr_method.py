"""The ADCLR / ADCLR* method on the engine: networks, plan, loss wiring, schedules, export, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_engine import METHOD_OVERRIDES, toy_cfg

from pretrain.engine import Trainer
from pretrain.methods import build_method, method_class
from pretrain.methods.base import StepContext
from pretrain.views import random_batch
from pretrain.vit import build_vit
from sslcore.errors import ConfigError


def _ctx(epoch: int = 0) -> StepContext:
    return StepContext(0, epoch, 3, 4, 0, 1, lambda t: t, lambda t, op: t)


def _setup(tmp_path, **over):
    cfg = toy_cfg(tmp_path, **{**METHOD_OVERRIDES["adclr"], **over})
    torch.manual_seed(0)
    method = build_method(cfg)
    batch = random_batch(method_class(cfg.method).view_plan(cfg), 4, 32, 16, generator=torch.Generator().manual_seed(0))
    return cfg, method, batch


def test_networks_and_plan(tmp_path):
    cfg, method, batch = _setup(tmp_path)
    plan = method.view_plan(cfg)
    assert plan.query_crops == 3 and plan.query_scale == (0.05, 0.15) and not plan.masks and plan.patch_size == 8
    out = method.student(batch.views, queries=batch.queries)
    assert out["cls"].shape == (4 * 4, 64) and out["query"].shape == (2 * 4, 3, 64) and "patch" not in out
    # the query logits are the CLS head on the query tokens (one head for both)
    tokens = method.student.backbone.forward_tokens(
        batch.globals[0], extra=method.student.backbone.embed_queries(batch.queries)
    ).extra
    torch.testing.assert_close(out["query"][:4], method.student.heads["cls"](tokens), rtol=1e-5, atol=1e-5)
    # no parameter exists for the queries: the student is a ViT + the DINO head
    plain = {f"backbone.{k}" for k in build_vit(cfg.model.arch).state_dict()}
    backbone = {k for k in method.student.state_dict() if not k.startswith("heads.")}
    assert backbone == plain


def test_loss_diagnostics_and_centers(tmp_path):
    cfg, method, batch = _setup(tmp_path)
    loss, diag = method.loss(method.student, batch, _ctx(1))
    assert torch.isfinite(loss)
    assert float(loss.detach()) == pytest.approx(diag["loss_global"] + 0.5 * diag["loss_query"], rel=1e-5)
    assert diag["teacher_temp"] == pytest.approx(0.07) and diag["teacher_query_temp"] == pytest.approx(0.07)
    assert float(method.center.abs().sum()) > 0 and float(method.center_query.abs().sum()) > 0
    assert set(method.method_state()) == {"center", "center_query"}
    loss.backward()
    assert method.student.backbone.patch_embed.proj.weight.grad.abs().sum() > 0


def test_query_temperature_schedule_follows_its_own_section(tmp_path):
    over = {
        "adclr.warmup_teacher_query_temp": 0.03,
        "adclr.teacher_query_temp": 0.05,
        "dino.warmup_teacher_temp_epochs": 3,
        "train.epochs": 5,
    }
    cfg, method, batch = _setup(tmp_path, **over)
    np.testing.assert_allclose(method.query_temp_schedule, [0.03, 0.04, 0.05, 0.05, 0.05])
    temps = [method.loss(method.student, batch, _ctx(e))[1]["teacher_query_temp"] for e in (0, 1, 4)]
    assert temps == pytest.approx([0.03, 0.04, 0.05])


def test_attention_rule_changes_only_the_query_term_unless_bidirectional(tmp_path):
    """Same init, same batch: the PQCL rule leaves the CLS term bit-identical and moves the query term; the
    bidirectional ablation moves the CLS term too."""
    results = {}
    for rule in ("oneway", "all", "bidirectional"):
        cfg, method, batch = _setup(tmp_path, **{"adclr.attention": rule})
        with torch.no_grad():
            results[rule] = method.loss(method.student, batch, _ctx())[1]
    assert results["all"]["loss_global"] == results["oneway"]["loss_global"]
    assert abs(results["all"]["loss_query"] - results["oneway"]["loss_query"]) > 1e-5
    assert abs(results["bidirectional"]["loss_global"] - results["oneway"]["loss_global"]) > 1e-5


def test_adclr_star_adds_the_masked_patch_term(tmp_path):
    cfg, method, batch = _setup(tmp_path, **{"adclr.mim": True, "ibot.patch_out_dim": 64, "ibot.lambda2": 0.7})
    assert method.view_plan(cfg).masks and batch.masks is not None
    assert method.student.backbone.mask_token is not None
    loss, diag = method.loss(method.student, batch, _ctx())
    assert "loss_mim" in diag and 0 <= diag["mask_ratio"] < 0.6 and "center2" in method.method_state()
    want = diag["loss_global"] + 0.5 * diag["loss_query"] + 0.7 * diag["loss_mim"]
    assert float(loss.detach()) == pytest.approx(want, rel=1e-5)


def test_export_is_a_plain_vit(tmp_path):
    cfg = toy_cfg(tmp_path, **METHOD_OVERRIDES["adclr_star"])
    trainer = Trainer(cfg, iters_per_epoch=2)
    payload = torch.load(trainer.export(), weights_only=True)
    assert set(payload["state_dict"]) == set(build_vit(cfg.model.arch).state_dict())


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"data.global_crops": 1}, "data.global_crops must be >= 2"),
        ({"adclr.attention": "sideways"}, "adclr.attention"),
        ({"adclr.query_crops": 0}, "adclr.query_crops"),
        ({"adclr.query_scale": "[0.2, 0.1]"}, "adclr.query_scale"),
        ({"adclr.mim": True, "ibot.patch_out_dim": 32}, "ibot.shared_head=true"),
    ],
)
def test_bad_settings_are_one_config_error(tmp_path, over, match):
    with pytest.raises(ConfigError, match=match):
        build_method(toy_cfg(tmp_path, **{**METHOD_OVERRIDES["adclr"], **over}))
