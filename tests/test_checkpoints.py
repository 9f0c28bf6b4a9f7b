"""The checkpoint adapter: every official layout loads strictly and gives the reference model's features.

Tiny checkpoints are written here with each official code's key layout (prefixes, wrappers, extra modules, pickled
``args``); the reference is a plain timm ``VisionTransformer`` holding the same random weights.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import logging

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from evaluate.checkpoints import (
    CHECKPOINT_FORMATS,
    detect_format,
    infer_arch,
    is_sincos,
    load_backbone,
    sha256_cached,
)
from evaluate.checkpoints import reading as reading_mod
from evaluate.cli import main as cli_main
from pretrain.vit import ARCHS, SSLViT, dino_resample, export_backbone
from sslcore.errors import SSLBenchError

FEMTO = ARCHS["vit_femto"]  # patch 8, width 32, depth 2, 2 heads, 32 px


# ------------------------------------------------------------------------------------------------ reference pieces
def timm_vit(heads: int = 2, width: int = 32, depth: int = 2, img: int = 32, patch: int = 8) -> VisionTransformer:
    return VisionTransformer(
        img_size=img, patch_size=patch, embed_dim=width, depth=depth, num_heads=heads, num_classes=0
    ).eval()


def random_backbone(seed: int, width: int = 32, depth: int = 2, img: int = 32, patch: int = 8) -> dict:
    """timm-key weights with every tensor random (LayerNorm affine too, so a swapped tensor changes features)."""
    gen = torch.Generator().manual_seed(seed)
    template = timm_vit(1, width, depth, img, patch).state_dict()
    return {k: torch.randn(v.shape, generator=gen) * 0.2 for k, v in template.items()}


def reference_tokens(state: dict, x: torch.Tensor, heads: int = 2, **kw) -> torch.Tensor:
    model = timm_vit(heads, **kw)
    model.load_state_dict(state)
    with torch.no_grad():
        return model.forward_features(x)


def _tokens(model, x: torch.Tensor) -> torch.Tensor:
    """(B, 1 + h*w, D) normed tokens of the last block through the model's token path."""
    out = model.forward_tokens(x)
    return torch.cat([out.cls[:, None], out.patch], dim=1)


def moco_sincos(width: int, grid: int) -> torch.Tensor:
    """MoCo v3 ``build_2d_sincos_position_embedding`` (BAM's table), written out: meshgrid(w, h) 'ij'."""
    grid_w, grid_h = torch.meshgrid(torch.arange(grid).float(), torch.arange(grid).float(), indexing="ij")
    pos_dim = width // 4
    omega = 1.0 / (10000 ** (torch.arange(pos_dim).float() / pos_dim))
    out_w = torch.einsum("m,d->md", grid_w.flatten(), omega)
    out_h = torch.einsum("m,d->md", grid_h.flatten(), omega)
    table = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)[None]
    return torch.cat([torch.zeros(1, 1, width), table], dim=1)


