"""Issue 17 item 7: the demo's baseline is the pretraining's own network at step 0 (same architecture and
initialisation: MoCo init, fixed sin-cos table, frozen patch projection), not timm's init."""

from __future__ import annotations

import torch

from evaluate.checkpoints import is_sincos, load_backbone
from evaluate.demo import PLANS, pretrain_config, stage_random_init
from evaluate.knn import knn_accuracy
from pretrain.engine import Trainer


def test_baseline_equals_the_pretraining_network_before_its_first_step(tmp_path, shapes_root):
    plan = PLANS["quick"]
    path = stage_random_init(tmp_path, shapes_root, plan, seed=0)
    baseline = load_backbone(path).model
    trainer = Trainer(pretrain_config(tmp_path, shapes_root, plan, seed=0), knn_fn=knn_accuracy)  # the real run's build, with its data
    net = trainer.method.teacher if trainer.method.teacher is not None else trainer.method.student
    want = net.backbone.state_dict()
    got = baseline.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        torch.testing.assert_close(got[key], value.cpu(), rtol=0, atol=0, msg=key)
    assert baseline.arch.pos_embed == "sincos" and is_sincos(baseline.pos_embed.detach())
    assert stage_random_init(tmp_path, shapes_root, plan, seed=0) == path  # reused, not rebuilt
