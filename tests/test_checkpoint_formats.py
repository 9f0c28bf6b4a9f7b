"""Issue 17 item 9: one positional-resampling rule from the detected format, DINO's backbone-only releases, and
Hugging Face ``transformers`` ViT weights."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file
from test_checkpoints import _tokens, random_backbone, reference_tokens

from evaluate.checkpoints import detect_format, load_backbone
from pretrain.vit import dino_resample


def _to_hf(state: dict, prefix: str = "") -> dict:
    """timm ViT keys -> transformers ViTModel keys (the inverse of the converter, written out by hand)."""
    out = {
        f"{prefix}embeddings.cls_token": state["cls_token"],
        f"{prefix}embeddings.position_embeddings": state["pos_embed"],
        f"{prefix}embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        f"{prefix}embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        f"{prefix}layernorm.weight": state["norm.weight"],
        f"{prefix}layernorm.bias": state["norm.bias"],
    }
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    names = {
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "attn.proj": "attention.output.dense",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
    }
    for i in range(depth):
        hf = f"{prefix}encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = state[f"blocks.{i}.attn.qkv.{kind}"].chunk(3)
            out |= {f"{hf}attention.attention.query.{kind}": q.clone()}
            out |= {f"{hf}attention.attention.key.{kind}": k.clone()}
            out |= {f"{hf}attention.attention.value.{kind}": v.clone()}
            for timm_name, hf_name in names.items():
                out[f"{hf}{hf_name}.{kind}"] = state[f"blocks.{i}.{timm_name}.{kind}"]
    return {k: v.contiguous() for k, v in out.items()}


def test_dino_backbone_release_is_dino_with_dinos_rule(tmp_path):
    state = random_backbone(3)
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(state, path)  # DINO's release: a flat dict, timm keys, no head
    assert detect_format(torch.load(path)) == "dino"
    loaded = load_backbone(path, num_heads=2, img_size=48)
    assert (loaded.info["format"], loaded.info["pos_interp"]) == ("dino", "dino")
    torch.testing.assert_close(loaded.model.pos_embed.data, dino_resample(state["pos_embed"], (6, 6)))
    # a timm/DeiT classifier file stays timm
    with_head = state | {"head.weight": torch.randn(10, 32), "head.bias": torch.zeros(10)}
    assert detect_format(with_head) == "timm"
    assert detect_format({"model": with_head}) == "timm"


def test_davis_uses_the_formats_rule_by_default(tmp_path):
    from evaluate.protocols.davis.run import DavisConfig, load_model

    state = random_backbone(4)
    deit = tmp_path / "deit.pth"
    torch.save({"model": state | {"head.weight": torch.randn(3, 32), "head.bias": torch.zeros(3)}}, deit)
    release = tmp_path / "release.pth"
    torch.save(state, release)
    assert DavisConfig().pos_interp is None
    assert load_model(DavisConfig(checkpoint=str(deit), num_heads=2))[0].pos_interp == "timm"
    assert load_model(DavisConfig(checkpoint=str(release), num_heads=2))[0].pos_interp == "dino"
    forced = load_model(DavisConfig(checkpoint=str(deit), num_heads=2, pos_interp="dino"))
    assert forced[0].pos_interp == "dino" and forced[1]["pos_interp"] == "dino"


def test_transformers_safetensors_with_config_matches_the_timm_model(tmp_path):
    state = random_backbone(5)
    folder = tmp_path / "dino-vitfemto"
    folder.mkdir()
    save_file(_to_hf(state), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps({"model_type": "vit", "num_attention_heads": 2, "layer_norm_eps": 1e-6, "hidden_size": 32})
    )
    loaded = load_backbone(folder / "model.safetensors")
    assert loaded.info["format"] == "transformers" and loaded.info["pos_interp"] == "timm"
    assert loaded.info["arch"]["num_heads"] == 2 and loaded.info["arch"]["norm_eps"] == 1e-6
    assert loaded.info["num_heads_source"] == "config.json beside the file"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = _tokens(loaded.model, x)
    torch.testing.assert_close(got, reference_tokens(state, x, heads=2), rtol=0, atol=1e-5)


def test_transformers_classifier_file_without_config(tmp_path):
    state = random_backbone(6)
    hf = _to_hf(state, "vit.") | {"classifier.weight": torch.randn(5, 32), "classifier.bias": torch.zeros(5)}
    path = tmp_path / "model.safetensors"
    save_file(hf, str(path))
    loaded = load_backbone(path, num_heads=2)
    assert loaded.info["format"] == "transformers" and sorted(loaded.report.dropped) == [
        "classifier.bias",
        "classifier.weight",
    ]
    assert loaded.info["arch"]["norm_eps"] == 1e-12  # transformers' ViTConfig default, no config.json
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ours = _tokens(loaded.model, x)
    # the eps differs from timm's 1e-6: equal to the reference only up to that
    torch.testing.assert_close(ours, reference_tokens(state, x, heads=2), rtol=0, atol=1e-3)