def mae_sincos(width: int, grid: int) -> torch.Tensor:
    """MAE ``get_2d_sincos_pos_embed(..., cls_token=True)`` (PQCL/ADCLR, MAE), written out in numpy."""
    gh, gw = np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)
    mesh = np.stack(np.meshgrid(gw, gh), axis=0).reshape(2, 1, grid, grid)

    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_d(width // 2, mesh[0]), one_d(width // 2, mesh[1])], axis=1)
    emb = np.concatenate([np.zeros([1, width]), emb], axis=0)
    return torch.from_numpy(emb).float()[None]


def _args() -> argparse.Namespace:
    return argparse.Namespace(arch="vit_small", patch_size=8, lr=np.float64(5e-4), epochs=100, use_fp16=True)


def _prefixed(state: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in state.items()}


def _dino_head(prefix: str) -> dict:
    return {
        f"{prefix}head.mlp.0.weight": torch.randn(16, 32),
        f"{prefix}head.mlp.0.bias": torch.randn(16),
        f"{prefix}head.last_layer.weight_g": torch.ones(64, 1),
        f"{prefix}head.last_layer.weight_v": torch.randn(64, 16),
    }


# --------------------------------------------------------------------------------------- official layouts (writers)
def write_dino(path, teacher, student, ibot=False):
    s = _prefixed(student, "module.backbone.") | _dino_head("module.")
    if ibot:
        s["module.backbone.masked_embed"] = torch.zeros(1, 32)
    payload = {
        "student": s,
        "teacher": _prefixed(teacher, "backbone.") | _dino_head(""),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "epoch": 100,
        "args": _args(),
        ("ibot_loss" if ibot else "dino_loss"): {"center": torch.zeros(1, 64)},
        "fp16_scaler": {"scale": 65536.0, "growth_factor": 2.0},
    }
    torch.save(payload, path)


def write_bam(path, teacher, student):
    proj = {f"proj_head.projector.{i}.{p}": torch.randn(8, 8) for i in (0, 2, 4) for p in ("weight", "bias")}
    model = (
        _prefixed(teacher, "teacher.backbone.")
        | _prefixed(proj, "teacher.")
        | _prefixed(student, "student.module.backbone.")
        | _prefixed(proj, "student.module.")
    )
    torch.save({"model": model, "optimizer": {}, "epoch": 12, "args": _args(), "boxes": torch.zeros(4, 4)}, path)


def write_sere(path, teacher, student):
    def sere(prefix):
        out = {}
        for mod in ("pixel_sere", "channel_sere", "pixel_sere_local", "channel_sere_local"):
            out |= {
                f"{prefix}{mod}.projector.0.weight": torch.ones(32),
                f"{prefix}{mod}.projector.0.bias": torch.zeros(32),
                f"{prefix}{mod}.projector.0.running_mean": torch.zeros(32),
                f"{prefix}{mod}.projector.0.running_var": torch.ones(32),
                f"{prefix}{mod}.projector.0.num_batches_tracked": torch.tensor(7),
                f"{prefix}{mod}.predictor.0.weight": torch.randn(32, 32, 1, 1),
            }
        return out

    t = _prefixed(teacher, "module.backbone.") | sere("module.backbone.") | _dino_head("module.")
    s = _prefixed(student, "module.backbone.") | sere("module.backbone.") | _dino_head("module.")
    s["module.backbone.masked_embed"] = torch.zeros(1, 32)
    torch.save({"student": s, "teacher": t, "optimizer": {}, "epoch": 5, "args": _args(), "ibot_loss": {}}, path)


def write_adclr(path, teacher, student):
    def extras(prefix):
        block = random_backbone(9, depth=1)
        qb = {k.replace("blocks.0.", "query_block."): v for k, v in block.items() if k.startswith("blocks.0.")}
        return _prefixed(qb, prefix) | {
            f"{prefix}masked_embed": torch.zeros(1, 32),
            f"{prefix}norm2.weight": torch.ones(32),
            f"{prefix}norm2.bias": torch.zeros(32),
        }

    t = _prefixed(teacher, "backbone.") | extras("backbone.") | _dino_head("")
    s = _prefixed(student, "module.backbone.") | extras("module.backbone.") | _dino_head("module.")
    pqcl = {"center": torch.zeros(1, 64), "center2": torch.zeros(1, 1, 64), "center3": torch.zeros(1, 1, 64)}
    torch.save({"student": s, "teacher": t, "optimizer": {}, "epoch": 3, "args": _args(), "pqcl_loss": pqcl}, path)


def write_mae(path, state):
    decoder = {
        "mask_token": torch.zeros(1, 1, 16),
        "decoder_embed.weight": torch.randn(16, 32),
        "decoder_pos_embed": torch.zeros(1, 17, 16),
        "decoder_blocks.0.norm1.weight": torch.ones(16),
        "decoder_norm.weight": torch.ones(16),
        "decoder_pred.weight": torch.randn(192, 16),
    }
    torch.save({"model": state | decoder, "optimizer": {}, "epoch": 1, "scaler": {}, "args": _args()}, path)


def write_sslbench_train(path, teacher, student):
    t = _prefixed(teacher, "backbone.") | {"head.layers.0.weight": torch.randn(4, 32)}
    s = _prefixed(student, "backbone.") | {"head.layers.0.weight": torch.randn(4, 32)}
    config = {"method": "bam", "model": {"arch": "vit_femto", "pos_embed": "learned", "pos_interp": "dino"}}
    payload = {"format": "sslbench-train", "version": 1, "teacher": t, "student": s, "config": config, "step": 8}
    torch.save(payload | {"optimizer": {}, "scaler": {}, "crop_boxes": None, "rng": []}, path)


def write_sslbench_export(path, state):
    model = SSLViT(FEMTO)
    model.load_state_dict(state)
    torch.save(export_backbone(model, {"method": "bam"}), path)


TEACHER, STUDENT = random_backbone(1), random_backbone(2)
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """One file per official layout: name -> (path, expected format, teacher weights, student weights or None)."""
    root = tmp_path_factory.mktemp("ckpts")
    bam_t, bam_s = dict(TEACHER, pos_embed=moco_sincos(32, 4)), dict(STUDENT, pos_embed=moco_sincos(32, 4))
    ad_t, ad_s = dict(TEACHER, pos_embed=mae_sincos(32, 4)), dict(STUDENT, pos_embed=mae_sincos(32, 4))
    files = {
        "dino": (write_dino, (TEACHER, STUDENT), "dino", TEACHER, STUDENT),
        "ibot": (lambda p, t, s: write_dino(p, t, s, ibot=True), (TEACHER, STUDENT), "dino", TEACHER, STUDENT),
        "bam": (write_bam, (bam_t, bam_s), "bam", bam_t, bam_s),
        "sere": (write_sere, (TEACHER, STUDENT), "sere", TEACHER, STUDENT),
        "adclr": (write_adclr, (ad_t, ad_s), "adclr", ad_t, ad_s),
        "mae": (write_mae, (ad_t,), "mae", ad_t, None),
        "sslbench_train": (write_sslbench_train, (TEACHER, STUDENT), "sslbench", TEACHER, STUDENT),
        "sslbench_export": (write_sslbench_export, (TEACHER,), "sslbench", TEACHER, None),
    }
    out = {}
    for name, (writer, states, fmt, teacher, student) in files.items():
        path = root / f"{name}.pth"
        writer(path, *states)
        out[name] = (path, fmt, teacher, student)
    timm_src = timm_vit()
    timm_src.reset_classifier(10)  # a DeiT-like file with a classifier head
    timm_src.load_state_dict(TEACHER | {"head.weight": torch.randn(10, 32), "head.bias": torch.zeros(10)})
    torch.save({"model": timm_src.state_dict()}, root / "deit.pth")
    out["deit"] = (root / "deit.pth", "timm", TEACHER, None)
    from safetensors.torch import save_file

    save_file(dict(TEACHER), str(root / "plain.safetensors"))
    out["safetensors"] = (root / "plain.safetensors", "timm", TEACHER, None)
    return out


# ------------------------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize(
    "name", ["dino", "ibot", "bam", "sere", "adclr", "mae", "sslbench_train", "sslbench_export", "deit", "safetensors"]
)
def test_each_official_layout_loads_strictly_with_reference_features(official, name):
    path, fmt, teacher, _ = official[name]
    loaded = load_backbone(path, num_heads=2)
    assert loaded.info["format"] == fmt
    assert loaded.report.missing == loaded.report.unexpected == loaded.report.mismatched == []
    assert loaded.info["arch"] == dict(FEMTO.to_dict(), pos_embed=loaded.info["arch"]["pos_embed"])
    assert not loaded.model.training and next(loaded.model.parameters()).device.type == "cpu"
    with torch.no_grad():
        got = _tokens(loaded.model, X)
    torch.testing.assert_close(got, reference_tokens(teacher, X), rtol=0, atol=1e-6)
    sd = loaded.model.state_dict()
    assert all(torch.equal(sd[k], teacher[k]) for k in teacher)


