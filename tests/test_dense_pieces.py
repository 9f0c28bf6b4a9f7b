"""Dense-protocol pieces that need no mm package: layer decay, the simple-FPN backbone, the install script's plan."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluate.protocols.dense.backbone import SSLViTBackbone, default_taps
from evaluate.protocols.layer_decay import layer_id, lr_scale, param_groups
from pretrain.vit import SSLViT, ViTArch, build_vit
from sslcore.errors import SSLBenchError

REPO = Path(__file__).resolve().parent.parent

# (parameter name, expected BEiT/iBOT layer id) for a 12-block ViT inside a detector
NAMED = [
    ("backbone.vit.cls_token", 0),
    ("backbone.vit.pos_embed", 0),
    ("backbone.vit.patch_embed.proj.weight", 0),
    ("backbone.vit.blocks.0.norm1.weight", 1),
    ("backbone.vit.blocks.0.attn.qkv.weight", 1),
    ("backbone.vit.blocks.5.mlp.fc1.bias", 6),
    ("backbone.vit.blocks.11.mlp.fc2.weight", 12),
    ("backbone.vit.norm.weight", 13),
    ("backbone.fpn.0.0.weight", 13),
    ("neck.lateral_convs.0.conv.weight", 13),
    ("roi_head.bbox_head.2.fc_cls.weight", 13),
    ("decode_head.conv_seg.weight", 13),
]


def write_converted(path: Path, model: SSLViT) -> Path:
    meta = {"arch": model.arch.to_dict(), "pos_interp": model.pos_interp, "source_sha256": "0" * 64, "format": "test"}
    torch.save({"state_dict": model.state_dict(), "meta": meta}, path)
    return path


def test_layer_ids_and_multipliers_match_the_formula():
    for name, expected in NAMED:
        assert layer_id(name, 12) == expected, name
        for decay in (0.75, 0.65, 0.9):
            assert lr_scale(name, 12, decay) == pytest.approx(decay ** (13 - expected))
    # the values printed in protocols.md §6.1 for rate 0.75: block 11 -> 0.75, block 0 -> 0.0317, embeddings -> 0.0238
    assert lr_scale("backbone.vit.blocks.11.attn.proj.weight", 12, 0.75) == pytest.approx(0.75)
    assert lr_scale("backbone.vit.blocks.0.attn.proj.weight", 12, 0.75) == pytest.approx(0.0317, abs=5e-5)
    assert lr_scale("backbone.vit.pos_embed", 12, 0.75) == pytest.approx(0.0238, abs=5e-5)
    # the un-nested layout of the official code (backbone.blocks.i) maps the same way
    assert layer_id("backbone.blocks.3.attn.qkv.weight", 12) == 4
    assert layer_id("backbone.cls_token", 12) == 0


def test_param_groups_lr_and_weight_decay_exemptions():
    params = {
        "backbone.vit.pos_embed": torch.nn.Parameter(torch.zeros(1, 5, 4)),
        "backbone.vit.cls_token": torch.nn.Parameter(torch.zeros(1, 1, 4)),
        "backbone.vit.blocks.1.attn.qkv.weight": torch.nn.Parameter(torch.zeros(12, 4)),
        "backbone.vit.blocks.1.attn.qkv.bias": torch.nn.Parameter(torch.zeros(12)),
        "backbone.vit.blocks.1.norm1.weight": torch.nn.Parameter(torch.zeros(4)),
        "neck.conv.weight": torch.nn.Parameter(torch.zeros(2, 4, 1, 1)),
        "neck.frozen.weight": torch.nn.Parameter(torch.zeros(2, 2), requires_grad=False),
    }
    groups = param_groups(params.items(), base_lr=1e-4, weight_decay=0.05, decay=0.5, num_layers=2)
    by_name = {name: g for g in groups for name in g["names"]}
    assert "neck.frozen.weight" not in by_name
    assert by_name["backbone.vit.pos_embed"]["weight_decay"] == 0.0
    assert by_name["backbone.vit.cls_token"]["weight_decay"] == 0.0
    assert by_name["backbone.vit.blocks.1.attn.qkv.bias"]["weight_decay"] == 0.0
    assert by_name["backbone.vit.blocks.1.norm1.weight"]["weight_decay"] == 0.0
    assert by_name["backbone.vit.blocks.1.attn.qkv.weight"]["weight_decay"] == 0.05
    assert by_name["neck.conv.weight"]["weight_decay"] == 0.05
    assert by_name["backbone.vit.pos_embed"]["lr"] == pytest.approx(1e-4 * 0.5**3)
    assert by_name["backbone.vit.blocks.1.attn.qkv.weight"]["lr"] == pytest.approx(1e-4 * 0.5)
    assert by_name["neck.conv.weight"]["lr"] == pytest.approx(1e-4)
    assert sum(len(g["params"]) for g in groups) == 6
    # the official code's effective behaviour: pos_embed / cls_token keep weight decay
    official = param_groups(params.items(), 1e-4, 0.05, 0.5, 2, decay_pos_cls=True)
    assert {n: g["weight_decay"] for g in official for n in g["names"]}["backbone.vit.pos_embed"] == 0.05


def test_default_taps_scale_ibot_blocks():
    assert default_taps(12) == [3, 5, 7, 11]
    assert default_taps(24) == [7, 11, 15, 23]
    assert default_taps(4) == [0, 1, 2, 3]


@pytest.mark.parametrize("patch", [8, 16])
def test_backbone_strides_and_strict_load(tmp_path, patch):
    torch.manual_seed(0)
    arch = ViTArch(patch_size=patch, embed_dim=32, depth=4, num_heads=4, img_size=4 * patch)
    vit = SSLViT(arch)
    ckpt = write_converted(tmp_path / "bb.pth", vit)
    # the config asks for vit_small: the checkpoint's arch (4 heads, width 32) must win
    model = SSLViTBackbone(arch="vit_small", checkpoint=str(ckpt), norm_cfg={"type": "BN"}).eval()
    assert model.vit.blocks[0].attn.num_heads == 4
    for key, value in vit.state_dict().items():
        assert torch.equal(model.vit.state_dict()[key], value), key
    model.init_weights()  # mm runners call it: the ViT must keep the loaded weights
    for key, value in vit.state_dict().items():
        assert torch.equal(model.vit.state_dict()[key], value), key
    image = torch.randn(2, 3, 6 * patch, 10 * patch)  # a padded batch larger than the pretraining grid
    outs = model(image)
    assert [tuple(o.shape) for o in outs] == [(2, 32, 6 * patch // s, 10 * patch // s) for s in (4, 8, 16, 32)]


def test_backbone_taps_equal_the_vit_tokens(tmp_path):
    torch.manual_seed(0)
    vit = build_vit("vit_femto").eval()
    ckpt = write_converted(tmp_path / "bb.pth", vit)
    model = SSLViTBackbone(checkpoint=str(ckpt), out_indices=[1], out_with_norm=True, with_fpn=False).eval()
    image = torch.randn(2, 3, 48, 40)
    (fmap,) = model(image)
    tokens = vit.forward_tokens(image).patch
    assert torch.allclose(fmap.flatten(2).transpose(1, 2), tokens, atol=1e-6)


def test_activation_checkpointing_gives_the_same_gradients(tmp_path):
    torch.manual_seed(0)
    ckpt = write_converted(tmp_path / "bb.pth", build_vit("vit_pico"))
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(1)
        model = SSLViTBackbone(checkpoint=str(ckpt), with_cp=with_cp).train()
        image = torch.randn(2, 3, 32, 32)
        sum(o.square().mean() for o in model(image)).backward()
        grads.append(model.vit.blocks[0].attn.qkv.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_backbone_refuses_mismatched_weights(tmp_path):
    vit = build_vit("vit_femto")
    state = vit.state_dict()
    state.pop("blocks.1.mlp.fc2.weight")
    meta = {"arch": vit.arch.to_dict(), "pos_interp": "dino"}
    torch.save({"state_dict": state, "meta": meta}, tmp_path / "bad.pth")
    with pytest.raises(SSLBenchError, match="missing: \\['blocks.1.mlp.fc2.weight'\\]"):
        SSLViTBackbone(checkpoint=str(tmp_path / "bad.pth"))
    torch.save({"weights": state}, tmp_path / "other.pth")
    with pytest.raises(SSLBenchError, match="meta.arch"):
        SSLViTBackbone(checkpoint=str(tmp_path / "other.pth"))


def test_install_script_build_plan_dry_run():
    """The from-source path of scripts/install_mm.sh, printed (not run): C++ standard, ops, no build isolation."""
    env = dict(os.environ, SSLBENCH_VENV=sys.prefix, SSLBENCH_MMCV_CUDA="0")
    env.pop("SSLBENCH_MMCV_WHEEL_DIR", None)
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_mm.sh"), "--dry-run", "--build"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    torch_minor = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    assert ("sed -i s/-std=c++17/-std=c++20/g" in out) == (torch_minor >= (2, 13))
    assert "--no-build-isolation" in out and "--no-binary :all:" in out
    assert "MMCV_WITH_OPS=1" in out and "CFLAGS=-g0" in out and "FORCE_CUDA" not in out
    assert f"MAX_JOBS={len(os.sched_getaffinity(0))}" in out
    assert "--no-deps -c requirements/constraints-dense.txt mmengine mmdet mmsegmentation" in out
    assert "setuptools<82" in out


def test_install_script_cuda_build_plan_dry_run(tmp_path):
    """SSLBENCH_MMCV_CUDA=1 (no GPU needed): the registry's compiler pinned to torch's CUDA with its front end, the
    registry layout as CUDA_HOME, the arch list, the libcudart link shim; the wheel kept under torch-<v>/cuda/."""
    if not torch.version.cuda:
        pytest.skip("this torch is a CPU build: the CUDA route refuses it (checked below)")
    cuda = torch.version.cuda
    env = dict(os.environ, SSLBENCH_VENV=sys.prefix, SSLBENCH_MMCV_CUDA="1", TORCH_CUDA_ARCH_LIST="9.0")
    env.pop("SSLBENCH_MMCV_WHEEL_DIR", None)
    script = str(REPO / "scripts" / "install_mm.sh")
    out = subprocess.run(["bash", script, "--dry-run", "--build"], env=env, capture_output=True, text=True, check=True)
    plan = out.stdout
    pins = [f"nvidia-cuda-nvcc=={cuda}.*", f"nvidia-nvvm=={cuda}.*", f"nvidia-cuda-crt=={cuda}.*"]
    assert all(pin in plan for pin in pins) and f"nvidia-cuda-cccl=={cuda}.*" in plan
    major = cuda.split(".")[0]
    assert f"FORCE_CUDA=1 CUDA_HOME={sys.prefix}" in plan and f"/nvidia/cu{major} " in plan
    assert "TORCH_CUDA_ARCH_LIST=9.0" in plan and f"libcudart.so.{major}" in plan and "LDFLAGS=-L" in plan
    # a CUDA build never takes a CPU wheel: with only a CPU wheel in the folder it builds
    pytag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    version = torch.__version__.split("+")[0]
    cpu_wheel = tmp_path / f"torch-{version}" / f"mmcv-2.1.0-{pytag}-{pytag}-linux_x86_64.whl"
    cpu_wheel.parent.mkdir()
    cpu_wheel.write_bytes(b"")
    env["SSLBENCH_MMCV_WHEEL_DIR"] = str(tmp_path)
    out = subprocess.run(["bash", script, "--dry-run"], env=env, capture_output=True, text=True, check=True)
    assert f"no mmcv-2.1.0 wheel for {pytag} / torch-{version}/cuda" in out.stderr and "FORCE_CUDA=1" in out.stdout
    cuda_wheel = tmp_path / f"torch-{version}" / "cuda" / cpu_wheel.name
    cuda_wheel.parent.mkdir()
    cuda_wheel.write_bytes(b"")
    out = subprocess.run(["bash", script, "--dry-run"], env=env, capture_output=True, text=True, check=True)
    assert f"mmcv from {cuda_wheel}" in out.stdout and "FORCE_CUDA" not in out.stdout


def test_install_script_refuses_a_bad_cuda_setting():
    env = dict(os.environ, SSLBENCH_VENV=sys.prefix, SSLBENCH_MMCV_CUDA="maybe")
    result = subprocess.run(["bash", str(REPO / "scripts" / "install_mm.sh"), "--dry-run"], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and result.stderr.strip() == (
        "install_mm.sh: SSLBENCH_MMCV_CUDA=maybe (valid: auto, 0, 1)"
    )
