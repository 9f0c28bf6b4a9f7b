"""The demo's own-initialisation baselines are each method's network at step 0 (same architecture and
initialisation: for BAM the MoCo init, fixed sin-cos table and frozen patch projection; for DINO its trunc-normal
init), not timm's init; the raw-pixel baseline feeds the frozen protocols the image itself."""

from __future__ import annotations

import pytest
import torch

from evaluate.checkpoints import is_sincos, load_backbone
from evaluate.checkpoints.baselines import RawPixels, adapt_config, load_baseline, parse_baseline, raw_pixels
from evaluate.demo.pipeline import PLANS, parse_methods, pretrain_config, stage_step0
from evaluate.protocols.features import tap_features
from evaluate.protocols.knn import knn_accuracy
from pretrain.engine import Trainer
from sslcore.errors import ConfigError


@pytest.mark.parametrize("method", ["bam", "dino"])
def test_step0_equals_the_pretraining_network_before_its_first_step(tmp_path, shapes_root, method):
    plan = PLANS["quick"]
    path = stage_step0(tmp_path, shapes_root, plan, 0, method)
    baseline = load_backbone(path).model
    cfg = pretrain_config(tmp_path, shapes_root, plan, 0, method, method)  # the real run's build, with its data
    trainer = Trainer(cfg, knn_fn=knn_accuracy)
    net = trainer.method.teacher if trainer.method.teacher is not None else trainer.method.student
    want = net.backbone.state_dict()
    got = baseline.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        torch.testing.assert_close(got[key], value.cpu(), rtol=0, atol=0, msg=key)
    if method == "bam":
        assert baseline.arch.pos_embed == "sincos" and is_sincos(baseline.pos_embed.detach())
    assert stage_step0(tmp_path, shapes_root, plan, 0, method) == path  # reused, not rebuilt


def test_raw_pixels_feed_the_protocols_the_image() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert torch.equal(tap_features(RawPixels(4), x), x.flatten(1))  # channel-major, one token
    pooled = tap_features(RawPixels(4, size=2), x)
    assert pooled.shape == (2, 12)
    assert pooled[0, 0] == x[0, 0, :2, :2].mean()  # area average of the top-left 2x2 block
    loaded = raw_pixels(64)
    assert loaded.info["format"] == "raw-pixels" and loaded.info["name"] == "raw-pixels-64px"
    assert loaded.info["sha256"] != raw_pixels(64, 16).info["sha256"]  # the records of each size stay apart
    with pytest.raises(ValueError):
        RawPixels(4, size=8)


def test_raw_pixel_spec_names_the_same_baseline_and_fits_the_protocols() -> None:
    from evaluate.protocols.cluster import ClusterConfig
    from evaluate.protocols.davis.run import DavisConfig
    from evaluate.protocols.knn import KNNConfig
    from evaluate.protocols.linear import LinearConfig

    spec = parse_baseline("baseline:raw-pixels:16@64")
    assert (spec.side, spec.input_size, spec.name) == (16, 64, "raw-pixels-16px")
    assert spec.spec == "baseline:raw-pixels:16@64"
    assert parse_baseline("baseline:raw-pixels:16").spec == "baseline:raw-pixels:16@224"  # the default input
    full = parse_baseline("baseline:raw-pixels@32")
    assert full.side is None and full.name == "raw-pixels-32px"
    loaded = load_baseline("baseline:raw-pixels:16@64", name="px")
    assert loaded.info["sha256"] == raw_pixels(64, 16).info["sha256"]  # the demo's baseline, by spec
    assert loaded.info["name"] == "px" and loaded.info["path"] == "baseline:raw-pixels:16@64"
    assert loaded.model.embed_dim == 3 * 16 * 16 and loaded.model.arch.img_size == 64

    linear = LinearConfig()
    assert adapt_config("linear", linear) is None and (linear.taps, linear.n_last) == ("cls", 1)
    assert "averages patch tokens" in adapt_config("linear", LinearConfig(variant="grid"))
    assert adapt_config("knn", KNNConfig()) is None and adapt_config("cluster", ClusterConfig()) is None
    knn = KNNConfig()
    knn.features.taps = "cls+mean_patch"
    assert "one token of one block" in adapt_config("knn", knn)
    assert "patch tokens" in adapt_config("davis", DavisConfig())
    assert "patch tokens" in adapt_config("coco", {}) and "network with weights" in adapt_config("finetune", None)
    for bad in ("baseline:pixels", "baseline:raw-pixels:0", "baseline:raw-pixels:8@4", "baseline:raw-pixels:a"):
        with pytest.raises(ConfigError, match="baseline:"):
            parse_baseline(bad)


def test_demo_methods_are_checked_before_any_work() -> None:
    assert parse_methods("bam, dino") == ("bam", "dino")
    with pytest.raises(ConfigError, match="no ShapesWorld recipe for 'simclr'"):
        parse_methods("bam,simclr")
    with pytest.raises(ConfigError, match="no method"):
        parse_methods(",")


def test_single_protocol_commands_take_the_baseline_spec(tmp_path, shapes_root, capsys) -> None:
    """`sslbench eval knn|linear|logreg|cluster baseline:raw-pixels:...` run on the in-memory baseline (linear on its
    one token); a protocol setting it cannot serve and a malformed spec are one line and exit 2, before any work."""
    from evaluate.cli import main
    from evaluate.reporting.records import read_records

    data = str(shapes_root / "classification")
    spec = "baseline:raw-pixels:8@32"
    assert main(["eval", "knn", spec, "--data", data, "features.cache=false"]) == 0
    assert main(["eval", "linear", spec, "--data", data, "mode=cached", "epochs=2", "features.cache=false"]) == 0
    records = read_records(tmp_path / "records")
    assert {r["protocol"] for r in records} == {"knn", "linear"}
    assert all(r["checkpoint"]["format"] == "raw-pixels" for r in records)
    assert next(r for r in records if r["protocol"] == "linear")["settings"]["taps"]["n_last"] == 1
    capsys.readouterr()
    for args, message in (
        (["eval", "linear", spec, "--data", data, "variant=grid"], "linear does not apply: linear variant 'grid'"),
        (["eval", "knn", "baseline:nope", "--data", data], "baseline:nope: unknown baseline 'nope'"),
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert len(read_records(tmp_path / "records")) == len(records)