def test_info_fields_and_dropped_keys(official):
    path, *_ = official["sere"]
    loaded = load_backbone(path, num_heads=2, name="sere-tiny")
    info = loaded.info
    assert set(info) >= {"path", "name", "sha256", "format", "arch", "which", "pos_interp", "num_heads_source"}
    assert (info["name"], info["which"], info["pos_interp"], info["num_heads_source"]) == (
        "sere-tiny",
        "teacher",
        "dino",
        "flag",
    )
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "argparse.Namespace" in info["unpickled"]  # allow-listed, and said so
    assert set(info["unpickled"]) <= set(reading_mod.PICKLE_ALLOW_LIST)
    dropped = loaded.report.dropped
    assert len(dropped) == 4 * 6 + 4  # four SERE modules x 6 tensors + the DINO head
    assert "backbone.pixel_sere_local.predictor.0.weight" in dropped and "head.last_layer.weight_v" in dropped


@pytest.mark.parametrize("name", ["dino", "ibot", "bam", "sere", "adclr", "sslbench_train"])
def test_student_selection(official, name):
    path, _, teacher, student = official[name]
    loaded = load_backbone(path, which="student", num_heads=2)
    assert loaded.info["which"] == "student"
    with torch.no_grad():
        got = _tokens(loaded.model, X)
    torch.testing.assert_close(got, reference_tokens(student, X), rtol=0, atol=1e-6)
    assert not torch.allclose(got, reference_tokens(teacher, X))


def test_single_network_formats_refuse_student(official):
    with pytest.raises(SSLBenchError, match="single network"):
        load_backbone(official["mae"][0], which="student")


def test_sincos_tables_are_detected_in_both_layouts_and_only_them():
    assert is_sincos(moco_sincos(32, 4)) and is_sincos(mae_sincos(32, 4)) and is_sincos(moco_sincos(384, 14))
    assert not torch.allclose(moco_sincos(32, 4), mae_sincos(32, 4))  # transposed grids: two layouts
    assert not is_sincos(torch.randn(1, 17, 32) * 0.02)
    bumped = moco_sincos(32, 4).clone()
    bumped[0, 5, 3] += 1e-2
    assert not is_sincos(bumped)


def test_pos_embed_type_is_read_from_the_stored_table(official):
    assert load_backbone(official["bam"][0], num_heads=2).info["arch"]["pos_embed"] == "sincos"
    assert load_backbone(official["adclr"][0], num_heads=2).info["arch"]["pos_embed"] == "sincos"
    assert load_backbone(official["dino"][0], num_heads=2).info["arch"]["pos_embed"] == "learned"


def _vit_s_state(width=384):
    return random_backbone(4, width=width, depth=1, img=32, patch=16)


@pytest.mark.parametrize(
    ("fmt", "heads"), [("bam", 12), ("dino", 6), ("sere", 6), ("adclr", 6), ("mae", 6), ("timm", 6), ("sslbench", 6)]
)
def test_default_head_counts_of_vit_s(fmt, heads):
    arch, sources = infer_arch(_vit_s_state(), fmt)
    assert arch.num_heads == heads and sources["num_heads"].startswith("format default")
    assert infer_arch(_vit_s_state(), fmt, num_heads=3)[0].num_heads == 3
    assert infer_arch(_vit_s_state(768), fmt)[0].num_heads == 12  # ViT-B: 12 heads everywhere


def test_bam_default_heads_change_the_features_as_twelve_heads_should(tmp_path):
    state = _vit_s_state()
    write_bam(tmp_path / "bam.pth", state, state)
    loaded = load_backbone(tmp_path / "bam.pth")
    assert loaded.info["arch"]["num_heads"] == 12 and "bam" in loaded.info["num_heads_source"]
    x = torch.randn(1, 3, 32, 32)
    kw = dict(width=384, depth=1, img=32, patch=16)
    with torch.no_grad():
        got = _tokens(loaded.model, x)
    torch.testing.assert_close(got, reference_tokens(state, x, heads=12, **kw), rtol=0, atol=1e-5)
    assert not torch.allclose(got, reference_tokens(state, x, heads=6, **kw), atol=1e-3)


@pytest.mark.parametrize(
    ("name", "rule"), [("dino", "dino"), ("deit", "timm"), ("mae", "timm"), ("bam", "timm"), ("adclr", "dino")]
)
def test_pos_embed_resampled_for_another_size_with_the_format_rule(official, name, rule):
    path, _, teacher, _ = official[name]
    loaded = load_backbone(path, num_heads=2, img_size=48)
    assert loaded.info["pos_interp"] == rule and loaded.info["arch"]["img_size"] == 48
    assert loaded.report.reshaped == [f"pos_embed (1, 17, 32) -> (1, 37, 32) [{rule}]"]
    if rule == "dino":
        torch.testing.assert_close(loaded.model.pos_embed.data, dino_resample(teacher["pos_embed"], (6, 6)))
    # load-time resampling then a native-size forward == stored grid resampled at run time by the same rule
    native = SSLViT(FEMTO, pos_interp=rule).eval()
    native.load_state_dict(teacher)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(_tokens(loaded.model, x), _tokens(native, x), rtol=0, atol=1e-5)


def test_pos_interp_override_is_recorded_and_changes_features(official):
    path = official["dino"][0]
    dino = load_backbone(path, num_heads=2)
    timm_ = load_backbone(path, num_heads=2, pos_interp="timm")
    assert (dino.info["pos_interp"], timm_.info["pos_interp"]) == ("dino", "timm")
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert not torch.allclose(_tokens(dino.model, x), _tokens(timm_.model, x), atol=1e-4)


def test_detection_and_forcing(official):
    assert detect_format({"teacher": {"backbone.cls_token": torch.zeros(1)}}) == "dino"
    assert detect_format({"model": {"teacher.backbone.cls_token": torch.zeros(1)}}) == "bam"
    with pytest.raises(SSLBenchError, match="known formats: " + ", ".join(CHECKPOINT_FORMATS)):
        detect_format({"weights": {"foo": torch.zeros(1)}})
    # a plain DINO backbone extract is timm-shaped: detected as timm, forced to dino for DINO's resampling rule
    forced = load_backbone(official["safetensors"][0], format="dino", num_heads=2)
    assert (forced.info["format"], forced.info["pos_interp"]) == ("dino", "dino")


def test_sha256_cached_reuses_and_invalidates(tmp_path, monkeypatch):
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    first = sha256_cached(path)
    assert first == hashlib.sha256(b"abc").hexdigest()
    monkeypatch.setattr(reading_mod, "sha256_file", lambda p: pytest.fail("cache not used"))
    assert sha256_cached(path) == first
    monkeypatch.undo()
    path.write_bytes(b"abcd")
    assert sha256_cached(path) == hashlib.sha256(b"abcd").hexdigest()


# ----------------------------------------------------------------------------------------------- safe loading
def test_pickled_objects_outside_the_allow_list_need_trust(tmp_path):
    payload = {"teacher": _prefixed(TEACHER, "backbone."), "args": argparse.Namespace(day=datetime.date(2024, 1, 2))}
    torch.save(payload, tmp_path / "odd.pth")
    with pytest.raises(SSLBenchError, match=r"datetime\.date.*--trust-pickle"):
        load_backbone(tmp_path / "odd.pth", num_heads=2)
    loaded = load_backbone(tmp_path / "odd.pth", num_heads=2, trust_pickle=True)
    assert "datetime.date" in loaded.info["unpickled"]


# ------------------------------------------------------------------------------------ malformed files via the CLI
def _cli(capsys, *argv):
    """Run ``sslbench <group> <cmd> -q ...`` in-process (warnings and errors only on stderr)."""
    logging.getLogger("sslbench").handlers.clear()  # the CLI binds its handler to the current (captured) stderr
    rc = cli_main([*argv[:2], "-q", *argv[2:]])
    out, err = capsys.readouterr()
    return rc, out, err


def _edited_dino(tmp_path, edit):
    teacher = dict(TEACHER)
    edit(teacher)
    write_dino(tmp_path / "bad.pth", teacher, STUDENT)
    return str(tmp_path / "bad.pth")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: [t.pop(k) for k in list(t) if k.startswith("blocks.0.")], "missing: blocks.0.*"),
        (lambda t: t.update({"blocks.1.mlp.fc2.weight": torch.zeros(32, 64)}), "wrong shape: blocks.1.mlp.fc2.weight"),
        (lambda t: t.update({"blocks.0.ls1.gamma": torch.ones(32)}), "unexpected: backbone.blocks.0.ls1.gamma"),
        (lambda t: t.pop("norm.weight"), "missing: norm.weight"),
    ],
    ids=["missing-block", "wrong-shape", "unexpected-key", "missing-norm"],
)
def test_malformed_checkpoint_gives_one_line_exit_2(tmp_path, capsys, edit, expected):
    path = _edited_dino(tmp_path, edit)
    rc, _, err = _cli(capsys, "ckpt", "inspect", path, "--num-heads", "2")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("sslbench: error: ")
    assert path in err and expected in err


def test_truncated_unknown_and_pickled_files_give_one_line(tmp_path, capsys, official):
    data = official["dino"][0].read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    torch.save({"weights": {"foo": torch.zeros(2)}}, tmp_path / "unknown.pth")
    torch.save({"teacher": _prefixed(TEACHER, "backbone."), "when": datetime.date(2024, 1, 2)}, tmp_path / "pk.pth")
    for name, expected in [
        ("cut.pth", "truncated or corrupt"),
        ("unknown.pth", "unknown checkpoint format"),
        ("pk.pth", "datetime.date"),
        ("absent.pth", "not found"),
    ]:
        rc, _, err = _cli(capsys, "ckpt", "inspect", str(tmp_path / name))
        assert rc == 2 and err.count("\n") == 1 and name in err and expected in err, err
    rc, out, _ = _cli(capsys, "ckpt", "inspect", str(tmp_path / "pk.pth"), "--trust-pickle", "--num-heads", "2")
    assert rc == 0 and "loads strictly" in out


# -------------------------------------------------------------------------------------------------- inspect / convert
def test_inspect_prints_format_arch_and_drops(capsys, official):
    rc, out, _ = _cli(capsys, "ckpt", "inspect", str(official["bam"][0]))
    assert rc == 0
    assert "format:      bam (detected)" in out and "loads strictly" in out
    assert "embed_dim   32" in out and "depth       2" in out and "pos_embed   sincos" in out
    assert "num_heads   1         from format default (bam" in out  # width 32: no known BAM default -> 1 head
    # teacher projector (6) + every student tensor (30 backbone + 6 projector) are dropped, the projector listed first
    assert "30 backbone tensors" in out and "42 dropped, 0 missing, 0 unexpected" in out
    assert "dropped:     proj_head.projector.0.weight" in out
    rc, out, _ = _cli(capsys, "ckpt", "inspect", str(official["ibot"][0]), "--which", "student", "--num-heads", "2")
    assert "network:     student" in out and "backbone.masked_embed" in out


def test_convert_to_timm_safetensors_and_pth_load_into_plain_timm(tmp_path, capsys, official):
    src = str(official["sere"][0])
    expected = reference_tokens(TEACHER, X)
    for out_name in ("b.safetensors", "b.pth"):
        rc, _, _ = _cli(capsys, "ckpt", "convert", src, "--num-heads", "2", "--to", "timm", str(tmp_path / out_name))
        assert rc == 0
    from safetensors.torch import load_file

    for state in (
        load_file(str(tmp_path / "b.safetensors")),
        torch.load(tmp_path / "b.pth", weights_only=True)["state_dict"],
    ):
        model = timm_vit()
        model.load_state_dict(state)  # strict, plain timm
        with torch.no_grad():
            torch.testing.assert_close(model.forward_features(X), expected, rtol=0, atol=1e-6)
    # the converted file loads back with its stored arch (2 heads, DINO rule) without flags
    again = load_backbone(tmp_path / "b.safetensors")
    assert (again.info["format"], again.info["num_heads_source"], again.info["pos_interp"]) == (
        "timm",
        "stored arch",
        "dino",
    )


@pytest.mark.parametrize("target", ["mmdet", "mmseg"])
def test_convert_to_mm_is_tensor_only_with_meta(tmp_path, capsys, official, target):
    src = official["bam"][0]
    rc, _, _ = _cli(capsys, "ckpt", "convert", str(src), "--num-heads", "2", "--to", target, str(tmp_path / "m.pth"))
    assert rc == 0
    payload = torch.load(tmp_path / "m.pth", weights_only=True)
    assert set(payload) == {"state_dict", "meta"}
    assert set(payload["state_dict"]) == set(timm_vit().state_dict())
    meta = payload["meta"]
    assert meta["format"] == "bam" and meta["pos_interp"] == "timm"
    assert meta["arch"]["num_heads"] == 2 and meta["arch"]["pos_embed"] == "sincos"
    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()


def test_init_writes_a_random_export_that_loads(tmp_path, capsys):
    rc, _, _ = _cli(capsys, "ckpt", "init", "--arch", "vit_femto", "--seed", "7", str(tmp_path / "r.pth"))
    assert rc == 0
    loaded = load_backbone(tmp_path / "r.pth")
    assert loaded.info["arch"] == FEMTO.to_dict() and loaded.info["num_heads_source"] == "stored arch"
    torch.manual_seed(7)
    ref = SSLViT(FEMTO)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in loaded.model.state_dict().items())


def test_bam_wrapper_variants_bn_projector_and_compile(tmp_path):
    """``teacher.module.backbone.`` (DDP teacher when the projector has BN) and ``_orig_mod.`` (torch.compile)."""
    model = _prefixed(TEACHER, "teacher.module._orig_mod.backbone.") | _prefixed(STUDENT, "student.module.backbone.")
    torch.save({"model": model, "epoch": 1}, tmp_path / "bam_bn.pth")
    loaded = load_backbone(tmp_path / "bam_bn.pth", num_heads=2)
    assert loaded.info["format"] == "bam"
    with torch.no_grad():
        torch.testing.assert_close(_tokens(loaded.model, X), reference_tokens(TEACHER, X), rtol=0, atol=1e-6)


def test_sslbench_training_checkpoint_without_arch_marker_can_be_forced(tmp_path):
    t, s = _prefixed(TEACHER, "backbone."), _prefixed(STUDENT, "backbone.")
    torch.save({"teacher": t | {"projector.0.weight": torch.ones(2)}, "student": s}, tmp_path / "run.pth")
    assert detect_format(torch.load(tmp_path / "run.pth", weights_only=True)) == "dino"
    with pytest.raises(SSLBenchError, match=r"as dino \(unexpected: projector\.0\.weight\)"):  # DINO: head.* only
        load_backbone(tmp_path / "run.pth", num_heads=2)
    forced = load_backbone(tmp_path / "run.pth", num_heads=2, format="sslbench", which="student")
    assert (forced.info["format"], forced.info["which"], forced.report.dropped) == ("sslbench", "student", [])
    assert torch.equal(forced.model.cls_token, STUDENT["cls_token"])


def test_truncated_safetensors_names_the_file(tmp_path, official):
    data = official["safetensors"][0].read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(SSLBenchError, match=r"cut\.safetensors: cannot read checkpoint \(truncated or corrupt"):
        load_backbone(tmp_path / "cut.safetensors")


def test_sslbench_training_checkpoint_reads_arch_from_config_and_handles_teacher_free(tmp_path, official):
    loaded = load_backbone(official["sslbench_train"][0])  # no num_heads: config.model.arch = vit_femto
    assert loaded.info["num_heads_source"] == "stored arch" and loaded.info["arch"] == FEMTO.to_dict()
    payload = torch.load(official["sslbench_train"][0], weights_only=True)
    torch.save(payload | {"teacher": None}, tmp_path / "free.pth")
    with pytest.raises(SSLBenchError, match=r"no teacher \(a teacher-free run\); use which='student'"):
        load_backbone(tmp_path / "free.pth")
    assert torch.equal(load_backbone(tmp_path / "free.pth", which="student").model.cls_token, STUDENT["cls_token"])
